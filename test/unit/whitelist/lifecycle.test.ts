/**
 * The list life cycle in-process: a fake source and a fake preparer stand for the network and the
 * worker, node:test's mock timers for the clock of the refresh and retry timer. What is checked is
 * the outcome: which list is in force, what was fetched and when, what the state dir holds.
 * (test/system/e2e/lifecycle.test.ts does the same against the spawned daemon, real signatures and https.)
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { pino } from 'pino';
import { createMetrics, type Metrics } from '../../../src/observe/metrics.js';
import { LOAD_FAILURES, TRANSIENT_FAILURES, TRY_NEXT_SOURCE, type LoadFailure } from '../../../src/whitelist/failures.js';
import { MAX_FUTURE_SKEW_MS } from '../../../src/whitelist/guard.js';
import {
  ListLifecycle,
  nextLoadDelay,
  RETRY_MAX_MS,
  RETRY_MIN_MS,
  type LifecycleOptions,
  type ListPreparer,
} from '../../../src/whitelist/lifecycle.js';
import type { ListFailure, PreparedList } from '../../../src/whitelist/prepare.js';
import type { PrepareJob, PrepareOutcome } from '../../../src/whitelist/prepare-worker.js';
import type { FetchOutcome, ListSource, SourceValidators } from '../../../src/whitelist/source.js';
import { FailoverSource } from '../../../src/whitelist/sources.js';
import { STATE_LIST_FILE, addAcceptedHash } from '../../../src/whitelist/state.js';
import { validateEntries } from '../../../src/whitelist/validate.js';
import { rawEntry } from '../../support/index-builder.js';

const HOUR = 3_600_000;
const REFRESH_MS = HOUR;
const NOW = Date.parse('2026-06-01T12:00:00Z');
const DN = 'CN=mx.op1.fr,OU=1,O=OP1,C=FR';
const DN2 = 'CN=mx.op2.fr,OU=2,O=OP2,C=FR';

/** What the fake preparer makes of a body: a list of `domains` domains dated `generatedAt`, or a refusal. */
type ListSpec =
  | { readonly generatedAt: string; readonly domains: number; readonly tag?: string; readonly moved?: number }
  | { readonly refuse: ListFailure };

const body = (spec: ListSpec): Buffer => Buffer.from(JSON.stringify(spec));
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const isoAt = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

class FakePreparer implements ListPreparer {
  runs = 0;
  closes = 0;
  /** Set to make the next runs fail as the worker would (crash, heap limit, timeout). */
  crash: string | null = null;

  async run(job: Omit<PrepareJob, 'id'>): Promise<PrepareOutcome> {
    this.runs++;
    await Promise.resolve();
    if (this.crash !== null) return { result: null, error: this.crash, cpuMs: 0 };
    const bytes = Buffer.from(job.bytes);
    const spec = JSON.parse(bytes.toString('utf8')) as ListSpec;
    if ('refuse' in spec)
      return {
        result: { ok: false, reason: spec.refuse, detail: `fake refusal ${spec.refuse}`, sha256: sha256(bytes) },
        error: null,
        cpuMs: 0,
      };
    // The first `moved` domains are bound to another operator's certificate.
    const raws = Array.from({ length: spec.domains }, (_, i) =>
      rawEntry(i, `d${i}.mssante.fr`, i < (spec.moved ?? 0) ? DN2 : DN),
    );
    const { entries, rejected } = validateEntries(raws);
    const list: PreparedList = {
      sha256: sha256(bytes),
      bytes: bytes.length,
      generatedAt: spec.generatedAt,
      signature: {
        verified: true,
        signer: {
          subject: 'CN=fake signer',
          issuer: 'CN=fake CA',
          validFrom: '2025-01-01T00:00:00Z',
          validTo: '2030-01-01T00:00:00Z',
          fingerprint256: 'AA',
          trustedBy: 'pinned',
          matched: 'pin fake.pem',
          pem: '',
        },
      },
      rawEntryCount: raws.length,
      entries,
      rejected,
    };
    return { result: { ok: true, list }, error: null, cpuMs: 0 };
  }

