/**
 * Every setting of `serve`, in one table: flag, environment variable, config-file key, default,
 * validation and help text. Precedence: flag > env > file > default. Validated once, then typed.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LOG_FORMATS, type LogFormat } from './observe/journal.js';
import { TLS_PROFILE_NAMES, type TlsProfileName } from './trust/tls-profile.js';
import { validateExemptions, type OperatorRateMode } from './trust/operators.js';
import { signerTrustProblem } from './whitelist/signature.js';
import { splitHostHeader } from './http/host.js';
import { parseStoreUrl } from './store/endpoint.js';

/** The package root (holds examples/): one level above src/ or dist/. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DEMO_WHITELIST = resolve(PACKAGE_ROOT, 'examples/demo-whitelist.xml');
export const DEMO_SIGNER = resolve(PACKAGE_ROOT, 'examples/demo-signer.pem');

type Kind = 'string' | 'string?' | 'list' | 'bool' | 'int' | 'seconds';

interface Setting {
  readonly key: string;
  readonly kind: Kind;
  readonly default: unknown;
  readonly help: string;
  readonly min?: number;
  readonly max?: number;
  readonly choices?: readonly string[];
  /** Applied by SIGHUP to the next decision (config-reload.ts); without it the setting needs a restart. */
  readonly live?: boolean;
}

