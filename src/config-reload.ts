/**
 * SIGHUP re-reads the configuration (flags and environment as at start, the --config file as it is
 * now). Settings marked `live` in SETTINGS apply to the next decision; a changed setting that is not
 * live is logged "needs a restart" and the running value is kept; an unreadable or invalid file is
 * logged and counted, and every running setting stays.
 */
import type { Logger } from 'pino';
import {
  ConfigError,
  SETTINGS,
  resolveConfig,
  resolveSettings,
  type Config,
  type FlagValues,
  type SettingKey,
} from './config.js';
import type { Metrics } from './observe/metrics.js';

/** What `serve` was started from: re-read the same way at each SIGHUP. */
export interface ConfigSources {
  readonly flags: FlagValues;
  readonly env: NodeJS.ProcessEnv;
  readonly configFile: string | null;
}

export const LIVE_SETTINGS: ReadonlySet<SettingKey> = new Set(
  SETTINGS.filter((s) => (s as { live?: boolean }).live === true).map((s) => s.key),
);

const ALL_KEYS: readonly SettingKey[] = SETTINGS.map((s) => s.key);

/** Each setting's value as read (before the typed Config is derived): what an operator wrote. */
type RawValues = ReadonlyMap<SettingKey, string>;

function rawValues(sources: ConfigSources): RawValues {
  const settings = resolveSettings(ALL_KEYS, sources.flags, sources.env, sources.configFile);
  return new Map(ALL_KEYS.map((key) => [key, JSON.stringify(settings.get(key))]));
}

export type ReloadOutcome =
  | { readonly kind: 'failed'; readonly error: string }
  | {
      readonly kind: 'applied';
      readonly config: Config;
      readonly live: readonly SettingKey[];
      readonly needsRestart: readonly SettingKey[];
    };

/**
 * Keeps the settings in force. `reload()` re-reads the sources and returns the Config to run with:
 * the new values of live settings, the running values of the others.
 */
export class ConfigReloader {
  private running: Config;
  private raw: RawValues;

  constructor(
    private readonly sources: ConfigSources,
    initial: Config,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    this.running = initial;
    this.raw = rawValues(sources);
    metrics.configLastReloadTimestamp.set(Date.now() / 1000);
  }

  current(): Config {
    return this.running;
  }

  reload(): ReloadOutcome {
    let next: Config;
    let raw: RawValues;
    try {
      raw = rawValues(this.sources);
      next = resolveConfig(this.sources.flags, this.sources.env, this.sources.configFile);
    } catch (error) {
      const message = error instanceof ConfigError ? error.message : String((error as Error).message ?? error);
      this.metrics.configReloadFailures.inc();
      this.logger.error(
        { event: 'config_reload_failed', config_file: this.sources.configFile, err: message },
        'SIGHUP: the configuration cannot be read; the running settings stay',
      );
      return { kind: 'failed', error: message };
    }
    const changed = ALL_KEYS.filter((key) => raw.get(key) !== this.raw.get(key));
    const live = changed.filter((key) => LIVE_SETTINGS.has(key));
    const needsRestart = changed.filter((key) => !LIVE_SETTINGS.has(key));
    // The typed values of live settings come from the new Config; everything else stays as it runs.
    this.running = Object.freeze({ ...this.running, ...liveFields(next), origins: next.origins });
    this.raw = new Map(ALL_KEYS.map((key) => [key, (LIVE_SETTINGS.has(key) ? raw : this.raw).get(key)!]));
    this.metrics.configLastReloadTimestamp.set(Date.now() / 1000);
    if (needsRestart.length > 0) {
      this.logger.warn(
        { event: 'config_needs_restart', settings: needsRestart },
        'SIGHUP: these settings changed but need a restart; their running values are kept',
      );
    }
    this.logger.info(
      { event: 'config_reloaded', config_file: this.sources.configFile, changed: live },
      'SIGHUP: configuration re-read',
    );
    return { kind: 'applied', config: this.running, live, needsRestart };
  }
}

/** The Config fields of the live settings: the one place that maps them (a test checks it covers LIVE_SETTINGS). */
export const LIVE_FIELDS = {
  'trusted-issuer-cn': 'trustedIssuerCns',
  'tls-profile': 'tlsProfile',
  'log-level': 'logLevel',
  'operator-rate': 'operatorRate',
  'operator-burst': 'operatorBurst',
  'operator-rate-mode': 'operatorRateMode',
  'operator-rate-exempt': 'operatorRateExempt',
} as const satisfies Partial<Record<SettingKey, keyof Config>>;

function liveFields(config: Config): Partial<Config> {
  const fields: Record<string, unknown> = {};
  for (const field of Object.values(LIVE_FIELDS)) fields[field] = config[field];
  return fields;
}
