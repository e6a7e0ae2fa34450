/**
 * The load-failure registry is the one place for its ids, and the docs say each: README's life-cycle
 * table holds one row per id with the registry's retry class and summary, SECURITY.md names each id.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LOAD_FAILURE_INFO, LOAD_FAILURES, TRANSIENT_FAILURES } from '../../../src/whitelist/failures.js';
import { REPO_ROOT } from '../../support/fixtures.js';

interface DocRow {
  readonly stage: string;
  readonly retried: string;
  readonly summary: string;
}

function readmeTable(): Map<string, DocRow> {
  const text = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const section = text.split(/^## /m).find((s) => s.startsWith('The list life cycle'));
  assert.ok(section !== undefined, 'README.md has a "## The list life cycle" section');
  const rows = new Map<string, DocRow>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    const id = /^`([a-z0-9_]+)`$/.exec(cells[1] ?? '');
    if (id === null) continue;
    assert.ok(!rows.has(id[1]!), `README lists ${id[1]} once`);
    rows.set(id[1]!, { stage: cells[2] ?? '', retried: cells[3] ?? '', summary: cells[4] ?? '' });
  }
  return rows;
}

describe('load-failure registry', () => {
  it('derives the transient set from the registry flag', () => {
    assert.deepEqual([...TRANSIENT_FAILURES].sort(), LOAD_FAILURES.filter((id) => LOAD_FAILURE_INFO[id].transient).sort());
    // Content refusals must not be retried every 15 s: the same bytes would be refused again.
    for (const id of ['signature_invalid', 'list_shrink', 'list_older', 'source_too_large'] as const)
      assert.equal(TRANSIENT_FAILURES.has(id), false, id);
    for (const id of ['source_unreachable', 'source_timeout', 'worker_failed'] as const)
      assert.equal(TRANSIENT_FAILURES.has(id), true, id);
  });

  it('names source failures source_* and only those', () => {
    for (const id of LOAD_FAILURES) assert.equal(LOAD_FAILURE_INFO[id].stage === 'source', id.startsWith('source_'), id);
  });

  it('README has one row per id, with its stage, retry class and summary', () => {
    const rows = readmeTable();
    assert.deepEqual([...rows.keys()].sort(), [...LOAD_FAILURES].sort(), 'README rows = registry ids');
    for (const id of LOAD_FAILURES) {
      const info = LOAD_FAILURE_INFO[id];
      const expected = `| \`${id}\` | ${info.stage} | ${info.transient ? 'yes' : 'no'} | ${info.summary} |`;
      const row = rows.get(id)!;
      assert.deepEqual(
        row,
        { stage: info.stage, retried: info.transient ? 'yes' : 'no', summary: info.summary },
        `README row should be: ${expected}`,
      );
    }
  });

  it('SECURITY.md names every id', () => {
    const text = readFileSync(join(REPO_ROOT, 'SECURITY.md'), 'utf8');
    const missing = LOAD_FAILURES.filter((id) => !text.includes(`\`${id}\``));
    assert.deepEqual(missing, [], 'ids SECURITY.md does not name');
  });
});
