/**
 * Every registry the outside sees is tied to its docs, both ways, the way the load-failure registry is
 * (test/unit/whitelist/failures.test.ts): decision reasons ↔ README "Answers", metric families ↔ README's
 * `GET /metrics` list, settings ↔ README "Configuration" tables, `serve --help` and the man page (which
 * is generated: scripts/man-page.ts). Each count is pinned, so that adding an id, a metric or a setting
 * fails here with its name until the docs say it (docs/architecture.md, "One place per fact").
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SETTINGS, envName, settingsHelp } from '../../../src/config.js';
import { METRIC_PREFIX, createMetrics } from '../../../src/observe/metrics.js';
import { POLICY_ACTIONS, REASONS, REASON_IDS } from '../../../src/trust/reasons.js';
import { MAN_PAGE_PATH, manPage } from '../../../scripts/man-page.js';
import { REPO_ROOT } from '../../support/fixtures.js';

const README = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');

/** The text of one `## Title` section of README (up to the next `## `). */
function section(title: string): string {
  const found = README.split(/^## /m).find((s) => s.startsWith(title));
  assert.ok(found !== undefined, `README.md has a "## ${title}" section`);
  return found;
}

/** Table rows of a section: cells of each `| ... |` line after the header separator. */
function rows(text: string): string[][] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('|') && !/^\|[-| ]+\|$/.test(line))
    .map((line) =>
      line
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim()),
    );
}

const missingMessage = (what: string, missing: readonly string[], where: string): string =>
  `${what} missing from ${where}: ${missing.join(', ')}`;

describe('decision reasons ↔ README "Answers"', () => {
  const table = rows(section('Answers')).filter((cells) => cells[0]?.startsWith('`'));
  /** reason id → its row's answer cell; a row may name several ids (`ok` / `ok_bounce`). */
  const documented = new Map<string, string>();
  for (const cells of table) {
    for (const m of (cells[0] ?? '').matchAll(/`([a-z0-9_]+)`/g)) {
      assert.ok(!documented.has(m[1]!), `README "Answers" names ${m[1]} once`);
      documented.set(m[1]!, cells[2] ?? '');
    }
  }

  it('names every reason id, and no other', () => {
    const missing = REASON_IDS.filter((id) => !documented.has(id));
    assert.deepEqual(missing, [], missingMessage('reason ids of src/trust/reasons.ts', missing, 'README "Answers"'));
    const unknown = [...documented.keys()].filter((id) => !(id in REASONS));
    assert.deepEqual(unknown, [], `README "Answers" names ids src/trust/reasons.ts does not have: ${unknown.join(', ')}`);
    assert.equal(REASON_IDS.length, 16, 'a reason was added or removed: update README "Answers", then this count');
  });

  it("gives each id its registry's answer: DUNNO for a pass, else the SMTP and enhanced codes", () => {
    for (const id of REASON_IDS) {
      const reason = REASONS[id];
      const cell = documented.get(id)!;
      const expected = reason.result === 'pass' ? POLICY_ACTIONS[id] : `${reason.smtpCode} ${reason.enhancedCode}`;
      assert.ok(cell.includes(expected), `README "Answers", row of ${id}: the answer should show ${expected}, got ${cell}`);
    }
  });
});

describe('metric families ↔ README "GET /metrics"', () => {
  const metricsRow = rows(section('Observability')).find((cells) => cells[0] === '`GET /metrics`');
  /** name (without prefix) → label names, as README writes them: `name{a,b}`. */
  const documented = new Map<string, string[]>();
  for (const m of (metricsRow?.[1] ?? '').matchAll(/`([a-z][a-z_]*[a-z])(?:\{([a-z0-9_,]+)\})?`/g)) {
    documented.set(m[1]!, m[2] === undefined ? [] : m[2].split(','));
  }

  it('lists every family with its labels, and no other', async () => {
    assert.ok(metricsRow !== undefined, 'README "Observability" has a `GET /metrics` row');
    const families = (await createMetrics({ defaultMetrics: false }).registry.getMetricsAsJSON()).map((f) => ({
      name: f.name.slice(METRIC_PREFIX.length),
      labels: [
        ...new Set(
          (f.values as Array<{ labels: Record<string, unknown> }>)
            .flatMap((v) => Object.keys(v.labels))
            .filter((label) => label !== 'le'), // a histogram's buckets
        ),
      ],
    }));
    const missing = families.filter((f) => !documented.has(f.name)).map((f) => f.name);
    assert.deepEqual(missing, [], missingMessage('metric families of src/observe/metrics.ts', missing, 'README `GET /metrics`'));
    const unknown = [...documented.keys()].filter((name) => !families.some((f) => f.name === name));
    assert.deepEqual(
      unknown,
      [],
      `README \`GET /metrics\` lists families src/observe/metrics.ts does not register: ${unknown.join(', ')}`,
    );
    for (const f of families) {
      // Labels of a family with no series yet are unknown here; those with series must match README.
      if (f.labels.length > 0)
        assert.deepEqual(documented.get(f.name)!.slice().sort(), f.labels.slice().sort(), `README labels of ${f.name}`);
    }
    assert.equal(families.length, 28, 'a metric family was added or removed: update README `GET /metrics`, then this count');
  });
});

describe('settings ↔ README "Configuration", --help and the man page', () => {
  const keys = SETTINGS.map((s) => s.key);
  /** Flags named in the first cell of the Configuration section's tables (main settings and limits). */
  const documented = new Set<string>();
  for (const cells of rows(section('Configuration'))) {
    for (const m of (cells[0] ?? '').matchAll(/`--([a-z0-9-]+)/g)) documented.add(m[1]!);
  }

  it('README documents every setting, and no other', () => {
    const missing = keys.filter((k) => !documented.has(k));
    assert.deepEqual(
      missing,
      [],
      missingMessage(
        'settings of src/config.ts',
        missing.map((k) => `--${k}`),
        'README "Configuration" tables',
      ),
    );
    const unknown = [...documented].filter((k) => !keys.includes(k as never));
    assert.deepEqual(unknown, [], `README "Configuration" names flags that are not settings: ${unknown.join(', ')}`);
    assert.equal(keys.length, 54, 'a setting was added or removed: update README "Configuration", then this count');
  });

  it('serve --help shows every setting with its environment variable', () => {
    const help = settingsHelp();
    const missing = keys.filter((k) => !help.includes(`--${k}`) || !help.includes(envName(k)));
    assert.deepEqual(missing, []);
  });

  it('the committed man page is the generated one (npm run man), and shows every setting', () => {
    const committed = readFileSync(MAN_PAGE_PATH, 'utf8');
    assert.ok(committed === manPage(), 'deploy/debian/mssante-policyd.1 is stale: run `npm run man` and commit it');
    const missing = keys.filter((k) => !committed.includes(`\\fB\\-\\-${k.replace(/-/g, '\\-')}\\fR`));
    assert.deepEqual(missing, [], 'settings without an OPTIONS entry in the man page');
    for (const word of ['export', '\\-\\-accept', 'socketmap', 'lab.sh'])
      assert.ok(committed.includes(word), `man page mentions ${word}`);
  });
});
