/**
 * The default PeerHistoryBackend: the in-memory history (trust/peers.ts) kept in the state dir as
 * `peers.json`, so that a restart does not take every identity's next connection for a first one.
 *
 * Read once at start-up like everything else the daemon reads back from disk: size-capped, parsed and
 * verified whole (parsePeerHistory); a corrupt or hostile file is refused with a log line, moved
 * aside to `peers.json.refused` for a look, and the history starts empty. Written atomically
 * (writeFileAtomic), never on the answer path: a new fingerprint is written within
 * PERSIST_NEW_DELAY_MS, last-seen updates alone within PERSIST_SEEN_DELAY_MS, and at shutdown.
 */
import { readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Metrics } from './observe/metrics.js';
import type { Frontend } from './trust/facts.js';
import type { Fingerprint } from './trust/fingerprint.js';
import {
  MemoryPeerHistory,
  parsePeerHistory,
  PeerLedger,
  type PeerHistoryBackend,
  type PeerIdentityHistory,
  type PeerRecordResult,
} from './trust/peers.js';
import { writeFileAtomic } from './whitelist/state.js';

export const PEERS_FILE = 'peers.json';
/** 100 000 identities × a few fingerprints fit well under this; a larger file is not ours. */
export const MAX_PEERS_FILE_BYTES = 64 * 1024 * 1024;
export const PERSIST_NEW_DELAY_MS = 5_000;
export const PERSIST_SEEN_DELAY_MS = 300_000;

export class PeerHistoryFileStore implements PeerHistoryBackend {
  readonly memory: MemoryPeerHistory;
  private timer: NodeJS.Timeout | null = null;
  private timerDue = Infinity;
  private writtenRevision = 0;
  private writtenStructural = 0;
  private writing: Promise<void> | null = null;

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
    private readonly clock: () => number = Date.now,
    memory: MemoryPeerHistory = new MemoryPeerHistory(),
  ) {
    this.memory = memory;
  }

  /** Reads and verifies `peers.json`; a missing file is an empty history, a bad one is refused (logged). */
  load(): void {
    const path = join(this.dir, PEERS_FILE);
    let text: string;
    try {
      const size = statSync(path).size;
      if (size > MAX_PEERS_FILE_BYTES) throw new RefusedFile(`${size} bytes, over ${MAX_PEERS_FILE_BYTES}`);
      text = readFileSync(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.refuse(path, error instanceof RefusedFile ? error.message : `unreadable: ${(error as Error).message}`);
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      this.refuse(path, 'not JSON (truncated or damaged)');
      return;
    }
    const parsed = parsePeerHistory(json, this.clock());
    if (!parsed.ok) {
      this.refuse(path, parsed.error);
      return;
    }
    this.memory.restore(parsed.identities);
    this.writtenRevision = this.memory.revision;
    this.writtenStructural = this.memory.structuralRevision;
    this.logger.info({ event: 'peer_history_loaded', identities: parsed.identities.length }, 'certificate history read back');
  }

  private refuse(path: string, why: string): void {
    this.logger.warn(
      { event: 'peer_history_refused', file: path, detail: why },
      'certificate history in the state dir refused: starting with an empty one',
    );
    try {
      renameSync(path, `${path}.refused`);
    } catch {
      // Left in place: the next write replaces it.
    }
  }

  async record(identity: string, fingerprint: Fingerprint, frontend: Frontend, nowMs: number): Promise<PeerRecordResult> {
    const result = this.memory.recordSync(identity, fingerprint, frontend, nowMs);
    this.schedule();
    return result;
  }

  list(): Promise<readonly PeerIdentityHistory[]> {
    return this.memory.list();
  }

  async retain(listed: ReadonlySet<string>): Promise<void> {
    this.memory.retainSync(listed);
    this.schedule();
  }

  private schedule(): void {
    if (this.memory.revision === this.writtenRevision) return;
    const delay = this.memory.structuralRevision !== this.writtenStructural ? PERSIST_NEW_DELAY_MS : PERSIST_SEEN_DELAY_MS;
    const due = this.clock() + delay;
    if (this.timer !== null && this.timerDue <= due) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerDue = Infinity;
      void this.flush();
    }, delay);
    this.timer.unref();
  }

  /** Writes the history if it changed since the last write; one write at a time. Never throws (logs). */
  async flush(): Promise<void> {
    while (this.writing !== null) await this.writing;
    if (this.memory.revision === this.writtenRevision) return;
    const revision = this.memory.revision;
    const structural = this.memory.structuralRevision;
    const data = `${JSON.stringify(this.memory.snapshot())}\n`;
    this.writing = writeFileAtomic(this.dir, PEERS_FILE, data)
      .then(() => {
        this.writtenRevision = revision;
        this.writtenStructural = structural;
      })
      .catch((error: unknown) => {
        this.logger.error({ event: 'peer_history_write_failed', err: (error as Error).message }, 'cannot write peers.json');
      })
      .finally(() => {
        this.writing = null;
      });
    await this.writing;
    // Changes made during the write are written by the next timer.
    this.schedule();
  }

  /** Shutdown: the last write, and no timer left behind. */
  async close(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.flush();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

class RefusedFile extends Error {}

/**
 * The daemon's ledger: the state-dir history, read back now (shared through the store with --store:
 * the state dir then keeps this instance's sightings and answers while the store does not), and a sink that logs each certificate
 * change (`peer_certificate_changed`) and counts it. `close()` writes the last changes (shutdown).
 */
export function createPeerLedger(
  stateDir: string,
  metrics: Pick<Metrics, 'peerCertificateChanges' | 'peerFingerprintsMalformed'>,
  logger: Logger,
  clock: () => number = Date.now,
  /** With --store: wraps the state-dir backend in the shared one (store/open.ts); default: the state dir alone. */
  shared: (local: PeerHistoryBackend) => PeerHistoryBackend = (local) => local,
): { readonly ledger: PeerLedger; readonly store: PeerHistoryFileStore; close(): Promise<void> } {
  const store = new PeerHistoryFileStore(stateDir, logger, clock);
  store.load();
  let lastFailureLog = -Infinity;
  const ledger = new PeerLedger(
    shared(store),
    {
      changed: (change) => {
        metrics.peerCertificateChanges.inc({ frontend: change.frontend });
        logger.warn(
          {
            event: 'peer_certificate_changed',
            identity: change.identity,
            previous_fingerprint: change.previous,
            fingerprint: change.fingerprint,
            pubkey_fingerprint: change.pubkeyFingerprint,
            frontend: change.frontend,
          },
          'a listed identity presented a certificate not seen before for it (renewal, or another holder of the name): mail is not refused for it',
        );
      },
      malformed: (frontend, count) => metrics.peerFingerprintsMalformed.inc({ frontend }, count),
      failed: (error) => {
        // A failing store would log at every message: once a minute is enough to be seen.
        const now = clock();
        if (now - lastFailureLog < 60_000) return;
        lastFailureLog = now;
        logger.error(
          { event: 'peer_history_failed', err: (error as Error)?.message ?? String(error) },
          'certificate history not recorded',
        );
      },
    },
    clock,
  );
  return { ledger, store, close: () => store.close() };
}
