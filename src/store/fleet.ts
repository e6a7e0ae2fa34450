/**
 * The fleet registry: each instance writes what list it enforces into the store (with a TTL), and
 * reads who else does. GET /v1/fleet shows them; fleet_instances{list_sha256} counts them per list,
 * so that two MX enforcing two lists (one failed its download) show, and alert.
 *
 * Informational only: nothing decides on it. Records read back are checked (store.ts) and bounded.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { InstanceRecord, SharedStore } from './store.js';
import { StoreError } from './store.js';
import type { StoreHealth } from './shared-buckets.js';

/** How often an instance registers and reads the fleet; records live three times this. */
export const FLEET_INTERVAL_MS = 15_000;
export const FLEET_TTL_MS = 3 * FLEET_INTERVAL_MS;
/** Distinct list_sha256 label values exported at most; the rest add up under `other`. */
export const MAX_FLEET_LISTS = 8;

export interface InstanceState {
  readonly listSha256: string | null;
  readonly listGeneratedAt: string | null;
  readonly lastListSuccessAt: string | null;
}

export interface FleetSnapshot {
  /** `memory`: no --store, the fleet is this instance; else the store's address without credentials. */
  readonly store: string;
  readonly self: string;
  /** When the instances were last read from the store; null: never. */
  readonly readAt: string | null;
  /** The last read failed: `instances` is what the read before it returned. */
  readonly stale: boolean;
  readonly instances: readonly InstanceRecord[];
  /** Instances per list sha256 (`none`: no list in force). */
  readonly lists: Readonly<Record<string, number>>;
}

/** Instances per list, bounded to MAX_FLEET_LISTS label values (the biggest groups), the rest as `other`. */
export function countLists(instances: readonly InstanceRecord[]): Record<string, number> {
  const counts = new Map<string, number>();
  for (const i of instances) counts.set(i.listSha256 ?? 'none', (counts.get(i.listSha256 ?? 'none') ?? 0) + 1);
  const sorted = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const out: Record<string, number> = {};
  sorted.forEach(([sha, n], i) => {
    if (i < MAX_FLEET_LISTS) out[sha] = n;
    else out.other = (out.other ?? 0) + n;
  });
  return out;
}

export function newInstanceId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

export class FleetRegistry {
  private readonly startedAt = new Date().toISOString();
  private timer: NodeJS.Timeout | null = null;
  private instances: readonly InstanceRecord[] = [];
  private readAt: string | null = null;
  private stale = false;

  constructor(
    private readonly store: SharedStore,
    private readonly storeDescription: string,
    private readonly health: StoreHealth,
    readonly id: string,
    private readonly version: string,
    private readonly state: () => InstanceState,
    /** Gets the per-list counts after each read (the fleet_instances gauge). */
    private readonly onLists: (lists: Readonly<Record<string, number>>) => void,
  ) {}

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), FLEET_INTERVAL_MS);
    this.timer.unref();
  }

  /** Register and read now (at start, and when the list in force changed). Never throws. */
  async tick(): Promise<void> {
    await this.register();
    await this.refresh();
  }

  /** Reads the fleet again (GET /v1/fleet); on failure keeps the last list, marked stale. */
  async refresh(): Promise<FleetSnapshot> {
    try {
      this.instances = await this.store.listInstances();
      this.readAt = new Date().toISOString();
      this.stale = false;
      this.health.succeeded('instances');
      this.onLists(countLists(this.instances));
    } catch (error) {
      this.stale = true;
      this.health.failed('instances', error instanceof StoreError ? error : new StoreError('instances', String(error)));
    }
    return this.snapshot();
  }

  snapshot(): FleetSnapshot {
    return {
      store: this.storeDescription,
      self: this.id,
      readAt: this.readAt,
      stale: this.stale,
      instances: this.instances,
      lists: countLists(this.instances),
    };
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private async register(): Promise<void> {
    try {
      await this.store.registerInstance(
        { id: this.id, host: hostname(), version: this.version, startedAt: this.startedAt, ...this.state() },
        FLEET_TTL_MS,
      );
      this.health.succeeded('register');
    } catch (error) {
      this.health.failed('register', error instanceof StoreError ? error : new StoreError('register', String(error)));
    }
  }
}
