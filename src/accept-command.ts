/**
 * The command that accepts a list the guard refused (`check FILE … --accept`), as check and the
 * daemon's log print it. It must work as printed: check refuses to run without the list-trust
 * settings (exit 2), so the command carries those in force, the config file when one is known, and
 * the daemon's state directory; each word is shell-quoted.
 */
import { resolve } from 'node:path';
import { SETTINGS } from './config.js';
import type { SignerTrustConfig } from './whitelist/signature.js';

export interface AcceptCommandInput {
  /** The list to accept: the file checked, or the daemon's copy of the refused list. */
  readonly file: string;
  readonly configFile: string | null;
  readonly trust: SignerTrustConfig;
  readonly allowUnsigned: boolean;
  readonly maxListEntries: number;
  /** The daemon's state directory; null when unknown (the command then says DIR, to be filled in). */
  readonly stateDir: string | null;
}

const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** One POSIX shell word: as is when it holds nothing the shell reads, else single-quoted. */
export function shellWord(text: string): string {
  return SAFE_WORD.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

const DEFAULT_MAX_LIST_ENTRIES = SETTINGS.find((s) => s.key === 'max-list-entries')?.default;

export function acceptCommand(input: AcceptCommandInput): string {
  // Absolute paths: the operator runs it from another directory than the daemon's.
  const words = ['mssante-policyd', 'check', resolve(input.file)];
  if (input.configFile !== null) words.push('--config', resolve(input.configFile));
  for (const path of input.trust.signer) words.push('--signer', resolve(path));
  for (const path of input.trust.signerCa) words.push('--signer-ca', resolve(path));
  for (const cn of input.trust.signerCn) words.push('--signer-cn', cn);
  for (const dn of input.trust.signerSubject) words.push('--signer-subject', dn);
  if (input.allowUnsigned) words.push('--allow-unsigned');
  // A list above the default limit would be refused by a check that does not know the raised one.
  if (input.maxListEntries !== DEFAULT_MAX_LIST_ENTRIES) words.push('--max-list-entries', String(input.maxListEntries));
  const quoted = words.map(shellWord);
  quoted.push('--state-dir', input.stateDir === null ? 'DIR' : shellWord(resolve(input.stateDir)), '--accept');
  return quoted.join(' ');
}
