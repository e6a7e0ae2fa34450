/**
 * Per-operator accounting and the optional throttle (issue #14, the December 2020 Mailiz flood).
 * It sits beside decide(): it counts Decisions per sending operator and, when asked, defers one
 * operator's excess; it never changes the rules. Pure: no I/O, the clock is injected, what it counts
 * goes to a sink.
 *
 * Operator = the listed certificate identity the decision matched (the normalised CN behind Postfix,
 * the normalised DN where the MTA gives one) or `unlisted`. Label values are therefore bounded by the
 * list in force: identities that leave the list are forgotten (and reported to the sink) at the swap.
 *
 * A message is counted, and its throttle verdict taken, once: at its first decided request. Postfix
 * asks once per RCPT, all of one message sharing its `instance` attribute: the verdict is remembered
 * per instance (bounded LRU) so every recipient of a message gets the same answer. Without an
 * instance (Milter: one question per transaction) each request is its own message.
 *
 * The hot path only bumps plain numbers; the metric reads them at scrape time (counts()): a
 * prom-client child inc() hashes its labels at every call, which alone cost more than the 2 µs goal.
 */
import { LRUCache } from 'lru-cache';
import { normaliseCn, parseDn } from './dn.js';
import type { Decision } from './decide.js';
import type { Result } from './reasons.js';

export const UNLISTED = 'unlisted';

/** The identities of the list in force (whitelist/whitelist-index.ts's WhitelistIndex), as this ledger reads them. */
export interface ListedOperators {
  readonly entries: readonly { readonly cn: string; readonly dnKey: string; readonly dnDisplay: string }[];
}

export type OperatorRateMode = 'enforce' | 'observe';

/** `throttled`: over the rate — deferred in enforce mode, let through and only counted in observe mode. */
export type OperatorResult = Result | 'throttled';
export const OPERATOR_RESULTS: readonly OperatorResult[] = ['pass', 'reject', 'tempfail', 'throttled'];

export interface OperatorRateSettings {
  /** Messages per second per operator; 0: no throttle (accounting only). */
  readonly rate: number;
  /** Bucket size (messages accepted at once after a quiet spell); 0: one second of `rate`. */
  readonly burst: number;
  readonly mode: OperatorRateMode;
  /** Identities never throttled: a CN (also exempts every listed DN with that CN) or a DN. */
  readonly exempt: readonly string[];
}

/**
 * Messages whose verdict is remembered (Postfix `instance`). What must fit: the messages in flight
 * at once, at most one per smtpd process (default_process_limit 100): 10 000 leaves a wide margin.
 * An evicted message would only be counted and judged again at its next recipient.
 */
const MESSAGE_MEMORY_MAX = 10_000;
/** Longer `instance` values are cut to this for the memory key (Postfix's are ~20 characters). */
const INSTANCE_KEY_MAX_CHARS = 128;
/** Window of the "current rate" and "share" of /v1/operators (sliding-window estimate). */
export const RATE_WINDOW_MS = 60_000;
/** Observe mode logs an operator over its rate at most this often (the count covers the interval). */
export const OBSERVE_LOG_INTERVAL_MS = 10_000;

export interface OperatorSink {
  /** These labels left the list in force: drop their series. */
  forget(labels: readonly string[]): void;
  /** Observe mode: `label` went over its rate `messages` times since the last call for it. */
  overRate(label: string, messages: number): void;
}

/** A token bucket as the ledger uses it: in memory (TokenBucket), or shared by a fleet (src/store/shared-buckets.ts). */
export interface OperatorBucket {
  /** Takes one token at `now` (ms): false when the bucket is empty. Synchronous: answers never wait on a bucket. */
  take(now: number): boolean;
}

/** Makes the bucket of one operator label (created at its first throttled-eligible message). */
export type OperatorBucketFactory = (label: string, ratePerSecond: number, burst: number, now: number) => OperatorBucket;

const memoryBuckets: OperatorBucketFactory = (_label, rate, burst, now) => new TokenBucket(rate, burst, now);

const RESULT_INDEX: Readonly<Record<OperatorResult, number>> = { pass: 0, reject: 1, tempfail: 2, throttled: 3 };

/** Token bucket; time in milliseconds from the injected clock. */
export class TokenBucket implements OperatorBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  take(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.ratePerSecond) / 1000);
      this.last = now;
    }
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /** Tokens there are at `now`, without taking one. */
  peek(now: number): number {
    return now > this.last ? Math.min(this.burst, this.tokens + ((now - this.last) * this.ratePerSecond) / 1000) : this.tokens;
  }
}

