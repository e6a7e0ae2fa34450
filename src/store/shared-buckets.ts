/**
 * Operator token buckets shared by every instance of a fleet, for the OperatorLedger.
 *
 * Every counted message runs one atomic script on the store (its TIME is the bucket's clock), so the
 * store holds the one bucket the fleet drains. The answer to the MTA never waits for that round trip:
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
import { StoreError, type SharedStore, type StoreOp } from './store.js';

export interface StoreHealth {
  /** A call failed (timeout, connection, garbled reply): counted and logged by the owner. */
  failed(op: StoreOp, error: StoreError): void;
  /** A call succeeded. */
  succeeded(op: StoreOp): void;
}

class SharedBucket implements OperatorBucket {
  private readonly local: TokenBucket;
  /** Tokens the store reported and when (local clock) its reply came; null: no reply since start or since a failure. */
  private reported: { tokens: number; at: number } | null = null;
  /** Takes sent and not answered yet. */
  private pending = 0;

  constructor(
    private readonly name: string,
    private readonly rate: number,
    private readonly burst: number,
    now: number,
    private readonly store: SharedStore,
    private readonly health: StoreHealth,
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
    this.send(verdict ? 1 : 0);
    return verdict;
  }

  private send(cost: 0 | 1): void {
    this.pending += cost;
    this.store.takeToken(this.name, this.rate, this.burst, cost).then(
      (step) => {
        this.pending -= cost;
        this.reported = { tokens: step.tokens, at: this.clock() };
        this.health.succeeded('bucket');
      },
      (error: unknown) => {
        this.pending -= cost;
        this.reported = null;
        this.health.failed('bucket', error instanceof StoreError ? error : new StoreError('bucket', String(error)));
      },
    );
  }
}

/** The ledger's bucket factory over `store`: bucket names are the operator labels (hashed into keys by the store). */
export function sharedBuckets(store: SharedStore, health: StoreHealth, clock: () => number = Date.now): OperatorBucketFactory {
  return (label, rate, burst, now) => new SharedBucket(label, rate, burst, now, store, health, clock);
}