export const SETTINGS = [
  {
    key: 'whitelist',
    kind: 'list',
    default: [],
    help: 'file path, https:// URL or http:// URL (a peer MX mirror: the signature and guards carry the trust) of the MSSante whitelist; required; repeatable: ordered sources, the next tried when one fails; "demo" serves the embedded demo list, signed by the demo signer (what npm start does)',
  },
  {
    key: 'signer',
    kind: 'list',
    default: [],
    help: 'PEM file of a pinned list signer certificate (end-entity only; a CA is refused); repeatable: pin the successor before a rotation',
  },
  {
    key: 'signer-ca',
    kind: 'list',
    default: [],
    help: 'PEM file of a CA certificate the list signer must be issued by; only with --signer-cn and/or --signer-subject; repeatable',
  },
  {
    key: 'signer-cn',
    kind: 'list',
    default: [],
    help: 'CN a --signer-ca-issued list signer must have (the ANS: alb.mssante.fr); repeatable',
  },
  {
    key: 'signer-subject',
    kind: 'list',
    default: [],
    help: 'full subject DN a --signer-ca-issued list signer must have (normalised compare); repeatable',
  },
  {
    key: 'max-list-age',
    kind: 'int',
    default: 30,
    min: 0,
    max: 3650,
    help: 'days: at start-up with no stored list, a list generated longer ago is refused (list_too_old) until a fresh one or check --accept; 0 disables (the embedded demo list is exempt unless set)',
  },
  { key: 'allow-unsigned', kind: 'bool', default: false, help: 'accept an unsigned list (demo and tests only)' },
  {
    key: 'ca-file',
    kind: 'string?',
    default: null,
    help: 'PEM CA bundle to verify the https list source (IGC-Sante); default: system roots',
  },
  { key: 'state-dir', kind: 'string', default: './var', help: 'keeps the last list that passed every check; created if missing' },
  {
    key: 'refresh',
    kind: 'seconds',
    default: 3600,
    min: 10,
    max: 7 * 86400,
    help: 'seconds between checks of the source for a new list (SIGHUP: at once)',
  },
  {
    key: 'max-shrink',
    kind: 'int',
    default: 10,
    min: 0,
    max: 100,
    help: 'refuse a new list that drops more than this percentage of the domains in force',
  },
  {
    key: 'max-rebind',
    kind: 'int',
    default: 10,
    min: 0,
    max: 100,
    help: 'refuse a new list that moves more than this percentage of the domains in force onto other certificates (list_rebind: a misused signing key looks like this); check --accept lets one list through',
  },
  {
    key: 'change-journal-size',
    kind: 'int',
    default: 100,
    min: 1,
    max: 10_000,
    help: 'list changes (domains added, removed, moved onto other certificates) kept in the state dir; GET /v1/whitelist/changes serves them',
  },
  {
    key: 'max-list-bytes',
    kind: 'int',
    default: 64 * 1024 * 1024,
    min: 1024,
    max: 1024 * 1024 * 1024,
    help: 'largest list accepted from the source, in bytes',
  },
  {
    key: 'max-list-entries',
    kind: 'int',
    default: 200_000,
    min: 1,
    max: 10_000_000,
    help: 'most Domaine entries accepted in one list',
  },
  {
    key: 'prepare-timeout',
    kind: 'seconds',
    default: 120,
    min: 5,
    max: 3600,
    help: 'longest signature check + parsing of one list (the real list takes ~1 s); past it the load fails',
  },
  {
    key: 'fetch-timeout',
    kind: 'seconds',
    default: 120,
    min: 1,
    max: 3600,
    help: 'total time allowed for one download of the list',
  },
  {
    key: 'policy-listen',
    kind: 'string?',
    default: '127.0.0.1:10040',
    help: 'Postfix policy protocol listener: host:port or unix:/path ("off" to disable)',
  },
  { key: 'milter-listen', kind: 'string?', default: null, help: 'Milter listener: host:port or unix:/path (default off)' },
  {
    key: 'socketmap-listen',
    kind: 'string?',
    default: null,
    help: 'Postfix socketmap tables for the sending side (mssante-domain, -tls-policy, -transport, -recipient-access): host:port or unix:/path (default off)',
  },
  {
    key: 'max-socketmap-request-bytes',
    kind: 'int',
    default: 100_000,
    min: 256,
    max: 1024 * 1024,
    help: 'largest socketmap request (Postfix sends 100 000 bytes at most)',
  },
  {
    key: 'tls-policy-value',
    kind: 'string',
    default: 'secure match=hostname:nexthop:dot-nexthop',
    help: 'answer of the mssante-tls-policy table for a listed domain (a Postfix TLS policy; see README "Outbound")',
  },
  {
    key: 'transport-value',
    kind: 'string',
    default: 'smtp-mssante:',
    help: 'answer of the mssante-transport table for a listed domain (a Postfix transport:nexthop)',
  },
  {
    key: 'http-listen',
    kind: 'string?',
    default: '127.0.0.1:9464',
    help: 'HTTP listener for /metrics /healthz /readyz /v1/... ("off" to disable)',
  },
  {
    key: 'socket-mode',
    kind: 'string',
    default: '0660',
    help: 'mode of unix: socket files, octal (0660: owner and group may connect)',
  },
  {
    key: 'socket-owner',
    kind: 'string?',
    default: null,
    help: "owner of unix: socket files, user name or uid (needs root; default: the daemon's user)",
  },
  {
    key: 'socket-group',
    kind: 'string?',
    default: null,
    help: "group of unix: socket files, e.g. postfix for a chrooted Postfix (default: the daemon's group)",
  },
  {
    key: 'allowed-peer-users',
    kind: 'list',
    default: [],
    help: 'local users (names or uids, comma-separated or repeated) whose connections loopback TCP listeners (policy, Milter, socketmap) accept; others are closed (default: anyone; packaged config: postfix)',
  },
  {
    key: 'http-allowed-host',
    kind: 'list',
    default: [],
    help: 'another Host header the HTTP listener answers (name or name:port; repeatable); loopback names and the listen address always are, anything else gets 421 (DNS rebinding)',
  },
  {
    key: 'max-connections',
    kind: 'int',
    default: 1000,
    min: 1,
    max: 100_000,
    help: 'open connections per listener; more are closed at once',
  },
  {
    key: 'idle-timeout',
    kind: 'seconds',
    default: 330,
    min: 1,
    max: 86400,
    help: 'close a client connection idle this long (Postfix keeps them 300 s)',
  },
  {
    key: 'milter-idle-timeout',
    kind: 'seconds',
    default: 3600,
    min: 1,
    max: 86400,
    help: 'close a Milter connection silent this long; Postfix sends nothing between MAIL FROM and the end of a message, which may take long',
  },
  {
    key: 'request-timeout',
    kind: 'seconds',
    default: 110,
    min: 1,
    max: 3600,
    help: 'longest time for one request to arrive in full (Postfix waits 100 s)',
  },
  {
    key: 'max-line-bytes',
    kind: 'int',
    default: 8192,
    min: 256,
    max: 1024 * 1024,
    help: 'longest policy request line (Postfix: 8 KiB strings)',
  },
  { key: 'max-request-bytes', kind: 'int', default: 65536, min: 1024, max: 16 * 1024 * 1024, help: 'largest policy request' },
  { key: 'max-attributes', kind: 'int', default: 100, min: 10, max: 10_000, help: 'most attributes in one policy request' },
  {
    key: 'max-milter-packet-bytes',
    kind: 'int',
    default: 65536 + 1024,
    min: 1024,
    max: 16 * 1024 * 1024,
    help: 'largest Milter packet',
  },
  {
    key: 'max-connection-bytes',
    kind: 'int',
    default: 131_072,
    min: 16_384,
    max: 64 * 1024 * 1024,
    help: 'most memory one connection may make the daemon keep (kept Milter macros, the packet or request being received); more closes it. Must hold one --max-milter-packet-bytes packet, one --max-request-bytes request and one --max-socketmap-request-bytes request',
  },
  {
    key: 'heap-watermark',
    kind: 'int',
    default: 70,
    min: 10,
    max: 95,
    help: 'percentage of the V8 heap limit above which new connections are refused (open ones keep being answered)',
  },
  {
    key: 'trusted-issuer-cn',
    live: true,
    kind: 'list',
    default: [],
    help: 'accept client certificates only from issuers with this CN (repeatable; default: any, the MTA verified the chain)',
  },
  {
    key: 'tls-profile',
    live: true,
    kind: 'string',
    default: 'off',
    choices: TLS_PROFILE_NAMES,
    help: 'refuse sessions outside a Referentiel #1 TLS profile: off | ref1-v1.6 | ref1-v1.7',
  },
  {
    key: 'log-level',
    live: true,
    kind: 'string',
    default: 'info',
    choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    help: 'log level (info: one trace line per decision)',
  },
  {
    key: 'log-format',
    kind: 'string',
    default: 'auto',
    choices: LOG_FORMATS,
    help: 'json: one JSON line per record; journal: each line prefixed with its syslog priority <N> for journald (journalctl -p); auto: journal when stdout is journald (JOURNAL_STREAM), else json',
  },
  {
    key: 'trace-file',
    kind: 'string?',
    default: null,
    help: 'write the decision trace (one JSON line per decision) to this file instead of stdout; SIGUSR1 reopens it (logrotate)',
  },
  {
    key: 'log-pseudonymize',
    kind: 'bool',
    default: false,
    help: 'replace addresses in traces by a keyed hash (key in <state-dir>/pseudonymize.key)',
  },
  {
    key: 'operator-rate',
    live: true,
    kind: 'int',
    default: 0,
    min: 0,
    max: 1_000_000,
    help: 'per sending operator (listed certificate), messages per second beyond which mail is deferred (451 4.7.1); 0: off (accounting only)',
  },
  {
    key: 'operator-burst',
    live: true,
    kind: 'int',
    default: 0,
    min: 0,
    max: 10_000_000,
    help: 'messages an operator may send at once after a quiet spell (token bucket size); 0: one second of --operator-rate',
  },
  {
    key: 'operator-rate-mode',
    live: true,
    kind: 'string',
    default: 'enforce',
    choices: ['enforce', 'observe'],
    help: 'enforce: defer the excess; observe: only log and count it (operator_transactions_total{result="throttled"})',
  },
  {
    key: 'operator-rate-exempt',
    live: true,
    kind: 'list',
    default: [],
    help: 'operator never throttled: certificate CN (also its DNs) or full DN; repeatable',
  },
  {
    key: 'store',
    kind: 'string?',
    default: null,
    help: 'redis:// or rediss:// URL of a Redis >= 6 or Valkey shared by the MX of one operator (operator buckets, certificate history, fleet registry); never needed to decide; no password in the URL (--store-password-file or env MSSANTE_POLICYD_STORE_PASSWORD); default: none, all in memory',
  },
  {
    key: 'store-ca-file',
    kind: 'string?',
    default: null,
    help: 'PEM CA bundle to verify a rediss:// store; default: system roots',
  },
  {
    key: 'store-password-file',
    kind: 'string?',
    default: null,
    help: 'file holding the store password (AUTH, or the ACL user named in the --store URL); or env MSSANTE_POLICYD_STORE_PASSWORD',
  },
  {
    key: 'store-timeout',
    kind: 'int',
    default: 50,
    min: 1,
    max: 10_000,
    help: 'milliseconds: deadline of every store call; past it the call counts in store_errors_total and the instance goes on alone',
  },
  {
    key: 'shutdown-grace',
    kind: 'seconds',
    default: 10,
    min: 0,
    max: 300,
    help: 'on SIGTERM, seconds to let answers in flight complete',
  },
] as const satisfies readonly Setting[];

