/**
 * Every frontend the daemon can start, one line each (a spec from its folder: src/frontends/spec.ts).
 * The daemon starts those whose listen setting is on, all the same way. This file also ties each
 * spec's settings to SETTINGS (config.ts): at compile time each key names a setting of the right
 * type, and `frontendValues` reads them from the Config — the defaults stay in SETTINGS only.
 */
import type { SettingKeyOf, SettingValues } from './config.js';
import type { FrontendSpec, FrontendValues } from './frontends/spec.js';
import { MILTER_FRONTEND } from './frontends/milter/frontend.js';
import { POLICY_FRONTEND } from './frontends/policy/frontend.js';
import { SOCKETMAP_FRONTEND } from './frontends/socketmap/frontend.js';

/** What a spec's settings must name: its listen address, two durations, integer limits, string values. */
interface OwnedSettings {
  readonly listen: SettingKeyOf<string | null>;
  readonly idleTimeout: SettingKeyOf<number>;
  readonly requestTimeout: SettingKeyOf<number>;
  readonly limits: Readonly<Record<string, SettingKeyOf<number>>>;
  readonly texts: Readonly<Record<string, SettingKeyOf<string>>>;
}

const DECLARED = [POLICY_FRONTEND, MILTER_FRONTEND, SOCKETMAP_FRONTEND] as const satisfies ReadonlyArray<{
  readonly settings: OwnedSettings;
}>;

/** The frontends, in start order. */
export const FRONTENDS: readonly FrontendSpec[] = DECLARED;

/** The names a systemd socket may carry (FileDescriptorName=): every frontend, and http. */
export const ACTIVATION_NAMES: readonly string[] = [...DECLARED.map((spec) => spec.name), 'http'];

/** A setting the compile-time check above guarantees is there, read by its key. */
function read(settings: SettingValues, key: string, type: 'number' | 'string'): number | string {
  const value: unknown = (settings as Readonly<Record<string, unknown>>)[key];
  if (typeof value !== type) throw new Error(`frontend setting ${key} is not a ${type} setting`);
  return value as number | string;
}

/** A frontend's listen address (null: off). */
export function frontendListen(spec: FrontendSpec, settings: SettingValues): string | null {
  const value: unknown = (settings as Readonly<Record<string, unknown>>)[spec.settings.listen];
  if (value !== null && typeof value !== 'string') throw new Error(`${spec.settings.listen} is not a listen setting`);
  return value;
}

/** A frontend's settings' values, in the units the skeleton and codecs take. */
export function frontendValues(spec: FrontendSpec, settings: SettingValues): FrontendValues {
  const numbers = (keys: Readonly<Record<string, string>>): Record<string, number> =>
    Object.fromEntries(Object.entries(keys).map(([option, key]) => [option, Number(read(settings, key, 'number'))]));
  const texts = Object.fromEntries(
    Object.entries(spec.settings.texts).map(([option, key]) => [option, String(read(settings, key, 'string'))]),
  );
  return {
    idleTimeoutMs: Number(read(settings, spec.settings.idleTimeout, 'number')) * 1000,
    requestTimeoutMs: Number(read(settings, spec.settings.requestTimeout, 'number')) * 1000,
    limits: numbers(spec.settings.limits),
    texts,
    maxConnectionBytes: settings['max-connection-bytes'],
  };
}