class Slot {
  bucket: OperatorBucket | null = null;
  /** Messages by result, in OPERATOR_RESULTS order: plain numbers on the hot path, read at scrape time. */
  readonly results = [0, 0, 0, 0];
  transactions = 0;
  throttled = 0;
  windowStart: number;
  current = 0;
  previous = 0;
  lastOverLog = -Infinity;
  overSinceLog = 0;

  constructor(
    readonly label: string,
    readonly exempt: boolean,
    now: number,
  ) {
    // Windows aligned on the clock, the same for every operator, so that shares compare like with like.
    this.windowStart = now - (now % RATE_WINDOW_MS);
  }

  tick(now: number): void {
    const elapsed = now - this.windowStart;
    if (elapsed < RATE_WINDOW_MS) return;
    const windows = Math.floor(elapsed / RATE_WINDOW_MS);
    this.previous = windows === 1 ? this.current : 0;
    this.current = 0;
    this.windowStart += windows * RATE_WINDOW_MS;
  }

  /** Messages per second over the last window, interpolated (the sliding-window estimate). */
  rate(now: number): number {
    this.tick(now);
    const weight = Math.max(0, 1 - (now - this.windowStart) / RATE_WINDOW_MS);
    return (this.previous * weight + this.current) / (RATE_WINDOW_MS / 1000);
  }
}

export interface OperatorStats {
  readonly operator: string;
  /** Messages per second, last minute. */
  readonly rate: number;
  /** This operator's part of all messages of the last minute, 0..1. */
  readonly share: number;
  /** Messages counted since the operator's first one (or since it came back into the list). */
  readonly transactions: number;
  /** Messages over the rate: deferred (enforce) or only counted (observe). */
  readonly throttled: number;
  readonly exempt: boolean;
}

export interface OperatorsSnapshot {
  readonly mode: 'off' | OperatorRateMode;
  readonly rate: number;
  readonly burst: number;
  readonly windowSeconds: number;
  readonly totalRate: number;
  /** Operators seen since they entered the list, busiest first. */
  readonly operators: readonly OperatorStats[];
}

/** A CN, or a DN key when the text is a DN (has a `TYPE=value`). null: unusable. */
function exemptKey(text: string): { readonly kind: 'cn' | 'dn'; readonly key: string } | null {
  if (text.includes('=')) {
    const parsed = parseDn(text);
    return parsed.ok ? { kind: 'dn', key: parsed.dn.key } : null;
  }
  const cn = normaliseCn(text);
  return cn === '' ? null : { kind: 'cn', key: cn };
}

/** Throws on an exemption that names nothing a certificate could have: a typo must not pass silently. */
export function validateExemptions(values: readonly string[]): void {
  for (const v of values)
    if (exemptKey(v) === null) throw new Error(`--operator-rate-exempt ${JSON.stringify(v)}: neither a CN nor a DN`);
}

interface Identity {
  readonly label: string;
  readonly exempt: boolean;
}

export class OperatorLedger {
  private readonly rate: number;
  private readonly burst: number;
  private readonly enforce: boolean;
  private readonly exemptCns = new Set<string>();
  private readonly exemptDns = new Set<string>();
  /** Listed identity (normalised CN or DN key) → its label: rebuilt at each swap. */
  private identities = new Map<string, Identity>();
  /** Slots of identities seen, by label: at most one per listed identity, plus `unlisted`. */
  private readonly slots = new Map<string, Slot>();
  private readonly messages: LRUCache<string, boolean>;

  constructor(
    readonly settings: OperatorRateSettings,
    private readonly sink: OperatorSink,
    private readonly clock: () => number = Date.now,
    messageMemory: number = MESSAGE_MEMORY_MAX,
    private readonly buckets: OperatorBucketFactory = memoryBuckets,
  ) {
    if (!(settings.rate >= 0) || !(settings.burst >= 0)) throw new Error('operator rate and burst must be >= 0');
    this.rate = settings.rate;
    this.burst = settings.burst > 0 ? settings.burst : Math.max(1, settings.rate);
    this.enforce = settings.mode === 'enforce';
    for (const text of settings.exempt) {
      const k = exemptKey(text);
      if (k !== null) (k.kind === 'cn' ? this.exemptCns : this.exemptDns).add(k.key);
    }
    this.messages = new LRUCache<string, boolean>({ max: messageMemory });
  }

