/**
 * SECURITY.md's "Limits" table stays true: every numeric setting of src/config.ts has a row, the
 * default it states is the real one, and each test file it names exists and exercises that limit
 * (names its flag, its option or the reason/kind id it produces).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SETTINGS } from '../../../src/config.js';
import { REPO_ROOT } from '../../support/fixtures.js';

/** What a test that exercises the setting must mention, besides the flag itself. */
const EVIDENCE: Readonly<Record<string, readonly string[]>> = {
  'max-line-bytes': ['maxLineBytes', 'line_too_long'],
  'max-request-bytes': ['maxRequestBytes', 'request_too_large'],
  'max-attributes': ['maxAttributes', 'too_many_attributes'],
  'max-socketmap-request-bytes': ['maxRequestBytes', 'request_too_large'],
  'max-milter-packet-bytes': ['maxPacketBytes', 'packet_too_large'],
  'request-timeout': ['requestTimeoutMs', 'request_timeout'],
  'idle-timeout': ['idleTimeoutMs'],
  'milter-idle-timeout': ['idleTimeoutMs', 'idle_timeout'],
  'max-connections': ['maxConnections', 'connections_rejected'],
  'max-connection-bytes': ['maxConnectionBytes', 'connection_budget_exceeded'],
  'heap-watermark': ['heapWatermarkPercent', 'connections_rejected_memory'],
  'max-list-bytes': ['maxBytes', 'source_too_large'],
  'max-list-entries': ['maxEntries', 'list_too_many_entries'],
  'fetch-timeout': ['totalTimeoutMs', 'source_timeout'],
  'prepare-timeout': ['prepareTimeoutMs', 'took longer than'],
  'max-shrink': ['list_shrink'],
  'max-rebind': ['list_rebind', 'maxRebindPercent'],
  'change-journal-size': ['changeJournalSize', 'boundJournal'],
  refresh: ['refreshSeconds'],
  'shutdown-grace': ['shutdownGrace'],
  'operator-rate': ['operatorRate', 'OperatorLedger'],
  'operator-burst': ['operatorBurst', 'TokenBucket'],
};

interface Row {
  readonly setting: string;
  readonly defaultCell: string;
  readonly proofs: readonly string[];
}

function limitsTable(): Map<string, Row> {
  const text = readFileSync(join(REPO_ROOT, 'SECURITY.md'), 'utf8');
  const section = text.split(/^## /m).find((s) => s.startsWith('Limits'));
  assert.ok(section !== undefined, 'SECURITY.md has a "## Limits" section');
  const rows = new Map<string, Row>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    const flag = /^`--([a-z-]+)`$/.exec(cells[1] ?? '');
    if (flag === null) continue;
    rows.set(flag[1]!, {
      setting: flag[1]!,
      defaultCell: cells[2] ?? '',
      proofs: [...(cells[4] ?? '').matchAll(/`([^`]+\.test\.ts)`/g)].map((m) => m[1]!),
    });
  }
  return rows;
}

describe('SECURITY.md limits table', () => {
  const numeric = SETTINGS.filter((s) => s.kind === 'int' || s.kind === 'seconds');

  it('has a row for every numeric setting, with its real default', () => {
    const rows = limitsTable();
    for (const setting of numeric) {
      const row = rows.get(setting.key);
      assert.ok(row !== undefined, `--${setting.key} has a row`);
      assert.ok(
        row.defaultCell.includes(`\`${String(setting.default)}\``),
        `--${setting.key}: the table says ${row.defaultCell}, config.ts says ${String(setting.default)}`,
      );
    }
  });

  it('names, for every limit, existing tests that exercise it', () => {
    const rows = limitsTable();
    for (const setting of numeric) {
      const row = rows.get(setting.key)!;
      assert.ok(row.proofs.length > 0, `--${setting.key} names at least one test`);
      const terms = [`--${setting.key}`, ...(EVIDENCE[setting.key] ?? [])];
      for (const proof of row.proofs) {
        const path = join(REPO_ROOT, proof);
        assert.ok(existsSync(path), `--${setting.key}: ${proof} exists`);
        const source = readFileSync(path, 'utf8');
        assert.ok(
          terms.some((t) => source.includes(t)),
          `--${setting.key}: ${proof} mentions one of ${terms.join(', ')}`,
        );
      }
    }
  });
});
