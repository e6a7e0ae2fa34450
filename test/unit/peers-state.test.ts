import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import pino from 'pino';
import { createMetrics } from '../../src/observe/metrics.js';
import { createPeerLedger, MAX_PEERS_FILE_BYTES, PEERS_FILE, PeerHistoryFileStore } from '../../src/peers-state.js';
import { PEER_HISTORY_FORMAT } from '../../src/trust/peers.js';

const T0 = Date.UTC(2026, 3, 20, 3, 0, 0);
const FP1 = `sha256:${Array.from({ length: 32 }, () => '11').join(':')}`;
const FP2 = `sha256:${Array.from({ length: 32 }, () => '22').join(':')}`;
const LIST = { entries: [{ cn: 'mx.op1.test', dnKey: 'CN=mx.op1.test', dnDisplay: 'CN=mx.op1.test' }] };

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'peers-state-'));
  dirs.push(d);
  return d;
}

function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('PeerHistoryFileStore', () => {
  test('round trip: what one daemon wrote at shutdown, the next reads back', async () => {
    const dir = tempDir();
    const { logger } = capture();
    const a = new PeerHistoryFileStore(dir, logger, () => T0);
    a.load();
    await a.record('mx.op1.test', FP1, 'policy', T0);
    await a.record('mx.op1.test', FP2, 'milter', T0 + 1000);
    await a.close();
    const stat = statSync(join(dir, PEERS_FILE));
    assert.equal(stat.mode & 0o777, 0o640);

    const { logger: logger2, lines } = capture();
    const b = new PeerHistoryFileStore(dir, logger2, () => T0 + 5000);
    b.load();
    assert.deepEqual(await b.list(), await a.list());
    assert.ok(lines.some((l) => l.event === 'peer_history_loaded' && l.identities === 1));
    // The history goes on: the next new certificate's previous is the one read back.
    assert.deepEqual(await b.record('mx.op1.test', `sha256:${'33:'.repeat(31)}33`, 'policy', T0 + 6000), {
      isNew: true,
      previous: FP2,
      firstSeen: T0 + 6000,
    });
    await b.close();
  });

  test('no file: an empty history, nothing logged as refused', () => {
    const { logger, lines } = capture();
    const store = new PeerHistoryFileStore(tempDir(), logger);
    store.load();
    assert.equal(store.memory.size, 0);
    assert.equal(
      lines.some((l) => l.event === 'peer_history_refused'),
      false,
    );
  });

  test('a corrupt, hostile or oversized file is refused with a log line, set aside, and the history starts empty', async () => {
    const hostile: Array<[string, (path: string) => void]> = [
      ['truncated JSON', (p) => writeFileSync(p, '{"format":"mssante-policyd/peers/1","identities":[{"ident')],
      ['binary garbage', (p) => writeFileSync(p, Buffer.from([0, 255, 1, 254, 10]))],
      [
        'a forged fingerprint',
        (p) =>
          writeFileSync(
            p,
            JSON.stringify({
              format: PEER_HISTORY_FORMAT,
              identities: [
                { identity: 'x', fingerprints: [{ fingerprint: 'sha256:AA', firstSeen: T0, lastSeen: T0, frontend: 'policy' }] },
              ],
            }),
          ),
      ],
      [
        'over the size cap',
        (p) => {
          writeFileSync(p, '');
          truncateSync(p, MAX_PEERS_FILE_BYTES + 1);
        },
      ],
    ];
    for (const [name, write] of hostile) {
      const dir = tempDir();
      const path = join(dir, PEERS_FILE);
      write(path);
      const { logger, lines } = capture();
      const store = new PeerHistoryFileStore(dir, logger, () => T0);
      assert.doesNotThrow(() => store.load(), name);
      assert.equal(store.memory.size, 0, name);
      const refused = lines.find((l) => l.event === 'peer_history_refused');
      assert.ok(refused, `${name}: logged`);
      assert.equal(typeof refused.detail, 'string');
      assert.ok(existsSync(`${path}.refused`), `${name}: set aside for a look`);
      // The next write replaces it with a good one.
      await store.record('mx.op1.test', FP1, 'policy', T0);
      await store.close();
      const back = new PeerHistoryFileStore(dir, capture().logger, () => T0);
      back.load();
      assert.equal(back.memory.size, 1, name);
    }
  });

  test('nothing changed since the last write: no write', async () => {
    const dir = tempDir();
    const store = new PeerHistoryFileStore(dir, capture().logger, () => T0);
    await store.close();
    assert.equal(existsSync(join(dir, PEERS_FILE)), false);
  });
});

describe('createPeerLedger (the daemon wiring)', () => {
  test('a certificate change is logged as peer_certificate_changed and counted per frontend; malformed values counted', async () => {
    const dir = tempDir();
    const { logger, lines } = capture();
    const metrics = createMetrics({ defaultMetrics: false });
    let now = T0;
    const peers = createPeerLedger(dir, metrics, logger, () => now);
    peers.ledger.setList(LIST);
    peers.ledger.observe('policy', 'mx.op1.test', { cert: FP1, pubkey: null, malformed: 0 });
    now += 120_000;
    peers.ledger.observe('policy', 'mx.op1.test', { cert: FP2, pubkey: null, malformed: 1 });
    await settle();
    const change = lines.find((l) => l.event === 'peer_certificate_changed');
    assert.ok(change);
    assert.equal(change.identity, 'mx.op1.test');
    assert.equal(change.previous_fingerprint, FP1);
    assert.equal(change.fingerprint, FP2);
    assert.equal(change.frontend, 'policy');
    const text = await metrics.registry.metrics();
    assert.match(text, /^mssante_policyd_peer_certificate_changes_total\{frontend="policy"\} 1$/m);
    assert.match(text, /^mssante_policyd_peer_certificate_changes_total\{frontend="milter"\} 0$/m);
    assert.match(text, /^mssante_policyd_peer_fingerprints_malformed_total\{frontend="policy"\} 1$/m);
    await peers.close();
    const saved = JSON.parse(readFileSync(join(dir, PEERS_FILE), 'utf8')) as { identities: unknown[] };
    assert.equal(saved.identities.length, 1);
  });
});
