/**
 * The socketmap tables as static files for sites that prefer `postmap` (`mssante-policyd export`):
 * the same answers as the live tables, from a list that passed the same checks as `serve`'s.
 *
 * - mssante-domain, mssante-tls-policy, mssante-transport: `key value` lines for postmap (hash:,
 *   lmdb:, cdb:), one line per listed domain in A-label form, plus its U-label form when it differs.
 *   No `.parent` keys are written, so no sub-domain is implied.
 * - mssante-recipient-access.regexp: a regexp: table. An indexed table cannot say "anything else":
 *   Postfix would look up parent domains and `user@` in it, and a listed parent would then let an
 *   unlisted sub-domain through. A regexp table is matched against the whole recipient address only
 *   (access(5), "REGEXP TABLES"): listed domains → DUNNO, then everything else → REJECT.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { domainToUnicode } from 'node:url';
import type { WhitelistIndex } from '../../whitelist/whitelist-index.js';
import { RECIPIENT_REJECT_VALUE, domainCns, type SocketmapValues } from './maps.js';

export const EXPORT_FILES = [
  'mssante-domain',
  'mssante-tls-policy',
  'mssante-transport',
  'mssante-recipient-access.regexp',
] as const;
export type ExportFile = (typeof EXPORT_FILES)[number];

/** Domains per regexp line: one alternation per line keeps lines short and lookups to a few dozen regexec(). */
const DOMAINS_PER_REGEXP = 100;

/** File name → content. Pure: same index and values, same bytes. */
export function postfixTables(index: WhitelistIndex, values: SocketmapValues, header: string): Record<ExportFile, string> {
  const domains = [...index.domains()].sort();
  const forms = (d: string): string[] => {
    const unicode = domainToUnicode(d);
    return unicode !== '' && unicode !== d ? [d, unicode] : [d];
  };
  const lines = (value: (d: string) => string): string =>
    domains.flatMap((d) => forms(d).map((f) => `${f} ${value(d)}\n`)).join('');
  const comment = header
    .split('\n')
    .map((l) => `# ${l}\n`)
    .join('');
  const allForms = domains.flatMap(forms);
  const regexp: string[] = [];
  for (let i = 0; i < allForms.length; i += DOMAINS_PER_REGEXP) {
    const group = allForms
      .slice(i, i + DOMAINS_PER_REGEXP)
      .map(escapeRegexp)
      .join('|');
    regexp.push(`/^[^@]*@(${group})\\.?$/ DUNNO\n`);
  }
  regexp.push(`/^/ ${RECIPIENT_REJECT_VALUE}\n`);
  return {
    'mssante-domain': comment + lines((d) => domainCns(index, d).join(',')),
    'mssante-tls-policy': comment + lines(() => values.tlsPolicy),
    'mssante-transport': comment + lines(() => values.transport),
    'mssante-recipient-access.regexp': comment + regexp.join(''),
  };
}

/** POSIX ERE metacharacters; a domain holds letters, digits, `-` and `.` (U-labels: letters of any script). */
function escapeRegexp(s: string): string {
  return s.replace(/[.[\]()*+?{}|^$\\/]/g, '\\$&');
}

/**
 * Writes every file beside its final name, fsyncs it, then renames it into place: Postfix (or postmap)
 * never reads a half-written file. Each file is replaced atomically; the set is written in one go.
 */
export function writeTablesAtomically(dir: string, files: Readonly<Record<string, string>>): string[] {
  mkdirSync(dir, { recursive: true });
  const suffix = `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const temps: Array<[string, string]> = [];
  try {
    for (const [name, content] of Object.entries(files)) {
      const temp = join(dir, `.${name}${suffix}`);
      const fd = openSync(temp, 'wx', 0o644);
      temps.push([temp, join(dir, name)]);
      try {
        writeSync(fd, content);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
    for (const [temp, final] of temps) renameSync(temp, final);
  } catch (error) {
    for (const [temp] of temps) rmSync(temp, { force: true });
    throw error;
  }
  const dirFd = openSync(dir, 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
  return temps.map(([, final]) => final);
}
