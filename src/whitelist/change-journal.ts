/**
 * The change journal: the last --change-journal-size list changes, newest first, kept in the state
 * dir so that "since when is this domain bound to that certificate?" survives restarts.
 *
 * The file is input like the network: read back, it is checked (size, checksum, every field's form)
 * and refused whole — set aside, logged, the journal starts empty — when anything is off. It never
 * takes part in a trust decision: the guard compares the lists themselves; the journal only tells.
 */
import { readFileSync, renameSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { MAX_DN_LENGTH } from '../trust/dn.js';
import { normaliseDomain } from '../trust/domain.js';
import type { ChangeKind, ListChange, ListRef, Rebinding } from './changes.js';
import { isValidGenerationDate } from './generation-date.js';
import { writeFileAtomic } from './state.js';

export const CHANGE_JOURNAL_FILE = 'change-journal.json';
/** Where a refused journal is set aside (one copy, for whoever investigates). */
export const REFUSED_JOURNAL_FILE = 'change-journal.json.refused';
const FORMAT = 'mssante-policyd-change-journal/1';
/** Beyond the count, the journal's bytes are bounded: the oldest changes go first (the newest always stays). */
export const MAX_JOURNAL_BYTES = 32 * 1024 * 1024;
/** How many of a domain's changes its lookup shows. */
export const DOMAIN_CHANGES_SHOWN = 10;

interface JournalFile {
  readonly format: string;
  /** sha256 of JSON.stringify(changes): a truncated, damaged or hand-edited file is refused. */
  readonly sha256: string;
  readonly changes: readonly ListChange[];
}

export type JournalParse = { readonly ok: true; readonly changes: ListChange[] } | { readonly ok: false; readonly why: string };

const SHA256 = /^[0-9a-f]{64}$/;
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

class Refused extends Error {}

function checkRef(value: unknown, where: string): ListRef {
  const v = value as Partial<ListRef> | null;
  if (v === null || typeof v !== 'object') throw new Refused(`${where}: not an object`);
  if (typeof v.sha256 !== 'string' || !SHA256.test(v.sha256)) throw new Refused(`${where}.sha256: not a sha256`);
  if (typeof v.generatedAt !== 'string' || !isValidGenerationDate(v.generatedAt))
    throw new Refused(`${where}.generatedAt: not a generation date`);
  return { sha256: v.sha256, generatedAt: v.generatedAt };
}

function checkDomains(value: unknown, where: string): string[] {
  if (!Array.isArray(value)) throw new Refused(`${where}: not a list`);
  return value.map((d, i) => {
    if (typeof d !== 'string' || normaliseDomain(d) !== d) throw new Refused(`${where}[${i}]: not a normalised domain`);
    return d;
  });
}

function checkDns(value: unknown, where: string): string[] {
  if (!Array.isArray(value)) throw new Refused(`${where}: not a list`);
  return value.map((dn, i) => {
    if (typeof dn !== 'string' || dn.length === 0 || dn.length > MAX_DN_LENGTH || CONTROL.test(dn))
      throw new Refused(`${where}[${i}]: not a DN`);
    return dn;
  });
}

/** A change rebuilt field by field from parsed JSON: nothing but the known fields, each of its form. */
function checkChange(value: unknown, where: string): ListChange {
  const v = value as Record<string, unknown> | null;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Refused(`${where}: not an object`);
  const appliedAt = v['appliedAt'];
  if (typeof appliedAt !== 'string' || !ISO_MS.test(appliedAt) || Number.isNaN(Date.parse(appliedAt)))
    throw new Refused(`${where}.appliedAt: not a time`);
  if (!Array.isArray(v['rebound'])) throw new Refused(`${where}.rebound: not a list`);
  const rebound: Rebinding[] = (v['rebound'] as unknown[]).map((r, i) => {
    const at = `${where}.rebound[${i}]`;
    const item = r as Record<string, unknown> | null;
    if (item === null || typeof item !== 'object') throw new Refused(`${at}: not an object`);
    const [domain] = checkDomains([item['domain']], `${at}.domain`);
    return { domain: domain!, from: checkDns(item['from'], `${at}.from`), to: checkDns(item['to'], `${at}.to`) };
  });
  return {
    from: checkRef(v['from'], `${where}.from`),
    to: checkRef(v['to'], `${where}.to`),
    appliedAt,
    added: checkDomains(v['added'], `${where}.added`),
    removed: checkDomains(v['removed'], `${where}.removed`),
    rebound,
    operatorsAdded: checkDns(v['operatorsAdded'], `${where}.operatorsAdded`),
    operatorsRemoved: checkDns(v['operatorsRemoved'], `${where}.operatorsRemoved`),
  };
}

function digest(changes: readonly ListChange[]): string {
  return createHash('sha256').update(JSON.stringify(changes)).digest('hex');
}

/** The journal file's text → its changes (newest first, at most `maxChanges`), or why it is refused. Pure. */
export function parseJournal(text: string, maxChanges: number): JournalParse {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return { ok: false, why: `not JSON (${(error as Error).message.slice(0, 100)})` };
  }
  const file = parsed as Partial<JournalFile> | null;
  if (file === null || typeof file !== 'object' || Array.isArray(file)) return { ok: false, why: 'not a journal object' };
  if (file.format !== FORMAT) return { ok: false, why: `unknown format ${JSON.stringify(file.format)?.slice(0, 80)}` };
  if (!Array.isArray(file.changes)) return { ok: false, why: 'changes: not a list' };
  if (typeof file.sha256 !== 'string' || file.sha256 !== digest(file.changes))
    return { ok: false, why: 'checksum mismatch: the file was damaged or edited' };
  try {
    const changes = file.changes.map((c, i) => checkChange(c, `changes[${i}]`));
    for (let i = 1; i < changes.length; i++) {
      if ((changes[i]!.appliedAt ?? '') > (changes[i - 1]!.appliedAt ?? ''))
        return { ok: false, why: `changes[${i}]: not newest first` };
    }
    return { ok: true, changes: changes.slice(0, maxChanges) };
  } catch (error) {
    if (error instanceof Refused) return { ok: false, why: error.message };
    throw error;
  }
}

