/**
 * The list life cycle: fetch → verify → parse + validate (worker) → guard → persist → swap.
 * Whatever fails, the list in force stays (EX_2.2_5040, incident of 2020-10-07); with none in force,
 * decide() answers tempfail. Loads are serialised; a SIGHUP during a load queues one more.
 */
import type { Logger } from 'pino';
import type { Metrics } from '../observe/metrics.js';
import { LOAD_FAILURES, TRANSIENT_FAILURES, TRY_NEXT_SOURCE, type LoadFailure } from './failures.js';
import { guardList } from './guard.js';
import { ChangeJournal, type DomainHistory } from './change-journal.js';
import { CHANGE_KINDS, changeCounts, refOf, type ListChange, type ListDiff } from './changes.js';
import { WhitelistIndex } from './whitelist-index.js';
import type { PreparedList } from './prepare.js';
import { PrepareWorker, type PrepareJob, type PrepareOutcome } from './prepare-worker.js';
import type { SignerTrustConfig } from './signature.js';
import type { FetchOutcome, ListSource, SourceValidators } from './source.js';
import { join } from 'node:path';
import {
  persistList,
  readAcceptedHashes,
  readStoredList,
  REFUSED_LIST_FILE,
  trustKey,
  writeFileAtomic,
  type StateMeta,
} from './state.js';
import { judgeStoredList, shownStoredSource } from './stored-list.js';

export interface LifecycleOptions {
  readonly sourceDescription: string;
  readonly stateDir: string;
  readonly trust: SignerTrustConfig;
  /** Days; with nothing in force, an older list is refused (list_too_old). 0 disables. */
  readonly maxListAgeDays: number;
  readonly allowUnsigned: boolean;
  readonly maxEntries: number;
  readonly maxShrinkPercent: number;
  /** --max-rebind: most domains in force a new list may move onto other certificates (percent). */
  readonly maxRebindPercent: number;
  /** --change-journal-size: list changes kept in the state dir. */
  readonly changeJournalSize: number;
  readonly refreshMs: number;
  /** Longest verification + parsing of one list; past it the worker is ended and the load failed. */
  readonly prepareTimeoutMs: number;
  /**
   * The command that accepts a refused list, given the file it is in (the daemon keeps a copy of a
   * list the guard refused in the state dir, REFUSED_LIST_FILE): named in the failure's log line.
   */
  readonly acceptCommand?: (file: string) => string;
  /** Which of several sources the last fetch came from (whitelist/sources.ts); absent: sourceDescription. */
  readonly sourceUsed?: () => string;
}

export interface InForce {
  readonly index: WhitelistIndex;
  readonly sha256: string;
  readonly source: string;
  readonly loadedAt: string;
  readonly signer: {
    readonly subject: string;
    readonly validTo: string;
    readonly fingerprint256: string;
    readonly matched: string;
  } | null;
  readonly validators: SourceValidators | null;
  /** The signed bytes as verified: what GET /v1/whitelist/signed mirrors to peers. */
  readonly bytes: Uint8Array;
}

export type LoadTrigger = 'startup' | 'timer' | 'sighup' | 'admin';

export type LoadResult =
  | { readonly outcome: 'loaded'; readonly domains: number; readonly rejected: number }
  | { readonly outcome: 'unchanged' }
  | { readonly outcome: 'failed'; readonly reason: LoadFailure; readonly detail: string };

export interface LastFailure {
  readonly at: string;
  readonly reason: LoadFailure;
  readonly detail: string;
}

/** Names of each kind a list_changed log line carries; the journal and GET /v1/whitelist/changes have them all. */
const CHANGED_NAMES_LOGGED = 20;

/**
 * Failure details can quote attacker-controlled input (parser messages): bounded in logs and /v1/whitelist.
 * Room for a guard refusal's accept command, which names a few absolute paths.
 */
const MAX_DETAIL_CHARS = 960;

export const RETRY_MIN_MS = 15_000;
export const RETRY_MAX_MS = 15 * 60_000;

/**
 * Verifies and parses a list off the answering thread: the real one is a PrepareWorker; tests give a
 * fake to drive the life cycle in-process. close() ends whatever run() started (called after each load).
 */
