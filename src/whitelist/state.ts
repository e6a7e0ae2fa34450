/**
 * The state directory: the last list that passed every check, kept so that a restart with the
 * source unreachable still serves it. Written atomically (temp file, fsync, rename, fsync dir):
 * a crash mid-write leaves the previous copy whole.
 */
import { mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { SignerInfo, SignerTrustConfig } from './signature.js';
import type { SourceValidators } from './source.js';

export const STATE_LIST_FILE = 'whitelist.xml';
export const STATE_META_FILE = 'whitelist.json';
export const ACCEPT_FILE = 'accept-sha256';
/** The last list the guard refused (verified, never read back by the daemon): what `check --accept` reads. */
export const REFUSED_LIST_FILE = 'refused-whitelist.xml';

export interface StateMeta {
  readonly source: string;
  readonly sha256: string;
  readonly generatedAt: string;
  readonly verifiedAt: string;
  readonly validators: SourceValidators | null;
  /** The signer that verified this copy, and a digest of the trust configuration it was verified under. */
  readonly signer?: SignerInfo | null;
  readonly trustKey?: string;
}

/** Changes whenever the trust configuration (signer and CA files, constraints) changes: a stored copy is re-verified then. */
export function trustKey(trust: SignerTrustConfig): string {
  const hash = createHash('sha256');
  const files = (flag: string, paths: readonly string[]): void => {
    for (const path of paths) {
      hash.update(flag).update('\0').update(path).update('\0');
      try {
        hash.update(readFileSync(path));
      } catch {
        hash.update('unreadable');
      }
    }
  };
  files('signer', trust.signer);
  files('signer-ca', trust.signerCa);
  for (const cn of trust.signerCn) hash.update('signer-cn\0').update(cn).update('\0');
  for (const dn of trust.signerSubject) hash.update('signer-subject\0').update(dn).update('\0');
  return hash.digest('hex');
}

export function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o750 });
}

/**
 * Temp file, write, fsync, rename, fsync the directory. Asynchronous: the writes and fsyncs run on
 * libuv's thread pool, so a slow disk never makes answers wait.
 */
export async function writeFileAtomic(dir: string, name: string, data: Uint8Array | string, mode = 0o640): Promise<void> {
  const path = join(dir, name);
  const temp = join(dir, `.${name}.${process.pid}.tmp`);
  try {
    const file = await open(temp, 'w', mode);
    try {
      await file.writeFile(data);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, path);
  } catch (error) {
    // A disk-full write must not leave its partial copy behind, keeping the disk full.
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  const directory = await open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/** Temp files of processes that died mid-write (kill -9, power loss): never renamed, never read, only in the way. */
export function removeStaleTemps(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^\..+\.(\d+)\.tmp$/.exec(name);
    if (m === null || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
    try {
      unlinkSync(join(dir, name));
    } catch {
      // best effort
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** List first, then its metadata: a crash between the two leaves a list whose meta says another sha (detected on load). */
export async function persistList(dir: string, bytes: Uint8Array, meta: StateMeta): Promise<void> {
  ensureStateDir(dir);
  removeStaleTemps(dir);
  await writeFileAtomic(dir, STATE_LIST_FILE, bytes);
  await writeFileAtomic(dir, STATE_META_FILE, `${JSON.stringify(meta, null, 2)}\n`);
}

export type StoredList = { readonly bytes: Buffer; readonly meta: StateMeta | null };

/** The stored list, or null when there is none. Throws on an unreadable directory or file (the caller logs it). */
export function readStoredList(dir: string): StoredList | null {
  let bytes: Buffer;
  try {
    bytes = readFileSync(join(dir, STATE_LIST_FILE));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  let meta: StateMeta | null = null;
  try {
    const parsed = JSON.parse(readFileSync(join(dir, STATE_META_FILE), 'utf8')) as StateMeta;
    if (typeof parsed.sha256 === 'string' && typeof parsed.source === 'string') meta = parsed;
  } catch {
    meta = null;
  }
  return { bytes, meta };
}

/** sha256 values of lists the operator forced through the guard (`check --accept`). Throws unless the file is readable or absent. */
export function readAcceptedHashes(dir: string): Set<string> {
  let text: string;
  try {
    text = readFileSync(join(dir, ACCEPT_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw error;
  }
  return new Set(
    text
      .split('\n')
      .map((l) => l.trim().toLowerCase())
      .filter((l) => /^[0-9a-f]{64}$/.test(l)),
  );
}

export async function addAcceptedHash(dir: string, sha256: string): Promise<void> {
  ensureStateDir(dir);
  const hashes = readAcceptedHashes(dir);
  hashes.add(sha256.toLowerCase());
  // World-readable: root writes it (check --accept) for a daemon that runs as another user; hashes are no secret.
  await writeFileAtomic(dir, ACCEPT_FILE, `${[...hashes].slice(-20).join('\n')}\n`, 0o644);
}