export type SettingKey = (typeof SETTINGS)[number]['key'];

/** What each kind of setting is once parsed (coerce() below produces exactly these). */
interface KindValue {
  readonly string: string;
  readonly 'string?': string | null;
  readonly list: string[];
  readonly bool: boolean;
  readonly int: number;
  readonly seconds: number;
}
type SettingOf<K extends SettingKey> = Extract<(typeof SETTINGS)[number], { readonly key: K }>;
/** A setting's parsed value type, read off its SETTINGS row: its kind, narrowed to its choices when it has some. */
export type SettingValue<K extends SettingKey> =
  SettingOf<K> extends { readonly choices: readonly (infer C)[] } ? C : KindValue[SettingOf<K>['kind']];
/** Every setting by its key, each with its parsed type: the part of Config derived from SETTINGS. */
export type SettingValues = { readonly [K in SettingKey]: SettingValue<K> };
/** The keys of the settings whose parsed value is a V (e.g. the numeric ones, for a listener's limits). */
export type SettingKeyOf<V> = { [K in SettingKey]: SettingValue<K> extends V ? K : never }[SettingKey];

export interface Config {
  /** The first source (the embedded demo file for `demo`). */
  readonly whitelist: string;
  /** Every --whitelist source, in order (failover); whitelistSources[0] === whitelist. */
  readonly whitelistSources: readonly string[];
  readonly whitelistIsDemo: boolean;
  readonly signer: readonly string[];
  readonly signerCa: readonly string[];
  readonly signerCn: readonly string[];
  readonly signerSubject: readonly string[];
  readonly maxListAgeDays: number;
  readonly allowUnsigned: boolean;
  readonly caFile: string | null;
  readonly stateDir: string;
  readonly refreshSeconds: number;
  readonly maxShrinkPercent: number;
  readonly maxRebindPercent: number;
  readonly changeJournalSize: number;
  readonly maxListBytes: number;
  readonly maxListEntries: number;
  readonly fetchTimeoutSeconds: number;
  readonly prepareTimeoutSeconds: number;
  readonly policyListen: string | null;
  readonly milterListen: string | null;
  readonly httpListen: string | null;
  readonly socketmapListen: string | null;
  readonly maxSocketmapRequestBytes: number;
  readonly tlsPolicyValue: string;
  readonly transportValue: string;
  /** Mode, owner and group of unix: socket files (policy and Milter listeners). */
  readonly socketMode: number;
  readonly socketOwner: string | null;
  readonly socketGroup: string | null;
  readonly httpAllowedHosts: readonly string[];
  /** --allowed-peer-users: names (or uids) resolved at start-up; empty: any local user may connect. */
  readonly allowedPeerUsers: readonly string[];
  readonly maxConnections: number;
  readonly idleTimeoutSeconds: number;
  readonly milterIdleTimeoutSeconds: number;
  readonly requestTimeoutSeconds: number;
  readonly maxLineBytes: number;
  readonly maxRequestBytes: number;
  readonly maxAttributes: number;
  readonly maxMilterPacketBytes: number;
  readonly maxConnectionBytes: number;
  readonly heapWatermarkPercent: number;
  readonly trustedIssuerCns: readonly string[];
  readonly tlsProfile: TlsProfileName;
  readonly logLevel: string;
  readonly logFormat: LogFormat;
  readonly logPseudonymize: boolean;
  /** --trace-file: the decision trace goes there (reopened on SIGUSR1) instead of stdout. */
  readonly traceFile: string | null;
  readonly shutdownGraceSeconds: number;
  readonly operatorRate: number;
  readonly operatorBurst: number;
  readonly operatorRateMode: OperatorRateMode;
  readonly operatorRateExempt: readonly string[];
  /** --store: null without one (everything in memory). Its password is read at start-up by src/store/open.ts, never kept here. */
  readonly store: string | null;
  readonly storeCaFile: string | null;
  readonly storePasswordFile: string | null;
  readonly storeTimeoutMs: number;
  /** Where each value came from: flag, env, file or default. */
  readonly origins: Readonly<Record<SettingKey, 'flag' | 'env' | 'file' | 'default'>>;
  /** Every setting as parsed, by its SETTINGS key (typed from the table): what a frontend spec's keys read. */
  readonly settings: SettingValues;
}