export interface ListPreparer {
  run(job: Omit<PrepareJob, 'id'>, timeoutMs?: number): Promise<PrepareOutcome>;
  close(): Promise<void>;
}

export interface RetryInput {
  readonly consecutiveFailures: number;
  readonly lastFailure: LoadFailure | null;
  readonly listInForce: boolean;
  readonly refreshMs: number;
}

/**
 * Delay before the next load. After a failure that may pass (network, worker), or while nothing is in
 * force, retry sooner than the refresh interval: 15 s, doubling, capped at 15 min and by the refresh.
 * A list refused for its content (signature, guard, entries) will not change in minutes: downloading it
 * again every 15 s would only load the source.
 */
export function nextLoadDelay({ consecutiveFailures, lastFailure, listInForce, refreshMs }: RetryInput): number {
  const soon = consecutiveFailures > 0 && (!listInForce || lastFailure === null || TRANSIENT_FAILURES.has(lastFailure));
  if (!soon) return refreshMs;
  return Math.min(refreshMs, RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(consecutiveFailures - 1, 10));
}

export class ListLifecycle {
  private inForce: InForce | null = null;
  private lastSuccessAt: string | null = null;
  private lastFailureValue: LastFailure | null = null;
  private consecutiveFailures = 0;
  private running: Promise<LoadResult> | null = null;
  private queued: Promise<LoadResult> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly abort = new AbortController();
  /** The last persist failed (disk full, read-only): the next load of the same list writes the copy again. */
  private stateStale = false;
  private readonly swapListeners: Array<(index: WhitelistIndex) => void> = [];
  private readonly journal: ChangeJournal;

  constructor(
    private readonly options: LifecycleOptions,
    private readonly source: ListSource,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly now: () => Date = () => new Date(),
    private readonly worker: ListPreparer = new PrepareWorker(),
  ) {
    for (const reason of LOAD_FAILURES) metrics.whitelistLoadFailures.inc({ reason }, 0);
    this.journal = new ChangeJournal(options.stateDir, options.changeJournalSize, logger);
  }

  /** The journal of list changes, newest first. */
  changes(): readonly ListChange[] {
    return this.journal.changes();
  }

  /** A domain's history against the list in force: since when its binding holds, its last changes. */
  domainHistory(domain: string): DomainHistory {
    return this.journal.history(domain, this.inForce?.sha256 ?? null);
  }

  /** `listener` gets each index as it is put in force, synchronously, before any answer uses it. */
  onSwap(listener: (index: WhitelistIndex) => void): void {
    this.swapListeners.push(listener);
  }

  /** The index answers use; one reference, swapped whole. */
  current(): WhitelistIndex | null {
    return this.inForce?.index ?? null;
  }

  state(): { readonly inForce: InForce | null; readonly lastSuccessAt: string | null; readonly lastFailure: LastFailure | null } {
    return { inForce: this.inForce, lastSuccessAt: this.lastSuccessAt, lastFailure: this.lastFailureValue };
  }

  /** Serve the stored list first (ready before the network answers), then ask the source. */
  async start(): Promise<void> {
    this.journal.load();
    await this.loadFromState();
    void this.reload('startup');
  }

  /** Stops at once: an unfinished download is aborted and the worker ended, so SIGTERM never waits on a load. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.abort.abort();
    await this.worker.close();
    await this.running?.catch(() => undefined);
  }

  /** Load from the source now. Concurrent calls share the running load, plus at most one queued after it. */
  reload(trigger: LoadTrigger): Promise<LoadResult> {
    if (this.stopped) return Promise.resolve({ outcome: 'failed', reason: 'worker_failed', detail: 'stopping' });
    if (this.running === null) {
      this.running = this.runLoad(trigger).finally(() => {
        this.running = null;
      });
      return this.running;
    }
    this.queued ??= this.running.then(() => {
      this.queued = null;
      return this.reload(trigger);
    });
    return this.queued;
  }

  /** Resolves once no load is running or queued (a timer may start the next one later). */
  async settled(): Promise<void> {
    while (this.running !== null || this.queued !== null) await (this.queued ?? this.running)?.catch(() => undefined);
  }