  async close(): Promise<void> {
    this.closes++;
  }
}

/** Serves one body, answers not-modified to matching validators (as HTTP 304 and the file source do), or fails. */
class FakeSource implements ListSource {
  constructor(readonly description = 'fake://list') {}
  readonly calls: Array<SourceValidators | null> = [];
  private outcome:
    { kind: 'body'; bytes: Buffer } | { kind: 'fail'; reason: LoadFailure & `source_${string}` } | { kind: 'not_modified' } = {
    kind: 'not_modified',
  };
  private gate: Promise<void> | null = null;

  serve(spec: ListSpec): Buffer {
    const bytes = body(spec);
    this.outcome = { kind: 'body', bytes };
    return bytes;
  }

  fail(reason: LoadFailure & `source_${string}`): void {
    this.outcome = { kind: 'fail', reason };
  }

  /** Answers not-modified whatever the request (a misbehaving server), until serve() or fail(). */
  alwaysNotModified(): void {
    this.outcome = { kind: 'not_modified' };
  }

  /** Holds every fetch until the returned function is called. */
  hold(): () => void {
    let release!: () => void;
    this.gate = new Promise((resolve) => {
      release = resolve;
    });
    return () => {
      this.gate = null;
      release();
    };
  }

  async fetch(previous: SourceValidators | null): Promise<FetchOutcome> {
    this.calls.push(previous);
    if (this.gate !== null) await this.gate;
    const o = this.outcome;
    if (o.kind === 'fail') return { kind: 'failed', reason: o.reason, detail: `fake ${o.reason}`, attempts: 1 };
    if (o.kind === 'not_modified')
      return {
        kind: 'not_modified',
        validators: previous ?? { etag: null, lastModified: null, mtimeMs: null, size: null },
        attempts: 1,
      };
    const validators: SourceValidators = {
      etag: `"${sha256(o.bytes).slice(0, 16)}"`,
      lastModified: null,
      mtimeMs: null,
      size: o.bytes.length,
    };
    if (previous !== null && previous.etag === validators.etag) return { kind: 'not_modified', validators, attempts: 1 };
    return { kind: 'fetched', body: o.bytes, validators, attempts: 1 };
  }
}

interface World {
  readonly lifecycle: ListLifecycle;
  readonly source: FakeSource;
  readonly preparer: FakePreparer;
  readonly metrics: Metrics;
  readonly logs: Array<{ event?: string; reason?: string }>;
  readonly stateDir: string;
  readonly clock: { ms: number };
}

let dirs: string[] = [];
let worlds: World[] = [];

/** Several FakeSources behind one FailoverSource (--whitelist repeated), as the daemon wires them. */
function failoverWorld(
  count: number,
  overrides: Partial<LifecycleOptions> = {},
): World & { readonly sources: FakeSource[]; readonly failover: FailoverSource } {
  const sources = Array.from({ length: count }, (_, i) => new FakeSource(`fake://source-${i + 1}`));
  const failover = new FailoverSource(sources);
  const w = world({ ...overrides, sourceUsed: () => failover.lastUsed?.description ?? failover.description }, failover);
  return { ...w, sources, failover };
}

function world(overrides: Partial<LifecycleOptions> = {}, listSource?: ListSource): World {
  const dir = mkdtempSync(join(tmpdir(), 'lifecycle-test-'));
  dirs.push(dir);
  const stateDir = overrides.stateDir ?? join(dir, 'state');
  const options: LifecycleOptions = {
    sourceDescription: 'fake://list',
    stateDir,
    trust: { signer: [], signerCa: [], signerCn: [], signerSubject: [] },
    maxListAgeDays: 0,
    allowUnsigned: false,
    maxEntries: 1000,
    maxShrinkPercent: 10,
    maxRebindPercent: 10,
    changeJournalSize: 100,
    refreshMs: REFRESH_MS,
    prepareTimeoutMs: 60_000,
    ...overrides,
  };
  const logs: World['logs'] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as World['logs'][number]) });
  const metrics = createMetrics();
  const source = new FakeSource();
  const preparer = new FakePreparer();
  const clock = { ms: NOW };
  const lifecycle = new ListLifecycle(options, listSource ?? source, metrics, logger, () => new Date(clock.ms), preparer);
  const w = { lifecycle, source, preparer, metrics, logs, stateDir, clock };
  worlds.push(w);
  return w;
}

