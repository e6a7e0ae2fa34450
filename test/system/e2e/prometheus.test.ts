/**
 * A real Prometheus scrapes the real daemon while it answers policy traffic. Every dashboard panel
 * query must return data, every alert rule must load, evaluate and see its metrics, and a list
 * generated three days ago must set off the stale-list alert. promtool lints the rules, the
 * example config and the /metrics text.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encodeRequest } from '../../../src/frontends/policy/codec.js';
import { encodeRequest as encodeSocketmapRequest } from '../../../src/frontends/socketmap/codec.js';
import { freePort, startDaemon } from '../../support/daemon.js';
import { startPrometheus } from '../../support/prometheus.js';
import { toolOrSkip } from '../../support/tools.js';
import { buildListXml } from '../../support/xmlsec.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const ALERTS = join(REPO, 'deploy', 'prometheus', 'alerts.yml');
const EXAMPLE_CONFIG = join(REPO, 'deploy', 'prometheus', 'prometheus.yml');
const DASHBOARD = join(REPO, 'grafana', 'mssante-policyd.json');
/** The alert rules match this job name; the example prometheus.yml uses it too. */
const JOB = 'mssante-policyd';
const MAX_CONNECTIONS = 4;

interface Panel {
  type: string;
  title: string;
  panels?: Panel[];
  targets?: Array<{ expr?: string }>;
}
interface Dashboard {
  panels: Panel[];
  templating: { list: Array<{ name: string; type?: string; query: { query: string } | string }> };
  __inputs: Array<{ name: string; type: string; pluginId: string }>;
}
interface RuleGroup {
  name: string;
  file: string;
  rules: Array<{
    name: string;
    query: string;
    type: string;
    health: string;
    lastError?: string;
    state?: string;
    annotations?: Record<string, string>;
  }>;
}

function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** One connection, requests in order, the `action=` line of each answer. */
/** Socketmap requests on one connection; the status words and values of the replies. */
async function socketmapExchange(address: string, requests: readonly Buffer[]): Promise<string[]> {
  const [host, port] = splitAddress(address);
  const socket = net.connect({ host, port });
  let buffered = '';
  const answers: string[] = [];
  await new Promise<void>((ok, fail) => {
    socket.on('error', fail);
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      for (
        let m = /^(\d+):/.exec(buffered);
        m !== null && buffered.length >= m[0].length + Number(m[1]) + 1;
        m = /^(\d+):/.exec(buffered)
      ) {
        answers.push(buffered.slice(m[0].length, m[0].length + Number(m[1])));
        buffered = buffered.slice(m[0].length + Number(m[1]) + 1);
      }
      if (answers.length === requests.length) ok();
    });
    socket.on('connect', () => socket.write(Buffer.concat(requests)));
  });
  socket.destroy();
  return answers.map((a) => (a.startsWith('OK REJECT') ? 'OK REJECT' : a));
}

async function policyExchange(address: string, requests: readonly Buffer[]): Promise<string[]> {
  const [host, port] = splitAddress(address);
  const socket = net.connect({ host, port });
  const answers: string[] = [];
  let buffered = '';
  const done = new Promise<void>((ok, fail) => {
    socket.on('error', fail);
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        answers.push(buffered.slice(0, end));
        buffered = buffered.slice(end + 2);
      }
      if (answers.length === requests.length) {
        socket.end();
        ok();
      }
    });
  });
  for (const r of requests) socket.write(r);
  await done;
  return answers;
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(':');
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}

function connect(address: string): Promise<net.Socket> {
  const [host, port] = splitAddress(address);
  return new Promise((ok, fail) => {
    const s = net.connect({ host, port }, () => ok(s));
    s.once('error', fail);
  });
}

function panelsOf(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...panelsOf(p.panels ?? [])]);
}

/** Metric selectors in a PromQL expression (our metrics and `up`), with their matchers. */
function selectorsOf(expr: string): string[] {
  return [...expr.matchAll(/\b(?:mssante_policyd_[a-z0-9_]+|up)\b(?:\{[^}]*\})?/g)].map((m) => m[0]);
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