/** The file's text for these changes (already bounded). */
export function serialiseJournal(changes: readonly ListChange[]): string {
  return `${JSON.stringify({ format: FORMAT, sha256: digest(changes), changes } satisfies JournalFile)}\n`;
}

/** Keeps the newest `maxChanges`, then drops the oldest while the file would exceed `maxBytes` (the newest stays). */
export function boundJournal(changes: readonly ListChange[], maxChanges: number, maxBytes = MAX_JOURNAL_BYTES): ListChange[] {
  const kept = changes.slice(0, maxChanges);
  let bytes = 256;
  for (let i = 0; i < kept.length; i++) {
    bytes += Buffer.byteLength(JSON.stringify(kept[i])) + 1;
    if (bytes > maxBytes && i > 0) return kept.slice(0, i);
  }
  return kept;
}

/** One change of one domain, as its lookup shows it. */
export interface DomainChange {
  readonly kind: ChangeKind;
  readonly appliedAt: string | null;
  readonly from: ListRef;
  readonly to: ListRef;
  /** For `rebound`: the identities before and after. */
  readonly dnsFrom?: readonly string[];
  readonly dnsTo?: readonly string[];
}

export interface DomainHistory {
  /**
   * generatedAt of the list that introduced the domain's current binding (added or moved it), found
   * along the unbroken chain of changes that ends at the list in force; null when older than that.
   */
  readonly since: string | null;
  /** The domain's changes in the journal, newest first (at most DOMAIN_CHANGES_SHOWN). */
  readonly changes: readonly DomainChange[];
}

