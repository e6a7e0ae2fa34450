/**
 * The listeners' limits and timeouts as SETTINGS defines them by default, in the units the servers
 * take. SETTINGS (config.ts) is the only place these numbers are written: the servers and codecs
 * require their limits (no fallback of their own), the daemon passes the effective Config, and the
 * CLI's client side and the tests take these. test/unit/architecture.test.ts fails on a listener
 * default written anywhere else (docs/architecture.md, "One place per fact").
 */
import { SETTINGS, type SettingKey } from './config.js';
import type { MilterServerOptions } from './frontends/milter/server.js';
import type { PolicyLimits } from './frontends/policy/codec.js';
import type { PolicyServerOptions } from './frontends/policy/server.js';
import type { SocketmapLimits } from './frontends/socketmap/codec.js';
import type { SocketmapServerOptions } from './frontends/socketmap/server.js';

/** The default of a numeric setting. */
function numericDefault(key: SettingKey): number {
  const setting = SETTINGS.find((s) => s.key === key);
  if (setting === undefined || typeof setting.default !== 'number') throw new Error(`${key} is not a numeric setting`);
  return setting.default;
}

const seconds = (key: SettingKey): number => numericDefault(key) * 1000;

function stringDefault(key: SettingKey): string {
  const setting = SETTINGS.find((s) => s.key === key);
  if (setting === undefined || typeof setting.default !== 'string') throw new Error(`${key} is not a string setting`);
  return setting.default;
}

/**
 * Postfix bounds a policy attribute by its own string limits (8 KiB style lines; an SMTP command
 * line is 2048 bytes by default, a certificate CN 64 characters, xtext-encoded at most ×3), and
 * sends about 30 attributes in 3.7: each limit is well above what Postfix can send.
 */
export const DEFAULT_POLICY_LIMITS: PolicyLimits = Object.freeze({
  maxLineBytes: numericDefault('max-line-bytes'),
  maxRequestBytes: numericDefault('max-request-bytes'),
  maxAttributes: numericDefault('max-attributes'),
});

/** Postfix's socketmap client refuses replies above 100 000 bytes and never sends more itself. */
export const DEFAULT_SOCKETMAP_LIMITS: SocketmapLimits = Object.freeze({
  maxRequestBytes: numericDefault('max-socketmap-request-bytes'),
});

/**
 * A body chunk is at most 65 535 data bytes (libmilter MILTER_CHUNK_SIZE, Postfix MILTER_CHUNK_SIZE)
 * plus the command byte; we never negotiate the larger SMFIP_MDS_* sizes. 1 KiB of grace on top.
 * Everything we actually read (macros, addresses) is far smaller.
 */
export const DEFAULT_MAX_MILTER_PACKET_BYTES = numericDefault('max-milter-packet-bytes');

/** --socket-mode as SETTINGS defines it by default (0660: group members, e.g. postfix, may connect). */
export const DEFAULT_UNIX_SOCKET_MODE = parseInt(stringDefault('socket-mode'), 8);

/** What every listener shares: admission, the per-connection budget, the socket file's mode. */
const SHARED = Object.freeze({
  unixSocket: Object.freeze({ unixMode: DEFAULT_UNIX_SOCKET_MODE }),
  maxConnections: numericDefault('max-connections'),
  maxConnectionBytes: numericDefault('max-connection-bytes'),
  heapWatermarkPercent: numericDefault('heap-watermark'),
});

type Defaults<T> = Pick<T, Exclude<keyof T, 'logger' | 'metrics' | 'handle' | 'onMailFrom' | 'tables' | 'currentIndex'>>;

/** Each server's options as `serve` would pass them with no setting given (the same mapping as daemon.ts). */
export const LISTENER_DEFAULTS: {
  readonly policy: Defaults<PolicyServerOptions>;
  readonly milter: Defaults<MilterServerOptions>;
  readonly socketmap: Defaults<SocketmapServerOptions>;
} = Object.freeze({
  policy: Object.freeze({
    ...SHARED,
    limits: DEFAULT_POLICY_LIMITS,
    idleTimeoutMs: seconds('idle-timeout'),
    requestTimeoutMs: seconds('request-timeout'),
  }),
  milter: Object.freeze({
    ...SHARED,
    maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES,
    idleTimeoutMs: seconds('milter-idle-timeout'),
    packetTimeoutMs: seconds('request-timeout'),
  }),
  socketmap: Object.freeze({
    ...SHARED,
    limits: DEFAULT_SOCKETMAP_LIMITS,
    idleTimeoutMs: seconds('idle-timeout'),
    requestTimeoutMs: seconds('request-timeout'),
  }),
});