test('a real Prometheus scrapes the daemon: dashboard queries, alert rules and lint', { timeout: 180_000 }, async (t) => {
  const prometheusBin = toolOrSkip(t, 'prometheus');
  const promtool = prometheusBin === null ? null : toolOrSkip(t, 'promtool');
  if (prometheusBin === null || promtool === null) return;

  const dir = mkdtempSync(join(tmpdir(), 'mssante-prom-e2e-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const listPath = join(dir, 'liste.xml');
  // Three days old: the stale-list alert (26 h) must go off.
  const generatedAt = isoSeconds(new Date(Date.now() - 3 * 86_400_000));
  writeFileSync(
    listPath,
    buildListXml(
      [
        { nom: 'hopital-a.mssante.fr', dn: 'CN=mx.hopital-a.fr,OU=1123456789,O=Hopital A,ST=Paris (75),C=FR' },
        { nom: 'clinique-b.mssante.fr', dn: 'CN=smtp.clinique-b.fr,OU=3123456789,O=Clinique B,ST=Gironde (33),C=FR' },
        { nom: '_', dn: '_' }, // the 2020 incident: skipped, counted in whitelist_entries_rejected
      ],
      generatedAt,
    ),
  );
  const socketmapAddress = `127.0.0.1:${await freePort()}`;
  const daemon = await startDaemon({
    whitelist: listPath,
    extraArgs: [
      '--allow-unsigned',
      '--refresh',
      '10',
      '--max-connections',
      String(MAX_CONNECTIONS),
      '--socketmap-listen',
      socketmapAddress,
    ],
  });
  t.after(async () => {
    await daemon.stop();
  });
  const prom = await startPrometheus({ binary: prometheusBin, job: JOB, targets: [daemon.httpAddress], ruleFiles: [ALERTS] });
  t.after(async () => {
    await prom.stop();
  });
  const p = prom;
  const inst = `instance="${daemon.httpAddress}"`;

  // Traffic only after a first scrape, so that rate() sees the counters move.
  await p.waitFor(`up{job="${JOB}", ${inst}} == 1`);

  // The next refresh (every 10 s) finds a broken file: a load failure, the list in force stays.
  writeFileSync(
    listPath,
    '<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGen',
  );

  const rcpt = (attrs: Record<string, string>): Buffer =>
    encodeRequest(
      Object.entries({
        request: 'smtpd_access_policy',
        protocol_state: 'RCPT',
        protocol_name: 'ESMTP',
        recipient: 'dr.y@local.mssante.fr',
        ...attrs,
      }),
    );
  const tls = { encryption_protocol: 'TLSv1.3', encryption_cipher: 'TLS_AES_256_GCM_SHA384' };
  const requests = [
    rcpt({ sender: 'dr.x@hopital-a.mssante.fr', ccert_subject: 'mx.hopital-a.fr', ...tls }),
    rcpt({ sender: 'dr.x@hopital-a.mssante.fr', ccert_subject: 'smtp.clinique-b.fr', ...tls }),
    rcpt({ sender: 'dr.x@inconnu.fr', ccert_subject: 'mx.inconnu.fr', ...tls }),
    rcpt({ sender: 'dr.x@hopital-a.mssante.fr' }),
  ];
  const answers: string[] = [];
  for (let round = 0; round < 5; round++) answers.push(...(await policyExchange(daemon.policyAddress, requests)));
  assert.equal(answers.length, 5 * requests.length);
  for (const a of answers) assert.match(a, /^action=(DUNNO|550 5\.7\.1 |451 4\.3\.0 )/);
  assert.ok(
    answers.some((a) => a === 'action=DUNNO'),
    'the listed sender with its own certificate passes',
  );
  assert.ok(
    answers.some((a) => a.startsWith('action=550 ')),
    'the others are refused',
  );

  // Sending side: socketmap lookups (a listed domain, a recipient outside the list), answered in order.
  const lookups = await socketmapExchange(socketmapAddress, [
    encodeSocketmapRequest('mssante-transport', 'hopital-a.mssante.fr'),
    encodeSocketmapRequest('mssante-recipient-access', 'x@inconnu.fr'),
  ]);
  assert.deepEqual(lookups, ['OK smtp-mssante:', 'OK REJECT'], 'socketmap answers');

  // A protocol error: a line that is not name=value.
  const bad = await connect(daemon.policyAddress);
  const badClosed = new Promise((ok) => bad.once('close', ok));
  bad.write('this is not an attribute\n\n');
  await badClosed;

  // One connection more than --max-connections: the extra one is refused.
  const held = await Promise.all(Array.from({ length: MAX_CONNECTIONS + 1 }, () => connect(daemon.policyAddress)));
  await Promise.race(held.map((s) => new Promise((ok) => s.once('close', ok))));
  for (const s of held) s.destroy();

  // rate() and increase() need two samples of a series in their window.
  await p.waitFor(`sum(rate(mssante_policyd_decisions_total{${inst}}[1m])) > 0`);
  for (const counter of ['protocol_errors_total', 'connections_rejected_total', 'whitelist_load_failures_total']) {
    await p.waitFor(`count_over_time(mssante_policyd_${counter}{${inst}}[1m]) >= 2`, 60_000);
  }
  await p.waitFor(`mssante_policyd_whitelist_usable{${inst}} == 1`);

  await t.test('promtool accepts the alert rules, the example config and the /metrics text', async () => {
    const rules = execFileSync(promtool, ['check', 'rules', ALERTS], { encoding: 'utf8' });
    assert.match(rules, /SUCCESS: \d+ rules found/);
    execFileSync(promtool, ['check', 'config', EXAMPLE_CONFIG], { encoding: 'utf8' });
    const res = await fetch(`http://${daemon.httpAddress}/metrics`);
    const text = await res.text();
    assert.match(text, /^mssante_policyd_decisions_total\{/m);
    // Non-zero exit (and stdout naming the problems) when the exposition has lint findings.
    execFileSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  });

  await t.test('every dashboard query returns data', async () => {
    const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
    assert.deepEqual(
      dash.__inputs.map((i) => [i.name, i.pluginId]),
      [['DS_PROMETHEUS', 'prometheus']],
    );
    const substitute = (expr: string): string =>
      expr
        .replaceAll('$__rate_interval', '1m')
        .replaceAll('$job', JOB)
        .replaceAll('$instance', escapeRegex(daemon.httpAddress).replaceAll('\\', '\\\\'));
    const panels = panelsOf(dash.panels).filter((panel) => panel.type !== 'row');
    assert.ok(panels.length >= 15);
    let checked = 0;
    for (const panel of panels) {
      assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has queries`);
      for (const target of panel.targets ?? []) {
        assert.ok(target.expr, `panel "${panel.title}" has an expr`);
        assert.doesNotMatch(substitute(target.expr), /\$/, `only known variables in "${panel.title}"`);
        const data = await p.query(substitute(target.expr));
        assert.equal(data.resultType, 'vector', `${panel.title}: ${target.expr}`);
        assert.ok(data.result.length > 0, `panel "${panel.title}" shows data for ${target.expr}`);
        checked++;
      }
    }
    // Template variables: their label_values() selector finds the daemon.
    for (const variable of dash.templating.list) {
      // The datasource variable picks a Prometheus, it queries nothing (test/system/deploy/grafana.test.ts checks it).
      if (variable.type === 'datasource') continue;
      const q = typeof variable.query === 'string' ? variable.query : variable.query.query;
      const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q);
      assert.ok(m, `variable ${variable.name} is a label_values() query`);
      const series = await p.query(substitute(m[1]!));
      assert.ok(
        series.resultType === 'vector' && series.result.some((s) => s.metric[m[2]!] !== undefined),
        `variable ${variable.name} has values`,
      );
    }
    t.diagnostic(`${checked} dashboard queries checked`);
  });

  await t.test('the operator panels see each sending certificate once per message, and unlisted', async () => {
    // No `instance` attribute in these requests: each one is its own message.
    const data = await p.query(`sum by (operator, result) (mssante_policyd_operator_transactions_total{${inst}})`);
    assert.ok(data.resultType === 'vector');
    const seen = Object.fromEntries(data.result.map((s) => [`${s.metric.operator}|${s.metric.result}`, Number(s.value[1])]));
    assert.deepEqual(seen, { 'mx.hopital-a.fr|pass': 5, 'smtp.clinique-b.fr|reject': 5, 'unlisted|reject': 10 });
  });

  await t.test('every alert rule loads, evaluates cleanly and sees its metrics', async () => {
    const { groups } = await p.api<{ groups: RuleGroup[] }>('rules', { type: 'alert' });
    const rules = groups.filter((g) => g.file === ALERTS).flatMap((g) => g.rules);
    const promtoolCount = Number(
      /SUCCESS: (\d+) rules found/.exec(execFileSync(promtool, ['check', 'rules', ALERTS], { encoding: 'utf8' }))?.[1],
    );
    assert.equal(rules.length, promtoolCount, 'Prometheus loaded every rule of the file');
    for (const rule of rules) {
      assert.ok(rule.annotations?.runbook && rule.annotations.runbook.length > 20, `${rule.name} has a runbook line`);
      assert.equal(rule.health, 'ok', `${rule.name} evaluates: ${rule.lastError ?? ''}`);
      await p.query(rule.query); // throws on a parse or evaluation error
      const selectors = selectorsOf(rule.query);
      assert.ok(selectors.length > 0, `${rule.name} reads a metric`);
      for (const selector of selectors) {
        const data = await p.query(selector);
        assert.ok(data.resultType === 'vector' && data.result.length > 0, `${rule.name}: ${selector} has series`);
      }
    }
  });

  await t.test('the three-day-old list sets off the stale-list alert, and only the alerts that should', async () => {
    const state = async (name: string): Promise<string | undefined> => {
      const { groups } = await p.api<{ groups: RuleGroup[] }>('rules', { type: 'alert' });
      return groups.flatMap((g) => g.rules).find((r) => r.name === name)?.state;
    };
    assert.match((await state('MssantePolicydWhitelistStale')) ?? '', /^(pending|firing)$/);
    const { alerts } = await p.api<{ alerts: Array<{ labels: Record<string, string>; state: string; value: string }> }>('alerts');
    const stale = alerts.find((a) => a.labels.alertname === 'MssantePolicydWhitelistStale');
    assert.ok(stale, 'the stale-list alert is listed');
    assert.equal(stale.labels.instance, daemon.httpAddress);
    assert.ok(Number(stale.value) > 2.9 * 86_400, `the alert carries the list age (${stale.value} s)`);
    // A usable list, no tempfail, daemon up: those stay quiet.
    for (const quiet of [
      'MssantePolicydWhitelistUnusable',
      'MssantePolicydTempfail',
      'MssantePolicydDown',
      'MssantePolicydAbsent',
      'MssantePolicydSocketmapTempPerm',
    ]) {
      assert.equal(await state(quiet), 'inactive', quiet);
    }
  });
});