async function failures(metrics: Metrics, reason: LoadFailure): Promise<number> {
  return (await metrics.whitelistLoadFailures.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

/** Checks the next timer load happens exactly `ms` after the last one ended, and lets it run. */
async function expectNextLoadAfter(w: World, ms: number): Promise<void> {
  const before = w.source.calls.length;
  mock.timers.tick(ms - 1);
  assert.equal(w.source.calls.length, before, `no load before ${ms} ms`);
  mock.timers.tick(1);
  assert.equal(w.source.calls.length, before + 1, `a load at ${ms} ms`);
  await w.lifecycle.settled();
}

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout'] });
});

afterEach(async () => {
  for (const w of worlds) await w.lifecycle.stop();
  worlds = [];
  mock.timers.reset();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs = [];
});

describe('nextLoadDelay', () => {
  const base = { consecutiveFailures: 0, lastFailure: null, listInForce: true, refreshMs: REFRESH_MS };

  it('waits --refresh after a success', () => {
    assert.equal(nextLoadDelay(base), REFRESH_MS);
    assert.equal(nextLoadDelay({ ...base, listInForce: false }), REFRESH_MS);
  });

  it('retries a transient failure from 15 s, doubling, capped at 15 min and by --refresh', () => {
    const delays = [1, 2, 3, 4, 5, 6, 7, 8, 30].map((n) =>
      nextLoadDelay({ ...base, consecutiveFailures: n, lastFailure: 'source_unreachable' }),
    );
    assert.deepEqual(delays, [15_000, 30_000, 60_000, 120_000, 240_000, 480_000, RETRY_MAX_MS, RETRY_MAX_MS, RETRY_MAX_MS]);
    assert.equal(nextLoadDelay({ ...base, consecutiveFailures: 5, lastFailure: 'source_timeout', refreshMs: 60_000 }), 60_000);
  });

  it('waits --refresh after a content refusal while a list is in force, but not while none is', () => {
    for (const id of LOAD_FAILURES.filter((f) => !TRANSIENT_FAILURES.has(f))) {
      assert.equal(nextLoadDelay({ ...base, consecutiveFailures: 3, lastFailure: id }), REFRESH_MS, id);
      assert.equal(nextLoadDelay({ ...base, consecutiveFailures: 3, lastFailure: id, listInForce: false }), 4 * RETRY_MIN_MS, id);
    }
  });

  it('backs off for every transient id of the registry', () => {
    for (const id of TRANSIENT_FAILURES)
      assert.equal(nextLoadDelay({ ...base, consecutiveFailures: 1, lastFailure: id }), RETRY_MIN_MS, id);
  });
});