  private async loadFromState(): Promise<void> {
    let stored;
    try {
      stored = readStoredList(this.options.stateDir);
    } catch (error) {
      this.recordFailure('state_unreadable', `cannot read ${this.options.stateDir}: ${(error as Error).message}`, 'state');
      return;
    }
    if (stored === null) {
      this.logger.info({ event: 'state_empty', state_dir: this.options.stateDir }, 'no stored list yet');
      return;
    }
    // Read back from disk, the copy is input like the network: whoever could write the state dir
    // could have planted it (whitelist.json's trustKey and sha256 are computable from public files).
    // It is verified as a fresh list is, under the trust settings of this start (stored-list.ts).
    const prepared = await this.prepare(stored.bytes);
    const verdict = judgeStoredList(prepared, this.acceptedHashes(), this.now().getTime());
    if (!verdict.ok) {
      this.recordFailure(verdict.reason, verdict.detail, 'state');
      this.logger.warn(
        { event: 'state_refused', state_dir: this.options.stateDir, reason: verdict.reason, cause: verdict.cause },
        'the stored list is not put in force: fetching the source as if the state dir were empty',
      );
      return;
    }
    const meta = stored.meta !== null && stored.meta.sha256 === verdict.list.sha256 ? stored.meta : null;
    // No stored validators: the first fetch is unconditional, so a copy planted with the source's
    // current ETag cannot make the source answer "not modified" and keep it in force.
    this.swap(verdict.list, shownStoredSource(meta?.source), null, 'state', prepared.ok ? prepared.bytes : stored.bytes);
  }

  /** Lists the operator accepted; an unreadable file is said loudly (the override would silently do nothing). */
  private acceptedHashes(): Set<string> {
    try {
      return readAcceptedHashes(this.options.stateDir);
    } catch (error) {
      this.logger.error(
        { event: 'accept_file_unreadable', state_dir: this.options.stateDir, err: (error as Error).message },
        'cannot read the accepted-lists file: check --accept has no effect',
      );
      return new Set();
    }
  }

  /** One worker per load, ended after it: the DOM of a large list (hundreds of MiB of heap) is not kept between loads. */
  private async runInWorker(job: Omit<PrepareJob, 'id'>): Promise<PrepareOutcome> {
    try {
      return await this.worker.run(job, this.options.prepareTimeoutMs);
    } finally {
      await this.worker.close();
    }
  }

  /**
   * `bytes` may be transferred to the worker (its view detached here): a successful result carries
   * the bytes to use from then on.
   */
  private async prepare(
    bytes: Uint8Array,
  ): Promise<{ ok: true; list: PreparedList; bytes: Uint8Array } | { ok: false; reason: LoadFailure; detail: string }> {
    const outcome: PrepareOutcome = await this.runInWorker({
      bytes,
      trust: this.options.trust,
      allowUnsigned: this.options.allowUnsigned,
      maxEntries: this.options.maxEntries,
      background: this.inForce !== null,
    });
    if (outcome.result === null) return { ok: false, reason: 'worker_failed', detail: outcome.error ?? 'unknown worker failure' };
    if (!outcome.result.ok) return { ok: false, reason: outcome.result.reason, detail: outcome.result.detail };
    this.logger.debug(
      {
        event: 'list_prepared',
        cpu_ms: Math.round(outcome.cpuMs),
        entries: outcome.result.list.entries.length,
        niceness: outcome.niceness ?? null,
      },
      'list verified and parsed',
    );
    return { ok: true, list: outcome.result.list, bytes: outcome.bytes ?? bytes };
  }

  private async runLoad(trigger: LoadTrigger): Promise<LoadResult> {
    const endTimer = this.metrics.whitelistLoadDuration.startTimer();
    let result: LoadResult;
    try {
      result = await this.fetchAndApply(trigger);
    } catch (error) {
      result = { outcome: 'failed', reason: 'worker_failed', detail: `unexpected: ${(error as Error).message}` };
      this.recordFailure(result.reason, result.detail, trigger);
    } finally {
      endTimer();
    }
    this.schedule();
    return result;
  }

