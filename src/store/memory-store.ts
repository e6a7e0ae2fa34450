/**
 * The in-memory store: one instance, nothing shared. What the daemon uses without --store, and what
 * a shared bucket falls back to while the Redis store is slow or gone.
 */
import { TokenBucket } from '../trust/operators.js';
import type { BucketRequest, BucketStep, InstanceRecord, SharedStore } from './store.js';

export class MemoryStore implements SharedStore {
  readonly kind = 'memory';
  private readonly buckets = new Map<string, { bucket: TokenBucket; rate: number; burst: number }>();
  private readonly instances = new Map<string, { record: InstanceRecord; expiresAt: number }>();

  constructor(private readonly clock: () => number = Date.now) {}

  takeTokens(steps: readonly BucketRequest[]): Promise<BucketStep[]> {
    const now = this.clock();
    return Promise.resolve(
      steps.map(({ bucket, rate, burst, cost }) => {
        let slot = this.buckets.get(bucket);
        if (slot === undefined || slot.rate !== rate || slot.burst !== burst) {
          slot = { bucket: new TokenBucket(rate, burst, now), rate, burst };
          this.buckets.set(bucket, slot);
        }
        let taken = 0;
        while (taken < cost && slot.bucket.take(now)) taken++;
        return { allowed: cost > 0 && taken === cost, tokens: slot.bucket.peek(now) };
      }),
    );
  }

  registerInstance(record: Omit<InstanceRecord, 'seenAt'>, ttlMs: number): Promise<void> {
    const now = this.clock();
    this.instances.set(record.id, { record: { ...record, seenAt: new Date(now).toISOString() }, expiresAt: now + ttlMs });
    return Promise.resolve();
  }

  listInstances(): Promise<InstanceRecord[]> {
    const now = this.clock();
    for (const [id, { expiresAt }] of this.instances) if (expiresAt <= now) this.instances.delete(id);
    return Promise.resolve([...this.instances.values()].map((i) => i.record).sort((a, b) => (a.id < b.id ? -1 : 1)));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
