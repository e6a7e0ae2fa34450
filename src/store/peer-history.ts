/**
 * The certificate fingerprints seen per listed identity, shared by every MX of a fleet: a renewal seen
 * on one MX is not news again on the next. The method shape of src/trust/peers.ts's PeerHistoryBackend
 * (the ledger of the "list changes" issue); shared-peers.ts adapts it to that interface, over the
 * state-dir backend.
 *
 * One atomic script per sighting: it reads the identity's last fingerprint, adds the new one with its
 * first-seen time, updates last-seen, and trims the identity to PEER_FINGERPRINTS_MAX fingerprints
 * (oldest first-seen dropped). Only listed identities are recorded (the caller's job), so the number of
 * identities is bounded by the list; the fingerprints per identity by the trim. What is read back is
 * checked: a garbled entry is skipped, never trusted.
 */
import type { Redis } from 'ioredis';
import { KEY_PREFIX, keyPart, runScript, defineScript } from './redis-store.js';
import { StoreError } from './store.js';

export const PEER_FINGERPRINTS_MAX = 16;
/**
 * An identity's keys expire this long after its last sighting (each sighting renews them): an operator
 * that left the list, or sends nothing for 400 days, leaves nothing behind. Its next sighting is then a
 * first one, never a change.
 */
export const PEER_HISTORY_TTL_MS = 400 * 86_400_000;
/** Identities listed at most by list(): the list holds ~6 500 certificates. */
export const PEER_IDENTITIES_MAX = 100_000;
const MAX_TEXT = 1024;
const LIST_CHUNK = 512;

export interface PeerSighting {
  /** No fingerprint was known for this identity under this value. */
  readonly isNew: boolean;
  /** The identity's fingerprint seen last before this one (null: the identity was never seen). */
  readonly previous: string | null;
  /** When this fingerprint was first seen for this identity (ms). */
  readonly firstSeen: number;
}

export interface PeerFingerprint {
  readonly fingerprint: string;
  readonly firstSeen: number;
  readonly lastSeen: number;
  readonly frontend: string;
}

export interface PeerIdentity {
  readonly identity: string;
  readonly fingerprints: readonly PeerFingerprint[];
}

// KEYS: 1 fingerprints by first-seen (zset), 2 per-fingerprint "lastSeen frontend" (hash), 3 identity meta (hash), 4 index (set)
// ARGV: 1 fingerprint, 2 now ms, 3 max, 4 identity, 5 frontend, 6 identity key part, 7 time to live ms
const RECORD = `
local first = redis.call('ZSCORE', KEYS[1], ARGV[1])
local previous = redis.call('HGET', KEYS[3], 'last')
local isNew = 0
if not first then
  first = ARGV[2]
  isNew = 1
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  local n = redis.call('ZCARD', KEYS[1])
  local max = tonumber(ARGV[3])
  if n > max then
    local old = redis.call('ZRANGE', KEYS[1], 0, n - max - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1)
    for _, f in ipairs(old) do redis.call('HDEL', KEYS[2], f) end
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[5])
redis.call('HSET', KEYS[3], 'last', ARGV[1], 'identity', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[6])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
return {isNew, previous or '', tostring(first)}
`;
const SCRIPT = defineScript(RECORD);

function keys(idPart: string): [string, string, string, string] {
  const base = `${KEY_PREFIX}peers:${idPart}`;
  return [`${base}:first`, `${base}:last`, `${base}:meta`, `${KEY_PREFIX}peers`];
}

function text(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_TEXT;
}

export class RedisPeerHistory {
  constructor(
    private readonly client: Redis,
    private readonly maxPerIdentity: number = PEER_FINGERPRINTS_MAX,
  ) {}

  async record(identity: string, fingerprint: string, frontend: string, nowMs: number): Promise<PeerSighting> {
    if (!text(identity) || !text(fingerprint) || !/^[\w-]{1,32}$/.test(frontend) || !Number.isSafeInteger(nowMs))
      throw new StoreError('peers', 'refusing to record an unbounded identity, fingerprint or frontend');
    const idPart = keyPart(identity);
    const reply = await runScript(this.client, 'peers', SCRIPT, keys(idPart), [
      fingerprint,
      String(nowMs),
      String(this.maxPerIdentity),
      identity,
      frontend,
      idPart,
      String(PEER_HISTORY_TTL_MS),
    ]);
    if (!Array.isArray(reply) || reply.length !== 3) throw new StoreError('peers', 'unexpected reply shape');
    const [isNew, previous, first] = reply as unknown[];
    const firstSeen = typeof first === 'string' && /^\d{1,16}$/.test(first) ? Number(first) : NaN;
    if ((isNew !== 0 && isNew !== 1) || typeof previous !== 'string' || !Number.isSafeInteger(firstSeen))
      throw new StoreError('peers', 'reply out of range');
    return { isNew: isNew === 1, previous: previous === '' ? null : previous, firstSeen };
  }

  private async readIdentity(idPart: string): Promise<PeerIdentity | null> {
    const [firstKey, lastKey, metaKey] = keys(idPart);
    const [identity, firsts, lasts] = await Promise.all([
      this.client.hget(metaKey, 'identity'),
      this.client.zrange(firstKey, 0, this.maxPerIdentity - 1, 'WITHSCORES'),
      this.client.hgetall(lastKey),
    ]);
    if (!text(identity) || keyPart(identity) !== idPart) return null;
    const fingerprints: PeerFingerprint[] = [];
    for (let i = 0; i + 1 < firsts.length; i += 2) {
      const fingerprint = firsts[i]!;
      const firstSeen = Number(firsts[i + 1]);
      const m = /^(\d{1,16}) ([\w-]{1,32})$/.exec(lasts[fingerprint] ?? '');
      if (!text(fingerprint) || !Number.isSafeInteger(firstSeen) || m === null) continue;
      fingerprints.push({ fingerprint, firstSeen, lastSeen: Number(m[1]), frontend: m[2]! });
    }
    fingerprints.sort((a, b) => b.firstSeen - a.firstSeen);
    return fingerprints.length > 0 ? { identity, fingerprints } : null;
  }

  /** Every identity seen with its fingerprints, newest first-seen first; garbled entries left out. */
  async list(): Promise<PeerIdentity[]> {
    try {
      const indexKey = `${KEY_PREFIX}peers`;
      if ((await this.client.scard(indexKey)) > PEER_IDENTITIES_MAX) throw new StoreError('peers', 'too many identities');
      const idParts = (await this.client.smembers(indexKey)).filter((idPart) => /^[0-9a-f]{32}$/.test(idPart));
      const out: PeerIdentity[] = [];
      const gone: string[] = [];
      // Identities read LIST_CHUNK at a time: one pipelined write each (auto-pipelining), not one round trip each.
      for (let i = 0; i < idParts.length; i += LIST_CHUNK) {
        const slice = idParts.slice(i, i + LIST_CHUNK);
        const chunk = await Promise.all(slice.map((idPart) => this.readIdentity(idPart)));
        chunk.forEach((entry, j) => (entry !== null ? out.push(entry) : gone.push(slice[j]!)));
      }
      // Expired (or garbled) identities leave the index too; their keys expire on their own.
      if (gone.length > 0) await this.client.srem(indexKey, ...gone);
      return out.sort((a, b) => (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
    } catch (error) {
      if (error instanceof StoreError) throw error;
      throw new StoreError('peers', (error as Error).message);
    }
  }
}