export class ConfigError extends Error {}

export function envName(key: string): string {
  return `MSSANTE_POLICYD_${key.toUpperCase().replace(/-/g, '_')}`;
}

const BY_KEY = new Map<string, Setting>(SETTINGS.map((s) => [s.key, s]));

function coerce(setting: Setting, value: unknown, origin: string): unknown {
  const where = `${setting.key} (${origin})`;
  switch (setting.kind) {
    case 'bool':
      if (typeof value === 'boolean') return value;
      if (typeof value === 'string' && /^(1|true|yes|on)$/i.test(value)) return true;
      if (typeof value === 'string' && /^(0|false|no|off|)$/i.test(value)) return false;
      throw new ConfigError(`${where}: expected a boolean, got ${JSON.stringify(value)}`);
    case 'int':
    case 'seconds': {
      const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : NaN;
      if (!Number.isSafeInteger(n)) throw new ConfigError(`${where}: expected a whole number, got ${JSON.stringify(value)}`);
      if (setting.min !== undefined && n < setting.min)
        throw new ConfigError(`${where}: ${n} is below the minimum ${setting.min}`);
      if (setting.max !== undefined && n > setting.max)
        throw new ConfigError(`${where}: ${n} is above the maximum ${setting.max}`);
      return n;
    }
    case 'list': {
      const list = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',') : null;
      if (list === null || !list.every((v) => typeof v === 'string'))
        throw new ConfigError(`${where}: expected a list of strings`);
      return list.map((v) => v.trim()).filter((v) => v.length > 0);
    }
    case 'string':
    case 'string?': {
      if (value === null && setting.kind === 'string?') return null;
      if (typeof value !== 'string') throw new ConfigError(`${where}: expected a string, got ${JSON.stringify(value)}`);
      if (setting.choices !== undefined && !setting.choices.includes(value)) {
        throw new ConfigError(`${where}: ${JSON.stringify(value)} is not one of ${setting.choices.join(', ')}`);
      }
      if (setting.kind === 'string?' && (value === '' || value === 'off')) return null;
      return value;
    }
  }
}

