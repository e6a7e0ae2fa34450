/** The real ANS list, read by path from ../shared beside the checkout (never copied into the project). */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { TestContext } from 'node:test';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
export const REAL_DIR = resolve(REPO_ROOT, '..', 'shared', 'fixtures', 'real');
export const REAL_LIST = join(REAL_DIR, 'listeblanchemssante-2025-02-28.xml');
export const REAL_SIGNER = join(REAL_DIR, 'signer-2023-2026.pem');

/** The real list's path, or null after skipping (a failure under CI=true, where ../shared must be present). */
export function realListOrSkip(t: TestContext): { list: string; signer: string } | null {
  if (existsSync(REAL_LIST) && existsSync(REAL_SIGNER)) return { list: REAL_LIST, signer: REAL_SIGNER };
  const why = `the real ANS list is not at ${REAL_LIST} (../shared beside the checkout)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  t.skip(why);
  return null;
}
