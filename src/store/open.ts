/**
 * The daemon's store, from its settings: the Redis store with --store, else the in-memory one; the
 * health that counts store_errors_total{op} and logs when the store goes and comes back; the shared
 * bucket factory (none without --store: the ledger keeps today's in-memory buckets); the fleet registry.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { OperatorBucketFactory } from '../trust/operators.js';
import { describeStore, parseStoreUrl } from './endpoint.js';
import { FleetRegistry, newInstanceId, type InstanceState } from './fleet.js';
import { MemoryStore } from './memory-store.js';
import { sharedBuckets, type StoreHealth } from './shared-buckets.js';
import { SharedPeerHistory } from './shared-peers.js';
import type { PeerHistoryBackend } from '../trust/peers.js';
import type { SharedStore, StoreError, StoreOp } from './store.js';

/** Not a setting: a setting is also a flag, and a password must never be in argv. */
export const STORE_PASSWORD_ENV = 'MSSANTE_POLICYD_STORE_PASSWORD';
/** Connection errors repeat at every reconnection attempt: logged at most this often. */
const CONNECTION_LOG_INTERVAL_MS = 60_000;

export interface StoreSettings {
  readonly store: string | null;
  readonly storeCaFile: string | null;
  readonly storePasswordFile: string | null;
  readonly storeTimeoutMs: number;
}

export interface StoreMetrics {
  readonly storeErrors: { inc(labels: { op: string }): void };
  setFleetLists(lists: Readonly<Record<string, number>>): void;
}

export interface OpenedStore {
  readonly store: SharedStore;
  /** `memory`, or the URL without credentials. */
  readonly description: string;
  readonly health: StoreHealth;
  /** The ledger's bucket factory with --store; undefined: in-memory buckets, as without a store. */
  readonly buckets: OperatorBucketFactory | undefined;
  readonly fleet: FleetRegistry;
  /**
   * With --store: the certificate history backend that shares the store's, over `local` (the
   * state-dir one, which answers while the store does not); without: `local` itself.
   */
  readonly peerHistory: (local: PeerHistoryBackend) => PeerHistoryBackend;
  close(): Promise<void>;
}

/** The password from --store-password-file or the environment; both set is ambiguous, refused. */
export function readStorePassword(settings: StoreSettings, env: NodeJS.ProcessEnv): string | null {
  const fromEnv = env[STORE_PASSWORD_ENV];
  if (settings.storePasswordFile !== null) {
    if (fromEnv !== undefined) throw new Error(`both --store-password-file and ${STORE_PASSWORD_ENV} are set: keep one`);
    const text = readFileSync(settings.storePasswordFile, 'utf8').replace(/\r?\n$/, '');
    if (text === '') throw new Error(`--store-password-file ${settings.storePasswordFile} is empty`);
    return text;
  }
  return fromEnv === undefined || fromEnv === '' ? null : fromEnv;
}

/** Counts every failure; logs only the changes (store lost, store back) and, at most once a minute, connection errors. */
export function storeHealth(
  metrics: StoreMetrics,
  logger: Logger,
  description: string,
): StoreHealth & { connectionError(e: Error): void } {
  let failing = false;
  let lastConnectionLog = -Infinity;
  return {
    failed(op: StoreOp, error: StoreError): void {
      metrics.storeErrors.inc({ op });
      if (failing) return;
      failing = true;
      logger.warn(
        { event: 'store_unavailable', store: description, op, err: error.message },
        'the shared store failed or is slow: each instance goes on with its own buckets',
      );
    },
    succeeded(): void {
      if (!failing) return;
      failing = false;
      logger.info({ event: 'store_back', store: description }, 'the shared store answers again: sharing resumes');
    },
    connectionError(error: Error): void {
      const now = Date.now();
      if (now - lastConnectionLog < CONNECTION_LOG_INTERVAL_MS) return;
      lastConnectionLog = now;
      logger.warn({ event: 'store_connection_error', store: description, err: error.message }, 'cannot reach the shared store');
    },
  };
}

/**
 * Opens the store. The Redis client (ioredis) is loaded only with --store: it costs ~10 MiB of
 * memory to a daemon that never talks to Redis.
 */
export async function openStore(
  settings: StoreSettings,
  env: NodeJS.ProcessEnv,
  metrics: StoreMetrics,
  logger: Logger,
  version: string,
  state: () => InstanceState,
): Promise<OpenedStore> {
  let store: SharedStore;
  let description = 'memory';
  let health: ReturnType<typeof storeHealth>;
  let peerHistory = (local: PeerHistoryBackend): PeerHistoryBackend => local;
  if (settings.store === null) {
    store = new MemoryStore();
    health = storeHealth(metrics, logger, description);
  } else {
    const [{ RedisStore }, { RedisPeerHistory }] = await Promise.all([import('./redis-store.js'), import('./peer-history.js')]);
    description = describeStore(parseStoreUrl(settings.store));
    health = storeHealth(metrics, logger, description);
    const password = readStorePassword(settings, env);
    const ca = settings.storeCaFile === null ? null : readFileSync(settings.storeCaFile, 'utf8');
    const redisStore = new RedisStore({
      url: settings.store,
      password,
      ca,
      timeoutMs: settings.storeTimeoutMs,
      onConnectionError: (error) => health.connectionError(error),
    });
    store = redisStore;
    peerHistory = (local) =>
      new SharedPeerHistory(new RedisPeerHistory(redisStore.redis), local, health, settings.storeTimeoutMs);
    logger.info({ event: 'store', store: description, timeout_ms: settings.storeTimeoutMs }, 'shared store configured');
  }
  const fleet = new FleetRegistry(store, description, health, newInstanceId(), version, state, (lists) =>
    metrics.setFleetLists(lists),
  );
  return {
    store,
    description,
    health,
    buckets: settings.store === null ? undefined : sharedBuckets(store, health),
    fleet,
    peerHistory,
    async close() {
      await fleet.stop();
      await store.close();
    },
  };
}