/** Parsed command-line flags for serve: key → value (string for valued flags, true for booleans, string[] for repeatables). */
export type FlagValues = Map<string, string | boolean | string[]>;

/** The `--whitelist` value that names the embedded demo list: serving it must be asked for. */
export const DEMO_WHITELIST_NAME = 'demo';

export type SettingOrigin = 'flag' | 'env' | 'file' | 'default';

/** A subset of the settings, read and checked exactly as `serve` reads them. */
/** Plain functions (no `this`): `const get = settings.get` is how they are used. */
export interface ResolvedSettings {
  readonly get: <K extends SettingKey>(key: K) => SettingValue<K>;
  readonly origin: (key: SettingKey) => SettingOrigin;
}

/** node:util parseArgs options for these settings' flags (the same names and kinds as serve's). */
export function settingParseOptions(
  keys: readonly SettingKey[],
): Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const key of keys) {
    const s = BY_KEY.get(key)!;
    options[key] =
      s.kind === 'bool' ? { type: 'boolean' } : s.kind === 'list' ? { type: 'string', multiple: true } : { type: 'string' };
  }
  return options;
}

/** The flags of `keys` present in parseArgs' values. */
export function flagValuesOf(keys: readonly SettingKey[], values: Record<string, unknown>): FlagValues {
  const flags: FlagValues = new Map();
  for (const key of keys) {
    const v = values[key];
    if (typeof v === 'string' || typeof v === 'boolean' || Array.isArray(v)) flags.set(key, v as string | boolean | string[]);
  }
  return flags;
}