describe('ListLifecycle (in-process, mock timers)', { timeout: 120_000 }, () => {
  it('loads a list, puts it in force, persists it, then refreshes after --refresh', async () => {
    const w = world();
    const a = w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    const result = await w.lifecycle.reload('startup');
    assert.deepEqual(result, { outcome: 'loaded', domains: 20, rejected: 0 });
    assert.equal(w.lifecycle.current()?.domainCount, 20);
    assert.deepEqual(readFileSync(join(w.stateDir, STATE_LIST_FILE)), a);
    await expectNextLoadAfter(w, REFRESH_MS);
    assert.notEqual(w.source.calls.at(-1), null, 'the refresh is conditional (validators of the list in force)');
    assert.equal(w.logs.filter((l) => l.event === 'list_unchanged').length, 1);
    assert.equal(w.preparer.closes, w.preparer.runs, 'the preparer is closed after each run');
  });

  it('coalesces reloads: one running, one queued, whatever the number of calls', async () => {
    const w = world();
    w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    const release = w.source.hold();
    const first = w.lifecycle.reload('sighup');
    const others = Array.from({ length: 50 }, () => w.lifecycle.reload('sighup'));
    assert.equal(w.source.calls.length, 1, 'one fetch running');
    assert.ok(
      others.every((p) => p === others[0]),
      'every call during the load shares one queued load',
    );
    assert.notEqual(others[0], first);
    release();
    assert.equal((await first).outcome, 'loaded');
    assert.equal((await others[0]!).outcome, 'unchanged');
    await w.lifecycle.settled();
    assert.equal(w.source.calls.length, 2, 'two fetches for 51 calls');
    assert.equal(w.preparer.runs, 1, 'the queued load asked conditionally: not-modified, nothing re-verified');
  });

  it('retries a transient failure with backoff while a list is in force, and returns to --refresh after a success', async () => {
    const w = world();
    w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    await w.lifecycle.reload('startup');
    w.source.fail('source_unreachable');
    await expectNextLoadAfter(w, REFRESH_MS);
    for (const ms of [15_000, 30_000, 60_000, 120_000, 240_000, 480_000, RETRY_MAX_MS, RETRY_MAX_MS])
      await expectNextLoadAfter(w, ms);
    assert.equal(await failures(w.metrics, 'source_unreachable'), 9);
    assert.equal(w.lifecycle.current()?.domainCount, 20, 'the list in force stays');
    w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    await expectNextLoadAfter(w, RETRY_MAX_MS);
    await expectNextLoadAfter(w, REFRESH_MS);
  });

  it('waits --refresh after a content refusal while a list is in force', async () => {
    const w = world();
    w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    await w.lifecycle.reload('startup');
    w.source.serve({ refuse: 'signature_invalid' });
    await expectNextLoadAfter(w, REFRESH_MS);
    assert.equal(w.lifecycle.state().lastFailure?.reason, 'signature_invalid');
    await expectNextLoadAfter(w, REFRESH_MS);
    assert.equal(await failures(w.metrics, 'signature_invalid'), 2);
  });

  it('retries soon, whatever the failure, while nothing is in force', async () => {
    const w = world();
    w.source.serve({ refuse: 'signature_invalid' });
    assert.equal((await w.lifecycle.reload('startup')).outcome, 'failed');
    await expectNextLoadAfter(w, 15_000);
    await expectNextLoadAfter(w, 30_000);
    w.preparer.crash = 'list worker exited with code 1';
    await expectNextLoadAfter(w, 60_000);
    assert.equal(w.lifecycle.state().lastFailure?.reason, 'worker_failed');
    w.preparer.crash = null;
    w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    await expectNextLoadAfter(w, 120_000);
    assert.equal(w.lifecycle.current()?.domainCount, 20);
    await expectNextLoadAfter(w, REFRESH_MS);
  });

  it('not-modified with nothing in force: asks again unconditionally and loads the body', async () => {
    const w = world();
    const a = w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    // A source answering 304 once, to a request it should have answered in full.
    const fetch = w.source.fetch.bind(w.source);
    let first = true;
    w.source.fetch = async (previous) => {
      if (!first) return fetch(previous);
      first = false;
      w.source.calls.push(previous);
      return { kind: 'not_modified', validators: { etag: '"x"', lastModified: null, mtimeMs: null, size: null }, attempts: 1 };
    };
    assert.equal((await w.lifecycle.reload('startup')).outcome, 'loaded');
    assert.deepEqual(w.source.calls, [null, null], 'both requests unconditional');
    assert.deepEqual(readFileSync(join(w.stateDir, STATE_LIST_FILE)), a);
  });

  it('not-modified forever with nothing in force: a failure, retried soon, never "unchanged"', async () => {
    const w = world();
    w.source.alwaysNotModified();
    const r = await w.lifecycle.reload('startup');
    assert.equal(r.outcome === 'failed' && r.reason, 'source_http_status');
    assert.equal(w.lifecycle.current(), null);
    assert.equal(w.logs.filter((l) => l.event === 'list_unchanged').length, 0);
    await expectNextLoadAfter(w, 15_000);
  });

  it('persist failure: the list goes in force, and the copy is written at the next load once the directory is writable', async () => {
    const base = mkdtempSync(join(tmpdir(), 'lifecycle-blocked-'));
    dirs.push(base);
    // A regular file where the state dir's parent should be: ENOTDIR, even for root.
    writeFileSync(join(base, 'blocker'), 'not a directory');
    const stateDir = join(base, 'blocker', 'state');
    const w = world({ stateDir });
    const a = w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    assert.equal((await w.lifecycle.reload('startup')).outcome, 'loaded');
    assert.equal(w.lifecycle.current()?.domainCount, 20);
    assert.equal(await failures(w.metrics, 'state_write_failed'), 1);
    assert.equal(w.logs.filter((l) => l.event === 'state_write_failed').length, 1);

    rmSync(join(base, 'blocker'));
    // The source is unchanged (it would answer not-modified): the load must still get the body it owes to the state dir.
    await expectNextLoadAfter(w, REFRESH_MS);
    assert.equal(w.source.calls.at(-1), null, 'asked unconditionally while a copy is owed');
    assert.deepEqual(readFileSync(join(stateDir, STATE_LIST_FILE)), a);
    assert.equal(await failures(w.metrics, 'state_write_failed'), 1);
    await expectNextLoadAfter(w, REFRESH_MS);
    assert.notEqual(w.source.calls.at(-1), null, 'conditional again once the copy is written');
  });

  it('refuses a rollback to an older list, keeps the one in force, and takes it once accepted', async () => {
    const w = world();
    w.source.serve({ generatedAt: '2026-05-02T00:00:00Z', domains: 20 });
    await w.lifecycle.reload('startup');
    const older = w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20, tag: 'older' });
    const r = await w.lifecycle.reload('sighup');
    assert.equal(r.outcome === 'failed' && r.reason, 'list_older');
    assert.equal(w.lifecycle.state().inForce?.index.generatedAt, '2026-05-02T00:00:00Z');
    await addAcceptedHash(w.stateDir, sha256(older));
    assert.equal((await w.lifecycle.reload('sighup')).outcome, 'loaded');
    assert.equal(w.lifecycle.state().inForce?.index.generatedAt, '2026-05-01T00:00:00Z');
    assert.deepEqual(readFileSync(join(w.stateDir, STATE_LIST_FILE)), older);
  });

  it('refuses a list dated more than 24 h ahead, also with nothing in force, and loads it when the clock catches up', async () => {
    const w = world();
    const ahead = isoAt(NOW + MAX_FUTURE_SKEW_MS + HOUR);
    w.source.serve({ generatedAt: ahead, domains: 20 });
    const r = await w.lifecycle.reload('startup');
    assert.equal(r.outcome === 'failed' && r.reason, 'list_from_future');
    assert.equal(w.lifecycle.current(), null);
    assert.equal(existsSync(join(w.stateDir, STATE_LIST_FILE)), false, 'nothing persisted');
    assert.equal(await failures(w.metrics, 'list_from_future'), 1);
    // Nothing in force: retried soon; a few hours ahead is taken.
    w.clock.ms += 2 * HOUR;
    await expectNextLoadAfter(w, 15_000);
    assert.equal(w.lifecycle.state().inForce?.index.generatedAt, ahead);
    // With a list in force, a list from the future is refused too: it would win every rollback check.
    w.source.serve({ generatedAt: isoAt(w.clock.ms + 2 * MAX_FUTURE_SKEW_MS), domains: 20 });
    const again = await w.lifecycle.reload('sighup');
    assert.equal(again.outcome === 'failed' && again.reason, 'list_from_future');
    assert.equal(w.lifecycle.state().inForce?.index.generatedAt, ahead);
  });

  it('journals each swap (counted, logged), refuses a rebinding beyond --max-rebind, and keeps the journal across a restart', async () => {
    const w = world();
    w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    await w.lifecycle.reload('startup');
    assert.deepEqual(w.lifecycle.changes(), [], 'the first list is no change');
    w.source.serve({ generatedAt: '2026-05-02T00:00:00Z', domains: 21, moved: 2 });
    assert.equal((await w.lifecycle.reload('sighup')).outcome, 'loaded');
    const [change] = w.lifecycle.changes();
    assert.deepEqual(
      [change?.added, change?.rebound.map((r) => r.domain), change?.operatorsAdded, change?.to.generatedAt],
      [['d20.mssante.fr'], ['d0.mssante.fr', 'd1.mssante.fr'], ['CN=mx.op2.fr,OU=2,O=op2,C=fr'], '2026-05-02T00:00:00Z'],
    );
    const counted = (await w.metrics.whitelistChanges.get()).values.map((v) => [v.labels.kind, v.value]);
    assert.deepEqual(counted, [
      ['added', 1],
      ['removed', 0],
      ['rebound', 2],
    ]);
    assert.ok(w.logs.some((l) => l.event === 'list_changed'));
    assert.deepEqual(w.lifecycle.domainHistory('d1.mssante.fr').since, '2026-05-02T00:00:00Z');
    // 3 more of 21 domains moved (14 %): refused, the list in force stays, nothing journaled.
    const third = w.source.serve({ generatedAt: '2026-05-03T00:00:00Z', domains: 21, moved: 5 });
    const refused = await w.lifecycle.reload('sighup');
    assert.equal(refused.outcome === 'failed' && refused.reason, 'list_rebind');
    assert.equal(w.lifecycle.current()?.generatedAt, '2026-05-02T00:00:00Z');
    assert.equal(w.lifecycle.changes().length, 1);
    assert.equal(await failures(w.metrics, 'list_rebind'), 1);
    await addAcceptedHash(w.stateDir, sha256(third));
    assert.equal((await w.lifecycle.reload('sighup')).outcome, 'loaded', 'accepted: taken');
    assert.equal(w.lifecycle.changes().length, 2);
    await w.lifecycle.stop();
    const restarted = world({ stateDir: w.stateDir });
    await restarted.lifecycle.start();
    await restarted.lifecycle.settled();
    assert.deepEqual(restarted.lifecycle.changes(), w.lifecycle.changes());
    assert.equal(restarted.lifecycle.domainHistory('d4.mssante.fr').since, '2026-05-03T00:00:00Z');
  });

  it('stop() ends the timer and the preparer; later reloads fail at once', async () => {
    const w = world();
    w.source.serve({ generatedAt: '2026-05-01T00:00:00Z', domains: 20 });
    await w.lifecycle.reload('startup');
    await w.lifecycle.stop();
    const calls = w.source.calls.length;
    mock.timers.tick(2 * REFRESH_MS);
    assert.equal(w.source.calls.length, calls, 'no timer load after stop');
    const r = await w.lifecycle.reload('sighup');
    assert.equal(r.outcome, 'failed');
  });
});

