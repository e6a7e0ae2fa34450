/**
 * State shared between the instances of one operator's fleet (several MX), behind one narrow
 * interface with two implementations: in memory (one instance: today's behaviour) and Redis/Valkey.
 *
 * The store never decides trust and never blocks a decision: every call has a deadline and may fail;
 * callers fall back to what they hold in memory. What comes back from the store is input like the
 * network: each implementation checks it and turns anything malformed into a StoreError.
 */

/** The operations, also the `op` label of store_errors_total: a bounded set. */
export const STORE_OPS = ['bucket', 'register', 'instances', 'peers'] as const;
export type StoreOp = (typeof STORE_OPS)[number];

export class StoreError extends Error {
  constructor(
    readonly op: StoreOp,
    message: string,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}

/** One token-bucket step, taken atomically on the store's own clock. */
export interface BucketStep {
  /** A token was taken (always false when `cost` was 0: a look without taking). */
  readonly allowed: boolean;
  /** Tokens left after the step, 0..burst. */
  readonly tokens: number;
}

export interface BucketRequest {
  readonly bucket: string;
  readonly rate: number;
  readonly burst: number;
  /** Tokens to take: messages this instance let through since its last call for the bucket; 0: a look. */
  readonly cost: number;
}

/** What an instance says of itself in the fleet registry (GET /v1/fleet). */
export interface InstanceRecord {
  readonly id: string;
  readonly host: string;
  readonly version: string;
  readonly listSha256: string | null;
  readonly listGeneratedAt: string | null;
  readonly lastListSuccessAt: string | null;
  readonly startedAt: string;
  /** When the instance last registered, ISO time of the store's clock. */
  readonly seenAt: string;
}

export interface SharedStore {
  readonly kind: 'memory' | 'redis';
  /**
   * For each step, atomically and all at once: refill `bucket` at `rate` tokens/s up to `burst`, then
   * take `cost` tokens (`allowed` when there were that many; what the bucket lacks is forgiven, never
   * owed). One call for every message counted in one event-loop turn.
   */
  takeTokens(steps: readonly BucketRequest[]): Promise<BucketStep[]>;
  /** Writes this instance's record, kept `ttlMs` unless written again. */
  registerInstance(record: Omit<InstanceRecord, 'seenAt'>, ttlMs: number): Promise<void>;
  /** The instances whose record has not expired, in id order. */
  listInstances(): Promise<InstanceRecord[]>;
  close(): Promise<void>;
}

/** Bounds on what an instance record may hold: a hostile store must not make /v1/fleet or the metric unbounded. */
export const MAX_INSTANCES_LISTED = 256;
const MAX_TEXT = 256;
const SHA256 = /^[0-9a-f]{64}$/;

/** A record read back from the store, or null when it is not one (wrong types, sizes, a sha256 that is not hex). */
export function parseInstanceRecord(value: unknown): InstanceRecord | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  const text = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= MAX_TEXT;
  const optional = (x: unknown): x is string | null => x === null || text(x);
  const time = (x: unknown): boolean => x === null || (text(x) && Number.isFinite(Date.parse(x)));
  if (!text(v.id) || !text(v.host) || !text(v.version) || !text(v.startedAt) || !text(v.seenAt)) return null;
  if (!optional(v.listSha256) || (v.listSha256 !== null && !SHA256.test(v.listSha256))) return null;
  if (!optional(v.listGeneratedAt) || !optional(v.lastListSuccessAt)) return null;
  if (!time(v.listGeneratedAt) || !time(v.lastListSuccessAt) || !time(v.startedAt) || !time(v.seenAt)) return null;
  return {
    id: v.id,
    host: v.host,
    version: v.version,
    listSha256: v.listSha256,
    listGeneratedAt: v.listGeneratedAt,
    lastListSuccessAt: v.lastListSuccessAt,
    startedAt: v.startedAt,
    seenAt: v.seenAt,
  };
}