/**
 * Reads `keys` (flag > env > file > default) through the same coercion and limits for every
 * command (serve, check, query, export), so a bad value gets the same error everywhere. The
 * config file may hold any known setting; an unknown one is refused.
 */
export function resolveSettings(
  keys: readonly SettingKey[],
  flags: FlagValues,
  env: NodeJS.ProcessEnv,
  configFile: string | null,
): ResolvedSettings {
  let file: Record<string, unknown> = {};
  if (configFile !== null) {
    let text: string;
    try {
      text = readFileSync(configFile, 'utf8');
    } catch (error) {
      throw new ConfigError(`cannot read config file ${configFile}: ${(error as Error).message}`);
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
      file = parsed as Record<string, unknown>;
    } catch (error) {
      throw new ConfigError(`config file ${configFile}: ${(error as Error).message}`);
    }
    for (const key of Object.keys(file)) {
      if (!BY_KEY.has(key)) throw new ConfigError(`config file ${configFile}: unknown setting ${JSON.stringify(key)}`);
    }
  }
  const values = new Map<string, unknown>();
  const origins = new Map<string, SettingOrigin>();
  for (const key of keys) {
    const setting = BY_KEY.get(key)!;
    const e = env[envName(setting.key)];
    if (flags.has(setting.key)) {
      values.set(setting.key, coerce(setting, flags.get(setting.key), `--${setting.key}`));
      origins.set(setting.key, 'flag');
    } else if (e !== undefined) {
      values.set(setting.key, coerce(setting, e, envName(setting.key)));
      origins.set(setting.key, 'env');
    } else if (Object.hasOwn(file, setting.key)) {
      values.set(setting.key, coerce(setting, file[setting.key], `config file`));
      origins.set(setting.key, 'file');
    } else {
      values.set(setting.key, setting.default);
      origins.set(setting.key, 'default');
    }
  }
  return {
    get: <K extends SettingKey>(key: K): SettingValue<K> => {
      if (!values.has(key)) throw new Error(`setting ${key} was not resolved`);
      // The one place a value meets its type: coerce() produced it from this key's kind and choices.
      return values.get(key) as SettingValue<K>;
    },
    origin: (key) => origins.get(key) ?? 'default',
  };
}

/**
 * Resolves the effective configuration. `flags` come from the command line (already split),
 * `env` from the process, the file from `--config` (JSON object keyed by flag names).
 */
export function resolveConfig(flags: FlagValues, env: NodeJS.ProcessEnv, configFile: string | null): Config {
  const settings = resolveSettings(
    SETTINGS.map((s) => s.key),
    flags,
    env,
    configFile,
  );
  const origins: Record<string, SettingOrigin> = {};
  for (const s of SETTINGS) origins[s.key] = settings.origin(s.key);
  const get = settings.get;

  const list = resolveListSettings(get, origins);
  checkServingSettings(get);
  checkAccessSettings(get);
  return Object.freeze({
    ...list,
    caFile: get('ca-file'),
    stateDir: resolve(get('state-dir')),
    refreshSeconds: get('refresh'),
    maxShrinkPercent: get('max-shrink'),
    maxRebindPercent: get('max-rebind'),
    changeJournalSize: get('change-journal-size'),
    maxListBytes: get('max-list-bytes'),
    maxListEntries: get('max-list-entries'),
    fetchTimeoutSeconds: get('fetch-timeout'),
    prepareTimeoutSeconds: get('prepare-timeout'),
    policyListen: get('policy-listen'),
    milterListen: get('milter-listen'),
    httpListen: get('http-listen'),
    socketmapListen: get('socketmap-listen'),
    maxSocketmapRequestBytes: get('max-socketmap-request-bytes'),
    tlsPolicyValue: get('tls-policy-value'),
    transportValue: get('transport-value'),
    socketMode: parseInt(get('socket-mode'), 8),
    socketOwner: get('socket-owner'),
    socketGroup: get('socket-group'),
    httpAllowedHosts: get('http-allowed-host'),
    allowedPeerUsers: get('allowed-peer-users'),
    maxConnections: get('max-connections'),
    idleTimeoutSeconds: get('idle-timeout'),
    milterIdleTimeoutSeconds: get('milter-idle-timeout'),
    requestTimeoutSeconds: get('request-timeout'),
    maxLineBytes: get('max-line-bytes'),
    maxRequestBytes: get('max-request-bytes'),
    maxAttributes: get('max-attributes'),
    maxMilterPacketBytes: get('max-milter-packet-bytes'),
    maxConnectionBytes: get('max-connection-bytes'),
    heapWatermarkPercent: get('heap-watermark'),
    trustedIssuerCns: get('trusted-issuer-cn'),
    tlsProfile: get('tls-profile'),
    logLevel: get('log-level'),
    logFormat: get('log-format'),
    logPseudonymize: get('log-pseudonymize'),
    traceFile: nullableResolve(get('trace-file')),
    shutdownGraceSeconds: get('shutdown-grace'),
    operatorRate: get('operator-rate'),
    operatorBurst: get('operator-burst'),
    operatorRateMode: get('operator-rate-mode'),
    operatorRateExempt: get('operator-rate-exempt'),
    ...resolveStoreSettings(get),
    origins: origins as Config['origins'],
    settings: settingValues(get),
  });
}

