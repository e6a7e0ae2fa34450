/**
 * deploy/prometheus/alerts.yml evaluated by promtool on synthetic series: the signer-expiry alert
 * fires 30 days before the signer's notAfter (after its `for`), and stays quiet without a signer;
 * the certificate-change alert fires, informational, for an hour after a change and only then.
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

/** Writes a promtool unit-test spec for alerts.yml and runs it; fails with promtool's own words. */
function promtoolTest(promtool: string, name: string, tests: string): void {
  const file = join(mkdtempSync(join(tmpdir(), 'alerts-')), `${name}.test.yml`);
  writeFileSync(file, `rule_files:\n  - ${JSON.stringify(ALERTS)}\nevaluation_interval: 1m\ntests:\n${tests}`);
  try {
    assert.match(execFileSync(promtool, ['test', 'rules', file], { encoding: 'utf8', stdio: 'pipe' }), /SUCCESS/);
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    assert.fail(`promtool test rules failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

test('MssantePolicydPeerCertificateChanged: informational, fires after a certificate change, quiet before and an hour after', (t) => {
  const promtool = toolOrSkip(t, 'promtool');
  if (promtool === null) return;
  const metric = 'mssante_policyd_peer_certificate_changes_total';
  const labels = (frontend: string): string => `{job="mssante-policyd",instance="policyd:9464",frontend="${frontend}"}`;
  // One change at minute 30 on policy, none ever on milter.
  promtoolTest(
    promtool,
    'peer-certificate-changed',
    `  - interval: 1m
    input_series:
      - series: '${metric}${labels('policy')}'
        values: '0x29 1x200'
      - series: '${metric}${labels('milter')}'
        values: '0x230'
    alert_rule_test:
      - eval_time: 29m
        alertname: MssantePolicydPeerCertificateChanged
        exp_alerts: []
      - eval_time: 45m
        alertname: MssantePolicydPeerCertificateChanged
        exp_alerts:
          - exp_labels: { severity: info, job: mssante-policyd, instance: "policyd:9464", frontend: policy }
            exp_annotations: ${JSON.stringify(annotations('MssantePolicydPeerCertificateChanged', { instance: 'policyd:9464', frontend: 'policy' }))}
      - eval_time: 3h
        alertname: MssantePolicydPeerCertificateChanged
        exp_alerts: []
`,
  );
});

test('MssantePolicydFleetDisagrees: two lists in the fleet for more than 2 h fire; one list, or a short disagreement, does not', (t) => {
  const promtool = toolOrSkip(t, 'promtool');
  if (promtool === null) return;
  const a = 'a'.repeat(64);
  const b = 'b'.repeat(64);
  const series = (instance: string, sha: string, values: string): string =>
    `      - series: 'mssante_policyd_fleet_instances{job="mssante-policyd",instance="${instance}",list_sha256="${sha}"}'\n        values: '${values}'\n`;
  promtoolTest(
    promtool,
    'fleet-disagrees',
    `  - interval: 1m
    input_series:
${series('mx1:9464', a, '1x200')}${series('mx1:9464', b, '1x200')}${series('mx2:9464', a, '1x200')}${series('mx2:9464', b, '1x200')}
    alert_rule_test:
      - eval_time: 1h50m
        alertname: MssantePolicydFleetDisagrees
        exp_alerts: []
      - eval_time: 2h10m
        alertname: MssantePolicydFleetDisagrees
        exp_alerts:
          - exp_labels: { severity: warning, job: mssante-policyd }
            exp_annotations: ${JSON.stringify({ ...annotations('MssantePolicydFleetDisagrees', { job: 'mssante-policyd' }), summary: 'The MX of mssante-policyd enforce 2 different whitelists' })}
  - interval: 1m
    input_series:
${series('mx1:9464', a, '2x400')}${series('mx1:9464', b, '0x400')}${series('mx2:9464', a, '2x400')}
    alert_rule_test:
      - eval_time: 5h
        alertname: MssantePolicydFleetDisagrees
        exp_alerts: []
`,
  );
});

test('MssantePolicydStoreUnavailable: store errors for 5 minutes fire; none, or a single blip, do not', (t) => {
  const promtool = toolOrSkip(t, 'promtool');
  if (promtool === null) return;
  const series = (values: string): string =>
    `      - series: 'mssante_policyd_store_errors_total{job="mssante-policyd",instance="mx1:9464",op="bucket"}'\n        values: '${values}'\n`;
  promtoolTest(
    promtool,
    'store-unavailable',
    `  - interval: 1m
    input_series:
${series('0 0 0 10+10x30')}
    alert_rule_test:
      - eval_time: 5m
        alertname: MssantePolicydStoreUnavailable
        exp_alerts: []
      - eval_time: 12m
        alertname: MssantePolicydStoreUnavailable
        exp_alerts:
          - exp_labels: { severity: warning, job: mssante-policyd, instance: "mx1:9464" }
            exp_annotations: ${JSON.stringify(annotations('MssantePolicydStoreUnavailable', { instance: 'mx1:9464' }))}
  - interval: 1m
    input_series:
${series('0x60')}
    alert_rule_test:
      - eval_time: 50m
        alertname: MssantePolicydStoreUnavailable
        exp_alerts: []
`,
  );
});