  /** The list in force changed: identities are those of `index`; operators that left it are forgotten. */
  setList(index: ListedOperators | null): void {
    const identities = new Map<string, Identity>();
    const labels = new Set<string>([UNLISTED]);
    if (index !== null) {
      for (const e of index.entries) {
        const cnExempt = this.exemptCns.has(e.cn);
        if (e.cn !== '' && !identities.has(e.cn)) identities.set(e.cn, { label: e.cn, exempt: cnExempt });
        if (!identities.has(e.dnKey))
          identities.set(e.dnKey, { label: e.dnDisplay, exempt: cnExempt || this.exemptDns.has(e.dnKey) });
      }
    }
    for (const identity of identities.values()) labels.add(identity.label);
    this.identities = identities;
    const gone: string[] = [];
    for (const label of this.slots.keys()) {
      if (!labels.has(label)) {
        this.slots.delete(label);
        gone.push(label);
      }
    }
    if (gone.length > 0) this.sink.forget(gone);
  }

  /**
   * One request answered with `decision`: counts it (first decided request of a message only) and
   * says whether the throttle defers it. `instance`: Postfix's per-message id, when there is one.
   */
  admit(decision: Decision, instance: string | undefined): boolean {
    const result = decision.reason.result;
    if (decision.reason.id === 'not_decided_at_this_stage') return false;
    let key: string | undefined;
    if (instance !== undefined && instance !== '') {
      key = instance.length > INSTANCE_KEY_MAX_CHARS ? instance.slice(0, INSTANCE_KEY_MAX_CHARS) : instance;
      const seen = this.messages.get(key);
      if (seen !== undefined) return seen && this.enforce && result === 'pass';
    }
    const now = this.clock();
    const operator = decision.operator ?? null;
    const identity = operator === null ? undefined : this.identities.get(operator);
    const label = identity?.label ?? UNLISTED;
    let slot = this.slots.get(label);
    if (slot === undefined) {
      slot = new Slot(label, identity?.exempt ?? false, now);
      this.slots.set(label, slot);
    }
    let over = false;
    if (result === 'pass' && this.rate > 0 && !slot.exempt) {
      slot.bucket ??= this.buckets(label, this.rate, this.burst, now);
      over = !slot.bucket.take(now);
    }
    slot.tick(now);
    slot.current += 1;
    slot.transactions += 1;
    if (over) {
      slot.throttled += 1;
      if (!this.enforce) this.noteOverRate(slot, now);
    }
    slot.results[RESULT_INDEX[over ? 'throttled' : result]]! += 1;
    // Detached copy: the request's strings are slices of a whole network chunk.
    if (key !== undefined) this.messages.set((' ' + key).slice(1), over);
    return over && this.enforce;
  }

  private noteOverRate(slot: Slot, now: number): void {
    slot.overSinceLog += 1;
    if (now - slot.lastOverLog < OBSERVE_LOG_INTERVAL_MS) return;
    this.sink.overRate(slot.label, slot.overSinceLog);
    slot.lastOverLog = now;
    slot.overSinceLog = 0;
  }

  /** Messages counted so far, by operator and result (what the metric exports at each scrape). */
  *counts(): Generator<readonly [operator: string, result: OperatorResult, count: number]> {
    for (const slot of this.slots.values()) {
      for (let i = 0; i < OPERATOR_RESULTS.length; i++) {
        const count = slot.results[i]!;
        if (count > 0) yield [slot.label, OPERATOR_RESULTS[i]!, count];
      }
    }
  }

  /** How many operators have a slot (a bucket at most each): bounded by the list in force + 1. */
  get slotCount(): number {
    return this.slots.size;
  }

  snapshot(): OperatorsSnapshot {
    const now = this.clock();
    const rows = [...this.slots.values()].map((s) => ({ slot: s, rate: s.rate(now) }));
    const totalRate = rows.reduce((sum, r) => sum + r.rate, 0);
    const operators = rows
      .map(({ slot, rate }) => ({
        operator: slot.label,
        rate,
        share: totalRate > 0 ? rate / totalRate : 0,
        transactions: slot.transactions,
        throttled: slot.throttled,
        exempt: slot.exempt,
      }))
      .sort((a, b) => b.rate - a.rate || b.transactions - a.transactions || (a.operator < b.operator ? -1 : 1));
    return {
      mode: this.rate > 0 ? this.settings.mode : 'off',
      rate: this.rate,
      burst: this.rate > 0 ? this.burst : 0,
      windowSeconds: RATE_WINDOW_MS / 1000,
      totalRate,
      operators,
    };
  }
}