/** Every setting by its key, as parsed (each value typed by its SETTINGS row through `get`). */
function settingValues(get: ResolvedSettings['get']): SettingValues {
  const out: Partial<Record<SettingKey, SettingValues[SettingKey]>> = {};
  for (const { key } of SETTINGS) out[key] = get(key);
  // Complete: the loop above sets every key of SETTINGS.
  return Object.freeze(out) as SettingValues;
}

type ListSettings = Pick<
  Config,
  | 'whitelist'
  | 'whitelistSources'
  | 'whitelistIsDemo'
  | 'signer'
  | 'signerCa'
  | 'signerCn'
  | 'signerSubject'
  | 'maxListAgeDays'
  | 'allowUnsigned'
>;

/** The list, who must have signed it and how old it may be: the checks between these settings. */
function resolveListSettings(get: ResolvedSettings['get'], origins: Record<string, SettingOrigin>): ListSettings {
  const whitelistSources = get('whitelist');
  const whitelistSetting = whitelistSources[0] ?? null;
  if (whitelistSetting === null) {
    // A config file that forgot `whitelist` must not serve the demo list: every real mail would get 550.
    throw new ConfigError(
      `no whitelist given (--whitelist, ${envName('whitelist')} or "whitelist" in the config file): name the list's file or https:// URL, or "${DEMO_WHITELIST_NAME}" for the embedded demo list`,
    );
  }
  const whitelistIsDemo = whitelistSetting === DEMO_WHITELIST_NAME;
  if (whitelistSources.length > 1 && whitelistSources.includes(DEMO_WHITELIST_NAME))
    throw new ConfigError(`--whitelist ${DEMO_WHITELIST_NAME} is the embedded demo list: it cannot be one of several sources`);
  let signer = get('signer');
  const signerCa = get('signer-ca');
  const signerCn = get('signer-cn');
  const signerSubject = get('signer-subject');
  const allowUnsigned = get('allow-unsigned');
  const trustProblem = signerTrustProblem({ signer, signerCa, signerCn, signerSubject });
  if (trustProblem !== null) throw new ConfigError(trustProblem);
  const trusted = signer.length > 0 || signerCa.length > 0;
  if (trusted && allowUnsigned) {
    // With both, a list whose Signature element was stripped would be taken: the signer would protect nothing.
    throw new ConfigError(
      '--signer/--signer-ca and --allow-unsigned together would accept a list stripped of its signature: choose one',
    );
  }
  // The demo list comes with its demo signer, so `npm start` verifies a real signature.
  if (whitelistIsDemo && !trusted && !allowUnsigned) signer = [DEMO_SIGNER];
  if (signer.length === 0 && signerCa.length === 0 && !allowUnsigned) {
    throw new ConfigError(
      'no list signer given: pin it with --signer PEM, or trust its CA with --signer-ca PEM --signer-cn NAME; or pass --allow-unsigned (demo and tests only)',
    );
  }
  // The embedded demo list is a fixed file, not a download anyone could replay: its age is no signal.
  const whitelist = whitelistIsDemo ? DEMO_WHITELIST : whitelistSetting;
  const isDemoFile = whitelistIsDemo || resolve(whitelist) === DEMO_WHITELIST;
  const maxListAgeDays = isDemoFile && origins['max-list-age'] === 'default' ? 0 : get('max-list-age');
  return {
    whitelist,
    whitelistSources: [whitelist, ...whitelistSources.slice(1)],
    whitelistIsDemo,
    signer,
    signerCa,
    signerCn,
    signerSubject,
    maxListAgeDays,
    allowUnsigned,
  };
}

