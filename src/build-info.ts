/**
 * Which code is running: the package version (read once, from the package.json beside src/ or dist/),
 * Node's version and when this process started. `--version` prints what is installed; these say what
 * answers (after an upgrade without a restart, the old version keeps answering).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from './config.js';

let cachedVersion: string | null = null;

/** The installed package's version; `unknown` when package.json cannot be read. */
export function packageVersion(): string {
  if (cachedVersion !== null) return cachedVersion;
  try {
    cachedVersion = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    cachedVersion = 'unknown';
  }
  return cachedVersion;
}

export interface BuildIdentity {
  readonly version: string;
  readonly node: string;
  /** ISO 8601: when this process started (not when the daemon became ready). */
  readonly startedAt: string;
}

export function buildIdentity(): BuildIdentity {
  const startedAt = new Date(Math.round(performance.timeOrigin)).toISOString();
  return { version: packageVersion(), node: process.versions.node, startedAt };
}
