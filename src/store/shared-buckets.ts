/**
 * Operator token buckets shared by every instance of a fleet, for the OperatorLedger.
 *
 * Every counted message is taken in one atomic script on the store (its TIME is the bucket's clock;
 * the messages of one event-loop turn share one call), so the store holds the one bucket the fleet drains. The answer to the MTA never waits for that round trip:
 * the verdict is taken at once on the bucket as the store last reported it, minus this instance's takes
 * not yet acknowledged, refilled at the rate since. What N instances may let through beyond one bucket
 * is therefore bounded by the messages they take during one round trip to the store (about a
 * millisecond on a LAN), not by N bursts.
 *
 * While the store is slow (past --store-timeout) or gone, each bucket answers from its own in-memory
 * twin (per instance, as without a store): nothing waits, nothing fails. The first reply after that
 * resumes sharing for that bucket.
 */
import { TokenBucket, type OperatorBucket, type OperatorBucketFactory } from '../trust/operators.js';
import { StoreError, type BucketRequest, type SharedStore, type StoreOp } from './store.js';

export interface StoreHealth {
  /** A call failed (timeout, connection, garbled reply): counted and logged by the owner. */
  failed(op: StoreOp, error: StoreError): void;
  /** A call succeeded. */
  succeeded(op: StoreOp): void;
}

/** Most buckets in one script call: a turn with more sends several calls. */
export const MAX_BUCKETS_PER_CALL = 256;

/**
 * Collects the takes of one event-loop turn and sends them as one script call (setImmediate): under
 * load, one round trip for every message read in that turn instead of one each (the client's CPU per
 * command is what costs). A quiet site sends one call per message, as before.
 */
class TakeBatcher {
  private queued = new Map<SharedBucket, number>();
  private scheduled = false;

  constructor(
    private readonly store: SharedStore,
    private readonly health: StoreHealth,
  ) {}

  add(bucket: SharedBucket, cost: 0 | 1): void {
    this.queued.set(bucket, (this.queued.get(bucket) ?? 0) + cost);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const batch = [...this.queued];
    this.queued = new Map();
    for (let i = 0; i < batch.length; i += MAX_BUCKETS_PER_CALL) this.send(batch.slice(i, i + MAX_BUCKETS_PER_CALL));
  }

  private send(batch: ReadonlyArray<readonly [SharedBucket, number]>): void {
    this.store.takeTokens(batch.map(([bucket, cost]) => bucket.request(cost))).then(
      (steps) => {
        batch.forEach(([bucket, cost], i) => bucket.answered(cost, steps[i]!.tokens));
        this.health.succeeded('bucket');
      },
      (error: unknown) => {
        for (const [bucket, cost] of batch) bucket.failed(cost);
        this.health.failed('bucket', error instanceof StoreError ? error : new StoreError('bucket', String(error)));
      },
    );
  }
}

class SharedBucket implements OperatorBucket {
  private readonly local: TokenBucket;
  /** Tokens the store reported and when (local clock) its reply came; null: no reply since start or since a failure. */
  private reported: { tokens: number; at: number } | null = null;
  /** Takes sent or queued and not answered yet. */
  private pending = 0;

  constructor(
    private readonly name: string,
    private readonly rate: number,
    private readonly burst: number,
    now: number,
    private readonly batcher: TakeBatcher,
    private readonly clock: () => number,
  ) {
    this.local = new TokenBucket(rate, burst, now);
  }

  take(now: number): boolean {
    // The twin always counts, so that it is warm when the store goes away.
    const localVerdict = this.local.take(now);
    let verdict = localVerdict;
    if (this.reported !== null) {
      const refilled = Math.min(this.burst, this.reported.tokens + (Math.max(0, now - this.reported.at) * this.rate) / 1000);
      verdict = refilled - this.pending >= 1;
    }
    const cost = verdict ? 1 : 0;
    this.pending += cost;
    this.batcher.add(this, cost);
    return verdict;
  }

  request(cost: number): BucketRequest {
    return { bucket: this.name, rate: this.rate, burst: this.burst, cost };
  }

  answered(cost: number, tokens: number): void {
    this.pending -= cost;
    this.reported = { tokens, at: this.clock() };
  }

  failed(cost: number): void {
    this.pending -= cost;
    this.reported = null;
  }
}

/** The ledger's bucket factory over `store`: bucket names are the operator labels (hashed into keys by the store). */
export function sharedBuckets(store: SharedStore, health: StoreHealth, clock: () => number = Date.now): OperatorBucketFactory {
  const batcher = new TakeBatcher(store, health);
  return (label, rate, burst, now) => new SharedBucket(label, rate, burst, now, batcher, clock);
}
