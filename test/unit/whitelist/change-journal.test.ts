/**
 * The change journal: bounded (--change-journal-size, bytes), written atomically, read back only
 * after checks — a damaged or edited file is refused whole and set aside, never a crash — and the
 * domain history ("since") follows only the unbroken chain of changes that ends at the list in force.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import {
  boundJournal,
  CHANGE_JOURNAL_FILE,
  ChangeJournal,
  domainHistory,
  parseJournal,
  REFUSED_JOURNAL_FILE,
  serialiseJournal,
} from '../../../src/whitelist/change-journal.js';
import type { ListChange } from '../../../src/whitelist/changes.js';

const sha = (c: string): string => c.repeat(64);
const DN_A = 'CN=mx.a.fr,OU=1,O=op a,C=fr';
const DN_B = 'CN=mx.b.fr,OU=2,O=op b,C=fr';

function change(from: string, to: string, day: number, parts: Partial<ListChange> = {}): ListChange {
  const date = `2026-04-${String(day).padStart(2, '0')}T00:00:00Z`;
  return {
    from: { sha256: sha(from), generatedAt: `2026-04-${String(day - 1).padStart(2, '0')}T00:00:00Z` },
    to: { sha256: sha(to), generatedAt: date },
    appliedAt: `2026-04-${String(day).padStart(2, '0')}T03:00:00.000Z`,
    added: [],
    removed: [],
    rebound: [],
    operatorsAdded: [],
    operatorsRemoved: [],
    ...parts,
  };
}

// Newest first: 1 → 2 (x.fr added), 2 → 3 (x.fr moved A → B), 3 → 4 (y.fr removed).
const CHAIN = [
  change('3', '4', 12, { removed: ['y.fr'] }),
  change('2', '3', 11, { rebound: [{ domain: 'x.fr', from: [DN_A], to: [DN_B] }] }),
  change('1', '2', 10, { added: ['x.fr'], operatorsAdded: [DN_A] }),
];

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function journalIn(dir: string, size = 100): { journal: ChangeJournal; logs: Array<Record<string, unknown>> } {
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
  return { journal: new ChangeJournal(dir, size, logger), logs };
}

describe('change journal', () => {
  it('since: the list that introduced the binding, along the chain ending at the list in force', () => {
    const x = domainHistory(CHAIN, sha('4'), 'x.fr');
    assert.equal(x.since, '2026-04-11T00:00:00Z');
    assert.deepEqual(
      x.changes.map((c) => [c.kind, c.to.sha256[0]]),
      [
        ['rebound', '3'],
        ['added', '2'],
      ],
    );
    assert.deepEqual(x.changes[0]?.dnsTo, [DN_B]);
    // A domain no change names: older than the journal.
    assert.equal(domainHistory(CHAIN, sha('4'), 'old.fr').since, null);
    const y = domainHistory(CHAIN, sha('4'), 'y.fr');
    assert.deepEqual([y.since, y.changes[0]?.kind], [null, 'removed']);
    // A list in force the journal does not lead to (a gap): "since" is not claimed.
    assert.equal(domainHistory(CHAIN, sha('9'), 'x.fr').since, null);
    assert.equal(domainHistory(CHAIN, sha('9'), 'x.fr').changes.length, 2);
  });

  it('keeps the newest --change-journal-size changes, and bounds the bytes (the newest always stays)', () => {
    assert.deepEqual(boundJournal(CHAIN, 2), CHAIN.slice(0, 2));
    const big = change('5', '6', 13, { added: Array.from({ length: 2000 }, (_, i) => `d${i}.fr`) });
    assert.deepEqual(boundJournal([big, ...CHAIN], 100, 1000), [big]);
  });

  it('survives a restart: written atomically, read back exactly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'journal-test-'));
    dirs.push(dir);
    const first = journalIn(dir, 2).journal;
    first.load();
    for (const c of [...CHAIN].reverse()) await first.record(c);
    assert.deepEqual(first.changes(), CHAIN.slice(0, 2));
    const { journal: second, logs } = journalIn(dir, 2);
    second.load();
    assert.deepEqual(second.changes(), CHAIN.slice(0, 2));
    assert.equal(logs.find((l) => l.event === 'change_journal_loaded')?.changes, 2);
    // A smaller --change-journal-size after a restart keeps the newest only.
    const third = journalIn(dir, 1).journal;
    third.load();
    assert.deepEqual(third.changes(), CHAIN.slice(0, 1));
  });

  const good = serialiseJournal(CHAIN);
  const tampered: Array<[string, string]> = [
    ['truncated', good.slice(0, good.length / 2)],
    ['not JSON', 'garbage\u0000'],
    ['edited (checksum)', good.replace('x.fr', 'z.fr')],
    ['another format', good.replace('change-journal/1', 'change-journal/9')],
    ['array at the top', '[]'],
    ['null', 'null'],
  ];
  /** A well-formed file (valid checksum) whose content breaks a field rule. */
  const resealed = (mutate: (c: Record<string, unknown>[]) => void): string => {
    const changes = JSON.parse(JSON.stringify(CHAIN)) as Record<string, unknown>[];
    mutate(changes);
    return serialiseJournal(changes as unknown as ListChange[]);
  };
  tampered.push(
    ['a domain not normalised', resealed((c) => (c[2]!.added = ['X.FR']))],
    ['a DN with a line break', resealed((c) => (c[2]!.operatorsAdded = ['CN=a\nevent=forged']))],
    ['a bad sha256', resealed((c) => (c[0]!.to = { sha256: 'zz', generatedAt: '2026-04-12T00:00:00Z' }))],
    ['an object where a list goes', resealed((c) => (c[1]!.rebound = { domain: 'x.fr' }))],
    ['a rebinding without lists', resealed((c) => (c[1]!.rebound = [{ domain: 'x.fr', from: 'CN=a' }]))],
    ['__proto__ smuggled', resealed((c) => (c[0]!.from = JSON.parse('{"__proto__":{"sha256":"x"}}') as unknown))],
    ['not newest first', resealed((c) => c.reverse())],
  );
  for (const [name, text] of tampered) {
    it(`refuses a ${name} journal: set aside, logged, history empty`, () => {
      assert.equal(parseJournal(text, 100).ok, false, name);
      const dir = mkdtempSync(join(tmpdir(), 'journal-test-'));
      dirs.push(dir);
      writeFileSync(join(dir, CHANGE_JOURNAL_FILE), text);
      const { journal, logs } = journalIn(dir);
      journal.load();
      assert.deepEqual(journal.changes(), []);
      const refused = logs.find((l) => l.event === 'change_journal_refused');
      assert.ok(refused, `${name}: change_journal_refused logged`);
      assert.equal(existsSync(join(dir, CHANGE_JOURNAL_FILE)), false);
      assert.equal(readFileSync(join(dir, REFUSED_JOURNAL_FILE), 'utf8'), text);
    });
  }

  it('a file that is not readable as a file (a directory) is said, not thrown', () => {
    const dir = mkdtempSync(join(tmpdir(), 'journal-test-'));
    dirs.push(dir);
    const { journal, logs } = journalIn(join(dir, 'missing-dir'));
    journal.load(); // absent: silently empty
    assert.deepEqual([journal.changes(), logs.length], [[], 0]);
  });
});
