/**
 * deploy/prometheus/alerts.yml evaluated by promtool on synthetic series: the signer-expiry alert
 * fires 30 days before the signer's notAfter (after its `for`), and stays quiet without a signer.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { toolOrSkip } from '../../support/tools.js';

const ALERTS = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'deploy', 'prometheus', 'alerts.yml');
const DAY = 86_400;

/** The alert's annotations as Prometheus renders them (only `{{ $labels.x }}` templates are used here). */
function annotations(alert: string, labels: Record<string, string>): Record<string, string> {
  const text = readFileSync(ALERTS, 'utf8');
  const start = text.indexOf(`- alert: ${alert}\n`);
  assert.ok(start >= 0, `${alert} is in alerts.yml`);
  const next = text.indexOf('- alert: ', start + 1);
  const block = text.slice(start, next === -1 ? undefined : next);
  const out: Record<string, string> = {};
  for (const m of block.matchAll(/^ {10}(summary|description|runbook): "((?:[^"\\]|\\.)*)"$/gm)) {
    out[m[1] as string] = (JSON.parse(`"${m[2]}"`) as string).replace(
      /\{\{ \$labels\.(\w+) \}\}/g,
      (_, l: string) => labels[l] ?? '',
    );
  }
  assert.deepEqual(Object.keys(out).sort(), ['description', 'runbook', 'summary']);
  return out;
}

test('MssantePolicydListSignerExpiring: fires from 30 days before notAfter (+1 h), never for an unsigned list', (t) => {
  const promtool = toolOrSkip(t, 'promtool');
  if (promtool === null) return;
  const metric = 'mssante_policyd_whitelist_signer_not_after_timestamp_seconds';
  const labels = '{job="mssante-policyd",instance="policyd:9464"}';
  // promtool's clock starts at 0: a signer expiring at day 31 enters the 30-day window at day 1.
  const notAfter = 31 * DAY;
  const spec = `rule_files:
  - ${JSON.stringify(ALERTS)}
evaluation_interval: 10m
tests:
  - interval: 10m
    input_series:
      - series: '${metric}${labels}'
        values: '${notAfter}x300'
    alert_rule_test:
      - eval_time: 23h
        alertname: MssantePolicydListSignerExpiring
        exp_alerts: []
      - eval_time: 24h30m
        alertname: MssantePolicydListSignerExpiring
        exp_alerts: []
      - eval_time: 25h10m
        alertname: MssantePolicydListSignerExpiring
        exp_alerts:
          - exp_labels: { severity: warning, job: mssante-policyd, instance: "policyd:9464" }
            exp_annotations: ${JSON.stringify(annotations('MssantePolicydListSignerExpiring', { instance: 'policyd:9464' }))}
  - interval: 10m
    input_series:
      - series: '${metric}${labels}'
        values: '0x300'
    alert_rule_test:
      - eval_time: 48h
        alertname: MssantePolicydListSignerExpiring
        exp_alerts: []
`;
  const file = join(mkdtempSync(join(tmpdir(), 'alerts-')), 'signer-expiry.test.yml');
  writeFileSync(file, spec);
  let out: string;
  try {
    out = execFileSync(promtool, ['test', 'rules', file], { encoding: 'utf8', stdio: 'pipe' });
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    assert.fail(`promtool test rules failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  assert.match(out, /SUCCESS/);
});