function domainChangeIn(change: ListChange, domain: string): DomainChange | null {
  const base = { appliedAt: change.appliedAt, from: change.from, to: change.to };
  if (change.added.includes(domain)) return { kind: 'added', ...base };
  if (change.removed.includes(domain)) return { kind: 'removed', ...base };
  const moved = change.rebound.find((r) => r.domain === domain);
  return moved === undefined ? null : { kind: 'rebound', ...base, dnsFrom: moved.from, dnsTo: moved.to };
}

/** A domain's history from the journal (newest first) and the list in force (null: none). Pure. */
export function domainHistory(changes: readonly ListChange[], inForceSha256: string | null, domain: string): DomainHistory {
  const shown: DomainChange[] = [];
  let since: string | null = null;
  let sinceSettled = inForceSha256 === null;
  let expected = inForceSha256;
  for (const change of changes) {
    const mine = domainChangeIn(change, domain);
    if (!sinceSettled) {
      if (change.to.sha256 !== expected)
        sinceSettled = true; // a gap: what lies beyond may not lead here
      else if (mine !== null) {
        since = mine.kind === 'removed' ? null : change.to.generatedAt;
        sinceSettled = true;
      } else expected = change.from.sha256;
    }
    if (mine !== null && shown.length < DOMAIN_CHANGES_SHOWN) shown.push(mine);
    if (sinceSettled && shown.length >= DOMAIN_CHANGES_SHOWN) break;
  }
  return { since, changes: shown };
}

/** The journal of one daemon: in memory (served) and in the state dir (written after each change). */
export class ChangeJournal {
  private entries: ListChange[] = [];
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly dir: string,
    private readonly maxChanges: number,
    private readonly logger: Logger,
  ) {}

  /** Reads the stored journal; a refused one is set aside and said loudly, and the journal starts empty. */
  load(): void {
    const path = join(this.dir, CHANGE_JOURNAL_FILE);
    let text: string;
    try {
      if (statSync(path).size > MAX_JOURNAL_BYTES * 2) {
        this.refuse(path, `larger than ${MAX_JOURNAL_BYTES * 2} bytes`);
        return;
      }
      text = readFileSync(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.logger.error(
        { event: 'change_journal_unreadable', path, err: (error as Error).message },
        'cannot read the change journal: starting an empty one (the next change rewrites it)',
      );
      return;
    }
    const parsed = parseJournal(text, this.maxChanges);
    if (!parsed.ok) {
      this.refuse(path, parsed.why);
      return;
    }
    this.entries = parsed.changes;
    this.logger.info({ event: 'change_journal_loaded', changes: this.entries.length }, 'change journal read');
  }

  private refuse(path: string, why: string): void {
    let setAside: string | null = join(this.dir, REFUSED_JOURNAL_FILE);
    try {
      renameSync(path, setAside);
    } catch {
      setAside = null;
    }
    this.logger.error(
      { event: 'change_journal_refused', path, why, set_aside: setAside },
      'the stored change journal is refused: list history starts empty (trust decisions never read it)',
    );
  }

  /** Newest first. */
  changes(): readonly ListChange[] {
    return this.entries;
  }

  history(domain: string, inForceSha256: string | null): DomainHistory {
    return domainHistory(this.entries, inForceSha256, domain);
  }

  /** Adds the change (served at once) and writes the file; a failed write is logged, the change stays served. */
  record(change: ListChange): Promise<void> {
    this.entries = boundJournal([change, ...this.entries], this.maxChanges);
    const snapshot = this.entries;
    this.writing = this.writing.then(async () => {
      try {
        await writeFileAtomic(this.dir, CHANGE_JOURNAL_FILE, serialiseJournal(snapshot));
      } catch (error) {
        this.logger.error(
          { event: 'change_journal_write_failed', state_dir: this.dir, err: (error as Error).message },
          'cannot write the change journal: a restart will not remember the latest list changes',
        );
      }
    });
    return this.writing;
  }
}