  private async fetchAndApply(trigger: LoadTrigger): Promise<LoadResult> {
    // A copy owed to the state dir needs the body: an unchanged source would answer not-modified forever.
    const previous = this.stateStale ? null : (this.inForce?.validators ?? null);
    const fetched: FetchOutcome = await this.source.fetch(previous, this.abort.signal);
    if (fetched.kind === 'failed') {
      this.recordFailure(fetched.reason, fetched.detail, trigger);
      return { outcome: 'failed', reason: fetched.reason, detail: fetched.detail };
    }
    if (fetched.kind === 'not_modified') {
      if (this.inForce === null) {
        // Nothing in force to keep: ask again without validators.
        return this.failOrApply(await this.source.fetch(null, this.abort.signal), trigger);
      }
      this.recordUnchanged(trigger, 'source not modified');
      return { outcome: 'unchanged' };
    }
    return this.failOrApply(fetched, trigger);
  }

  private async failOrApply(fetched: FetchOutcome, trigger: LoadTrigger): Promise<LoadResult> {
    if (fetched.kind === 'failed') {
      this.recordFailure(fetched.reason, fetched.detail, trigger);
      return { outcome: 'failed', reason: fetched.reason, detail: fetched.detail };
    }
    if (fetched.kind === 'not_modified') {
      this.recordFailure('source_http_status', 'source answered not-modified to an unconditional request', trigger);
      return { outcome: 'failed', reason: 'source_http_status', detail: 'unexpected not-modified' };
    }
    const prepared = await this.prepare(fetched.body);
    if (!prepared.ok) {
      this.recordFailure(prepared.reason, prepared.detail, trigger);
      return (
        (await this.tryNextSource(prepared.reason, trigger)) ?? {
          outcome: 'failed',
          reason: prepared.reason,
          detail: prepared.detail,
        }
      );
    }
    const list = prepared.list;
    // The body as the worker handed it back (transferred there and back, not copied).
    const body = prepared.bytes;
    const index = indexOf(list);
    const previous = this.inForce;
    const guard = guardList(
      previous,
      { index, sha256: list.sha256 },
      {
        maxShrinkPercent: this.options.maxShrinkPercent,
        maxRebindPercent: this.options.maxRebindPercent,
        maxListAgeDays: this.options.maxListAgeDays,
      },
      this.acceptedHashes(),
      this.now().getTime(),
      this.options.acceptCommand?.(join(this.options.stateDir, REFUSED_LIST_FILE)),
    );
    if (guard.verdict === 'unchanged') {
      this.inForce = this.inForce === null ? null : { ...this.inForce, validators: fetched.validators };
      if (this.stateStale) await this.persist(body, list, fetched.validators);
      this.recordUnchanged(trigger, 'same list (sha256)');
      return { outcome: 'unchanged' };
    }
    if (guard.verdict === 'refuse') {
      await this.keepRefusedCopy(body);
      this.recordFailure(guard.reason, guard.detail, trigger);
      return (
        (await this.tryNextSource(guard.reason, trigger)) ?? { outcome: 'failed', reason: guard.reason, detail: guard.detail }
      );
    }
    // Written first, then put in force: once a load reports success, the restart copy is that list
    // (a failed write is logged and counted, and the list is put in force all the same).
    await this.persist(body, list, fetched.validators);
    this.swap(list, this.options.sourceUsed?.() ?? this.options.sourceDescription, fetched.validators, trigger, body, index);
    if (previous !== null && guard.change !== null) await this.recordChange(previous.index, index, guard.change, trigger);
    return { outcome: 'loaded', domains: this.inForce?.index.domainCount ?? 0, rejected: list.rejected.length };
  }

