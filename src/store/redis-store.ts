/**
 * The Redis/Valkey store (Redis >= 6, Valkey: the same protocol and Lua). Each shared change is one
 * atomic server-side script; the token bucket reads the server's TIME, never a host's clock.
 *
 * Never waits past its deadline: ioredis' commandTimeout bounds every command, and with the offline
 * queue off a command sent while disconnected fails at once; the client reconnects on its own
 * (backoff capped at 5 s), so sharing resumes without anyone restarting anything.
 */
import { createHash } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import { parseStoreUrl, type StoreEndpoint } from './endpoint.js';
import {
  MAX_INSTANCES_LISTED,
  parseInstanceRecord,
  StoreError,
  type BucketRequest,
  type BucketStep,
  type InstanceRecord,
  type SharedStore,
  type StoreOp,
} from './store.js';

/** Every key of ours starts with this: a Redis shared with other software keeps apart. */
export const KEY_PREFIX = 'mssante-policyd:v1:';

export interface RedisStoreOptions {
  readonly url: string;
  readonly password: string | null;
  /** PEM CA bundle for rediss:// (default: the system roots). */
  readonly ca: string | null;
  /** Deadline of each command, milliseconds. */
  readonly timeoutMs: number;
  /** Connection problems (refused, TLS, AUTH): bounded by the caller's logging. */
  readonly onConnectionError?: (error: Error) => void;
}

/** Identities and bucket names are attacker-influenced text of any length: keys carry their hash. */
export function keyPart(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 32);
}

