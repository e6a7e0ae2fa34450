/** The real ANS list, read by path from ../shared beside the checkout (never copied into the project). */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { TestContext } from 'node:test';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
export const REAL_DIR = resolve(REPO_ROOT, '..', 'shared', 'fixtures', 'real');
export const REAL_LIST = join(REAL_DIR, 'listeblanchemssante-2025-02-28.xml');
export const REAL_SIGNER = join(REAL_DIR, 'signer-2023-2026.pem');
/** The CA that issued the real signer (and every operator's TLS certificate). */
export const IGC_ORGANISATIONS_CA = resolve(
  REPO_ROOT,
  '..',
  'shared',
  'fixtures',
  'igc-sante',
  'ac-igc-sante-elementaire-organisations.pem',
);

/** The real list's path, or null after skipping (a failure under CI=true, where ../shared must be present). */
export function realListOrSkip(t: TestContext): { list: string; signer: string; ca: string } | null {
  if (existsSync(REAL_LIST) && existsSync(REAL_SIGNER) && existsSync(IGC_ORGANISATIONS_CA))
    return { list: REAL_LIST, signer: REAL_SIGNER, ca: IGC_ORGANISATIONS_CA };
  const why = `the real ANS list is not at ${REAL_LIST} (../shared beside the checkout)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  t.skip(why);
  return null;
}