  /**
   * Several sources, and the list of the one that answered was refused as that copy's fault (stale,
   * damaged, unverifiable: TRY_NEXT_SOURCE): the sources after it, in order, within this load. The
   * refusal is counted and logged all the same. null: one source, another kind of refusal, none left.
   */
  private async tryNextSource(reason: LoadFailure, trigger: LoadTrigger): Promise<LoadResult | null> {
    if (!TRY_NEXT_SOURCE.has(reason) || this.source.fetchAfterRefused === undefined) return null;
    const refusedFrom = this.options.sourceUsed?.() ?? this.options.sourceDescription;
    const previous = this.stateStale ? null : (this.inForce?.validators ?? null);
    const next = await this.source.fetchAfterRefused(previous, this.abort.signal);
    if (next === null) return null;
    this.logger.warn(
      { event: 'list_source_refused', trigger, reason, source: refusedFrom },
      "this source's list was refused: the next source was asked",
    );
    if (next.kind === 'not_modified' && this.inForce !== null) {
      this.recordUnchanged(trigger, 'next source not modified');
      return { outcome: 'unchanged' };
    }
    return this.failOrApply(next, trigger);
  }

  /** The list the guard refused, verified, for `check --accept` to read whatever the source (an https URL too). */
  private async keepRefusedCopy(body: Uint8Array): Promise<void> {
    if (this.options.acceptCommand === undefined) return;
    try {
      await writeFileAtomic(this.options.stateDir, REFUSED_LIST_FILE, body);
    } catch (error) {
      this.logger.warn(
        { event: 'refused_copy_failed', error: (error as Error).message },
        'the refused list could not be kept in the state dir for check --accept',
      );
    }
  }

  private swap(
    list: PreparedList,
    source: string,
    validators: SourceValidators | null,
    trigger: LoadTrigger | 'state',
    bytes: Uint8Array,
    index: WhitelistIndex = indexOf(list),
  ): void {
    const at = this.now().toISOString();
    this.inForce = {
      index,
      sha256: list.sha256,
      source,
      loadedAt: at,
      signer: list.signature.verified
        ? {
            subject: list.signature.signer.subject,
            validTo: list.signature.signer.validTo,
            fingerprint256: list.signature.signer.fingerprint256,
            matched: list.signature.signer.matched,
          }
        : null,
      validators,
      bytes,
    };
    for (const listener of this.swapListeners) listener(index);
    this.lastSuccessAt = at;
    this.consecutiveFailures = 0;
    const m = this.metrics;
    m.whitelistUsable.set(1);
    m.whitelistDomains.set(index.domainCount);
    m.whitelistEntriesRejected.set(list.rejected.length);
    m.whitelistGeneratedTimestamp.set(index.generatedAtMs / 1000);
    m.whitelistSignerNotAfter.set(list.signature.verified ? Date.parse(list.signature.signer.validTo) / 1000 : 0);
    m.whitelistLastSuccessTimestamp.set(this.now().getTime() / 1000);
    const rejectedByReason: Record<string, number> = {};
    for (const r of list.rejected) rejectedByReason[r.reason] = (rejectedByReason[r.reason] ?? 0) + 1;
    this.logger.info(
      {
        event: 'list_loaded',
        trigger,
        source,
        sha256: list.sha256,
        generated_at: list.generatedAt,
        domains: index.domainCount,
        certificates: index.certificateCount,
        entries: list.rawEntryCount,
        entries_rejected: list.rejected.length,
        rejected_by_reason: rejectedByReason,
        signed: list.signature.verified,
        signer: list.signature.verified ? list.signature.signer.subject : undefined,
        signer_sha256: list.signature.verified ? list.signature.signer.fingerprint256 : undefined,
        signer_not_after: list.signature.verified ? list.signature.signer.validTo : undefined,
        signer_trusted_by: list.signature.verified ? list.signature.signer.matched : undefined,
      },
      'whitelist in force',
    );
    if (!list.signature.verified) {
      this.logger.warn(
        { event: 'list_unsigned', why: list.signature.why },
        'the list in force was NOT signature-checked (--allow-unsigned)',
      );
    }
    for (const r of list.rejected.slice(0, 50)) {
      this.logger.warn(
        { event: 'entry_rejected', index: r.index, domain: r.domain, reason: r.reason, detail: r.detail },
        'whitelist entry skipped',
      );
    }
  }