// One script for a batch of buckets (every message counted in one event-loop turn), on the server's clock.
// ARGV per key: rate, burst, cost, ttl ms. A garbled value (not "tokens:ms", out of range) is an empty
// bucket refilling from now: it grants nothing extra. Taking more than there is empties the bucket.
const TAKE_TOKENS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[i * 4 - 3])
  local burst = tonumber(ARGV[i * 4 - 2])
  local cost = tonumber(ARGV[i * 4 - 1])
  local tokens = burst
  local last = now
  local v = redis.call('GET', KEYS[i])
  if v then
    local a, b = string.match(v, '^([0-9]+%.?[0-9]*):([0-9]+)$')
    a = tonumber(a)
    b = tonumber(b)
    if a and b and a >= 0 and a <= burst then
      tokens = a
      last = math.min(b, now)
    else
      tokens = 0
    end
  end
  if now > last then tokens = math.min(burst, tokens + (now - last) * rate / 1000) end
  local allowed = 0
  if cost > 0 then
    if tokens >= cost then allowed = 1 end
    tokens = math.max(0, tokens - cost)
  end
  redis.call('SET', KEYS[i], string.format('%.6f:%.0f', tokens, now), 'PX', ARGV[i * 4])
  out[#out + 1] = allowed
  out[#out + 1] = string.format('%.6f', tokens)
end
return out
`;

interface Script {
  readonly lua: string;
  readonly sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

const SCRIPTS = { takeTokens: script(TAKE_TOKENS) };

export class RedisStore implements SharedStore {
  readonly kind = 'redis';
  readonly endpoint: StoreEndpoint;
  private readonly client: Redis;

  constructor(options: RedisStoreOptions) {
    this.endpoint = parseStoreUrl(options.url);
    const e = this.endpoint;
    const redisOptions: RedisOptions = {
      host: e.host,
      port: e.port,
      db: e.db,
      ...(e.username === null ? {} : { username: e.username }),
      ...(options.password === null ? {} : { password: options.password }),
      ...(e.tls ? { tls: { servername: e.host, ...(options.ca === null ? {} : { ca: options.ca }) } } : {}),
      connectionName: 'mssante-policyd',
      // Commands issued in one event-loop turn leave in one write: one syscall for a burst, not one each.
      enableAutoPipelining: true,
      lazyConnect: true,
      commandTimeout: options.timeoutMs,
      connectTimeout: Math.max(1000, options.timeoutMs * 20),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
      // Nothing of ours is blocking or subscribed: a reconnect after READONLY (a replica promoted away) is all we need.
      reconnectOnError: (error) => error.message.startsWith('READONLY'),
    };
    this.client = new Redis(redisOptions);
    this.client.on('error', (error: Error) => options.onConnectionError?.(error));
    // The first connection is not awaited: start-up never waits on the store, calls fail until it is up.
    this.client.connect().catch(() => undefined);
  }

  /** The ioredis client, for the classes of this folder that share its connection (peer history). */
  get redis(): Redis {
    return this.client;
  }

  async takeTokens(steps: readonly BucketRequest[]): Promise<BucketStep[]> {
    if (steps.length === 0) return [];
    const keys = steps.map((step) => `${KEY_PREFIX}bucket:${keyPart(step.bucket)}`);
    const args = steps.flatMap(({ rate, burst, cost }) => [
      String(rate),
      String(burst),
      String(cost),
      String(Math.ceil((burst / rate) * 1000) + 60_000),
    ]);
    const reply = await runScript(this.client, 'bucket', SCRIPTS.takeTokens, keys, args);
    if (!Array.isArray(reply) || reply.length !== 2 * steps.length) throw new StoreError('bucket', 'unexpected reply shape');
    return steps.map((step, i) => {
      const allowed: unknown = reply[2 * i];
      const tokensText: unknown = reply[2 * i + 1];
      const tokens = typeof tokensText === 'string' ? Number(tokensText) : NaN;
      if ((allowed !== 0 && allowed !== 1) || !Number.isFinite(tokens) || tokens < 0 || tokens > step.burst)
        throw new StoreError('bucket', 'reply out of range');
      return { allowed: allowed === 1 && step.cost > 0, tokens };
    });
  }

  /** One bucket step (tests, tools): takeTokens with one request. */
  async takeToken(bucket: string, rate: number, burst: number, cost: 0 | 1): Promise<BucketStep> {
    const [step] = await this.takeTokens([{ bucket, rate, burst, cost }]);
    return step!;
  }

  async registerInstance(record: Omit<InstanceRecord, 'seenAt'>, ttlMs: number): Promise<void> {
    const full: InstanceRecord = { ...record, seenAt: new Date().toISOString() };
    await guard('register', () =>
      this.client
        .multi()
        .set(`${KEY_PREFIX}instance:${keyPart(record.id)}`, JSON.stringify(full), 'PX', ttlMs)
        .sadd(`${KEY_PREFIX}instances`, keyPart(record.id))
        .exec()
        .then((results) => {
          for (const [error] of results ?? [[new Error('transaction discarded')]]) if (error) throw error;
        }),
    );
  }

  async listInstances(): Promise<InstanceRecord[]> {
    return guard('instances', async () => {
      const setKey = `${KEY_PREFIX}instances`;
      const count = await this.client.scard(setKey);
      if (count > MAX_INSTANCES_LISTED * 4)
        throw new StoreError('instances', `${count} instance ids registered: refusing to list`);
      const ids = (await this.client.smembers(setKey)).filter((id) => /^[0-9a-f]{32}$/.test(id));
      if (ids.length === 0) return [];
      const values = await this.client.mget(ids.map((id) => `${KEY_PREFIX}instance:${id}`));
      const gone: string[] = [];
      const records: InstanceRecord[] = [];
      values.forEach((value, i) => {
        if (value === null) {
          gone.push(ids[i]!);
          return;
        }
        let parsed: unknown;
        try {
          parsed = value.length <= 4096 ? JSON.parse(value) : null;
        } catch {
          parsed = null;
        }
        const record = parseInstanceRecord(parsed);
        if (record !== null && keyPart(record.id) === ids[i]) records.push(record);
      });
      // Expired records leave the index here: no instance has to be alive to clean up after another.
      if (gone.length > 0) await this.client.srem(setKey, ...gone);
      return records.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).slice(0, MAX_INSTANCES_LISTED);
    });
  }

  async close(): Promise<void> {
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

/** Any failure of `call` as a StoreError of `op` (the store's own error text is kept, it holds no secret). */
export async function guard<T>(op: StoreOp, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof StoreError) throw error;
    throw new StoreError(op, (error as Error).message);
  }
}

/** EVALSHA, and EVAL once when the server does not hold the script (restarted, flushed, another node). */
export function runScript(
  client: Redis,
  op: StoreOp,
  s: Script,
  keys: readonly string[],
  args: readonly string[],
): Promise<unknown> {
  return guard(op, async () => {
    try {
      return await client.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error as Error).message.startsWith('NOSCRIPT')) throw error;
      return await client.eval(s.lua, keys.length, ...keys, ...args);
    }
  });
}

export function defineScript(lua: string): Script {
  return script(lua);
}
