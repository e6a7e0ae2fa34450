/**
 * The real ANS list, read by path from ../shared beside the checkout (never copied into the project).
 * The bench runs plain JavaScript and cannot import test/support/fixtures.ts: keep both in step.
 */
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(fileURLToPath(import.meta.url), '..', '..');
export const REAL_DIR = resolve(REPO, '..', 'shared', 'fixtures', 'real');
export const REAL_LIST = join(REAL_DIR, 'listeblanchemssante-2025-02-28.xml');
export const REAL_SIGNER = join(REAL_DIR, 'signer-2023-2026.pem');