/** The MTA side: something listens, the answers' texts are one line, a connection's budget holds one request of each frontend. */
function checkServingSettings(get: ResolvedSettings['get']): void {
  const policyListen = get('policy-listen');
  const milterListen = get('milter-listen');
  const socketmapListen = get('socketmap-listen');
  if (policyListen === null && milterListen === null && socketmapListen === null) {
    throw new ConfigError('none of --policy-listen, --milter-listen, --socketmap-listen is set: nothing would answer the MTA');
  }
  for (const key of ['tls-policy-value', 'transport-value'] as const) {
    // eslint-disable-next-line no-control-regex
    if (get(key).trim() === '' || /[\x00-\x1f\x7f]/.test(get(key)))
      throw new ConfigError(`--${key}: must be non-empty text on one line`);
  }
  const maxConnectionBytes = get('max-connection-bytes');
  if (
    get('max-milter-packet-bytes') + 4 > maxConnectionBytes ||
    get('max-request-bytes') + get('max-line-bytes') > maxConnectionBytes
  ) {
    throw new ConfigError(
      '--max-connection-bytes must hold one --max-milter-packet-bytes packet (+4) and one --max-request-bytes request (+ --max-line-bytes)',
    );
  }
  // A socketmap request being received holds its length digits and colon (11 bytes at most) besides its payload.
  if (get('max-socketmap-request-bytes') + 11 > maxConnectionBytes) {
    throw new ConfigError('--max-connection-bytes must hold one --max-socketmap-request-bytes request (+11)');
  }
}

/** Who may do what: operator rate exemptions, socket file mode, HTTP Host names. */
function checkAccessSettings(get: ResolvedSettings['get']): void {
  try {
    validateExemptions(get('operator-rate-exempt'));
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  const socketModeText = get('socket-mode');
  if (!/^0?[0-7]{3}$/.test(socketModeText)) {
    throw new ConfigError(
      `--socket-mode: ${JSON.stringify(socketModeText)} is not an octal mode like 0660 (no setuid, setgid or sticky bit)`,
    );
  }
  for (const host of get('http-allowed-host')) {
    if (splitHostHeader(host) === null)
      throw new ConfigError(`--http-allowed-host: ${JSON.stringify(host)} is not a host name or address, with an optional :port`);
  }
}

/** The store's URL is checked now (a typo or a password in it is a start-up error, not a silent island). */
function resolveStoreSettings(
  get: ResolvedSettings['get'],
): Pick<Config, 'store' | 'storeCaFile' | 'storePasswordFile' | 'storeTimeoutMs'> {
  const store = get('store');
  if (store !== null) {
    try {
      parseStoreUrl(store);
    } catch (error) {
      throw new ConfigError((error as Error).message);
    }
  }
  return {
    store,
    storeCaFile: nullableResolve(get('store-ca-file')),
    storePasswordFile: nullableResolve(get('store-password-file')),
    storeTimeoutMs: get('store-timeout'),
  };
}

function nullableResolve(path: string | null): string | null {
  return path === null ? null : resolve(path);
}

/** `serve --help` text, generated from the table so it cannot drift. */
export function settingsHelp(): string {
  return (SETTINGS as readonly Setting[])
    .map((s) => {
      const flag = s.kind === 'bool' ? `--${s.key}` : `--${s.key} ${s.kind === 'list' ? 'VALUE (repeatable)' : 'VALUE'}`;
      const def =
        s.default === null || (Array.isArray(s.default) && s.default.length === 0)
          ? ''
          : ` [default: ${JSON.stringify(s.default)}]`;
      const live = s.live === true ? ' [live: SIGHUP applies it]' : '';
      return `  ${flag}\n      ${s.help}${def}${live}\n      env ${envName(s.key)}`;
    })
    .join('\n');
}