  /** Journals a swap: counted, logged once with up to 20 names of each kind, kept in the state dir. */
  private async recordChange(before: WhitelistIndex, after: WhitelistIndex, diff: ListDiff, trigger: LoadTrigger): Promise<void> {
    const change: ListChange = { from: refOf(before), to: refOf(after), appliedAt: this.inForce?.loadedAt ?? null, ...diff };
    const counts = changeCounts(diff);
    for (const kind of CHANGE_KINDS) this.metrics.whitelistChanges.inc({ kind }, counts[kind]);
    const names = (list: readonly string[]): string[] => list.slice(0, CHANGED_NAMES_LOGGED);
    this.logger.info(
      {
        event: 'list_changed',
        trigger,
        from_sha256: change.from.sha256,
        from_generated_at: change.from.generatedAt,
        to_sha256: change.to.sha256,
        to_generated_at: change.to.generatedAt,
        ...counts,
        operators_added: diff.operatorsAdded.length,
        operators_removed: diff.operatorsRemoved.length,
        added_domains: names(diff.added),
        removed_domains: names(diff.removed),
        rebound_domains: names(diff.rebound.map((r) => r.domain)),
        operators_added_dns: names(diff.operatorsAdded),
        operators_removed_dns: names(diff.operatorsRemoved),
      },
      'whitelist changed',
    );
    await this.journal.record(change);
  }

  private async persist(bytes: Uint8Array, list: PreparedList, validators: SourceValidators | null): Promise<void> {
    const meta: StateMeta = {
      source: this.options.sourceUsed?.() ?? this.options.sourceDescription,
      sha256: list.sha256,
      generatedAt: list.generatedAt,
      verifiedAt: this.now().toISOString(),
      validators,
      signer: list.signature.verified ? list.signature.signer : null,
      trustKey: trustKey(this.options.trust),
    };
    try {
      await persistList(this.options.stateDir, bytes, meta);
      this.stateStale = false;
    } catch (error) {
      this.stateStale = true;
      // The new list stays in force; only the restart copy is stale. Loud, because a restart would serve the older one.
      this.metrics.whitelistLoadFailures.inc({ reason: 'state_write_failed' });
      this.logger.error(
        { event: 'state_write_failed', state_dir: this.options.stateDir, err: (error as Error).message },
        'cannot persist the list in force',
      );
    }
  }

  private recordUnchanged(trigger: LoadTrigger, why: string): void {
    this.lastSuccessAt = this.now().toISOString();
    this.consecutiveFailures = 0;
    this.metrics.whitelistLastSuccessTimestamp.set(this.now().getTime() / 1000);
    this.logger.info({ event: 'list_unchanged', trigger, why }, 'whitelist unchanged');
  }

  private recordFailure(reason: LoadFailure, fullDetail: string, trigger: LoadTrigger | 'state'): void {
    const detail =
      fullDetail.length > MAX_DETAIL_CHARS
        ? `${fullDetail.slice(0, MAX_DETAIL_CHARS)}... (${fullDetail.length} characters)`
        : fullDetail;
    this.consecutiveFailures++;
    this.lastFailureValue = { at: this.now().toISOString(), reason, detail };
    this.metrics.whitelistLoadFailures.inc({ reason });
    this.metrics.whitelistLastFailureTimestamp.set(this.now().getTime() / 1000);
    const keeping =
      this.inForce === null
        ? 'none: answering 451 until a list loads'
        : `${this.inForce.index.generatedAt} (sha256 ${this.inForce.sha256.slice(0, 12)})`;
    this.logger[this.inForce === null ? 'error' : 'warn'](
      { event: 'list_load_failed', trigger, reason, detail, consecutive_failures: this.consecutiveFailures, keeping },
      'whitelist load failed; keeping the list in force',
    );
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    const delay = nextLoadDelay({
      consecutiveFailures: this.consecutiveFailures,
      lastFailure: this.lastFailureValue?.reason ?? null,
      listInForce: this.inForce !== null,
      refreshMs: this.options.refreshMs,
    });
    this.timer = setTimeout(() => void this.reload('timer'), delay);
    this.timer.unref();
  }
}

/** The index of a prepared list, named by its sha256 (traces and the journal refer to it). */
function indexOf(list: PreparedList): WhitelistIndex {
  return new WhitelistIndex({ generatedAt: list.generatedAt, sha256: list.sha256 }, list.entries, list.rejected);
}