describe(
  "several sources: a copy refused as that source's fault passes the turn to the next (issue 24)",
  { timeout: 120_000 },
  () => {
    const CURRENT = { generatedAt: '2026-05-20T00:00:00Z', domains: 20, tag: 'current' } as const;
    const NEWER = { generatedAt: '2026-05-30T00:00:00Z', domains: 20, tag: 'newer' } as const;
    const OLDER = { generatedAt: '2026-05-01T00:00:00Z', domains: 20, tag: 'older' } as const;

    it('source 1 serves a list older than the one in force: source 2 is asked in the same load, its list goes in force', async () => {
      const w = failoverWorld(2);
      w.sources[0]!.serve(CURRENT);
      w.sources[1]!.serve(NEWER);
      assert.equal((await w.lifecycle.reload('startup')).outcome, 'loaded');
      assert.equal(w.failover.lastUsed?.position, 1);
      // Source 1 now serves a rollback (a stale mirror, or someone replaying an old signed list).
      w.sources[0]!.serve(OLDER);
      assert.deepEqual(await w.lifecycle.reload('sighup'), { outcome: 'loaded', domains: 20, rejected: 0 });
      assert.equal(w.failover.lastUsed?.position, 2);
      assert.equal(w.lifecycle.state().inForce?.source, 'fake://source-2');
      assert.equal(w.lifecycle.current()?.generatedAt, NEWER.generatedAt);
      assert.equal(await failures(w.metrics, 'list_older'), 1, 'the refusal is counted all the same');
      assert.equal(w.logs.filter((l) => l.event === 'list_source_refused').length, 1);
    });

    it('a signature failure on source 1 also tries source 2; source 2 holding the list in force is "unchanged"', async () => {
      const w = failoverWorld(2);
      w.sources[0]!.serve(CURRENT);
      await w.lifecycle.reload('startup');
      w.sources[0]!.serve({ refuse: 'signature_invalid' });
      w.sources[1]!.serve(CURRENT);
      assert.deepEqual(await w.lifecycle.reload('sighup'), { outcome: 'unchanged' });
      assert.equal(await failures(w.metrics, 'signature_invalid'), 1);
      assert.equal(w.sources[1]!.calls.length, 1);
    });

    it('every source stale: the last refusal is the result, the list in force stays', async () => {
      const w = failoverWorld(3);
      w.sources[0]!.serve(CURRENT);
      await w.lifecycle.reload('startup');
      w.sources[0]!.serve(OLDER);
      w.sources[1]!.fail('source_unreachable');
      w.sources[2]!.serve({ refuse: 'signature_digest_mismatch' });
      const r = await w.lifecycle.reload('sighup');
      assert.equal(r.outcome === 'failed' && r.reason, 'signature_digest_mismatch');
      assert.equal(w.lifecycle.current()?.generatedAt, CURRENT.generatedAt);
      assert.deepEqual(
        w.sources.map((x) => x.calls.length),
        [2, 1, 1],
        'each source asked once in the load',
      );
    });

    it('a refusal for what a valid list says (shrink) waits for a human: the next source is not asked', async () => {
      const w = failoverWorld(2);
      w.sources[0]!.serve(CURRENT);
      await w.lifecycle.reload('startup');
      w.sources[0]!.serve({ generatedAt: '2026-05-25T00:00:00Z', domains: 5 });
      w.sources[1]!.serve(NEWER);
      const r = await w.lifecycle.reload('sighup');
      assert.equal(r.outcome === 'failed' && r.reason, 'list_shrink');
      assert.equal(w.sources[1]!.calls.length, 0);
      assert.ok(
        !TRY_NEXT_SOURCE.has('list_shrink') && !TRY_NEXT_SOURCE.has('list_rebind') && !TRY_NEXT_SOURCE.has('list_unsigned'),
      );
      assert.ok(
        TRY_NEXT_SOURCE.has('list_older') && TRY_NEXT_SOURCE.has('list_too_old') && TRY_NEXT_SOURCE.has('signer_untrusted'),
      );
    });

    it('nothing in force and source 1 too old for --max-list-age: source 2 fresh list loads', async () => {
      const w = failoverWorld(2, { maxListAgeDays: 7 });
      w.sources[0]!.serve({ generatedAt: isoAt(NOW - 30 * 24 * HOUR), domains: 20 });
      w.sources[1]!.serve({ generatedAt: isoAt(NOW - HOUR), domains: 20 });
      assert.equal((await w.lifecycle.reload('startup')).outcome, 'loaded');
      assert.equal(w.lifecycle.state().inForce?.source, 'fake://source-2');
      assert.equal(await failures(w.metrics, 'list_too_old'), 1);
    });
  },
);
