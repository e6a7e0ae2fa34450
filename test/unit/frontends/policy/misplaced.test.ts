import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import pino from 'pino';
import { createMetrics } from '../../../../src/observe/metrics.js';
import { MisplacedCheckReporter } from '../../../../src/frontends/policy/misplaced.js';
import { UNDECIDED_STAGES } from '../../../../src/trust/facts.js';

function setup(intervalMs = 60_000): {
  reporter: MisplacedCheckReporter;
  lines: Array<Record<string, unknown>>;
  metricsText: () => Promise<string>;
  clock: { t: number };
} {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  const clock = { t: 1_000_000 };
  const reporter = new MisplacedCheckReporter(metrics, pino({ level: 'debug' }, sink), intervalMs, () => clock.t);
  return { reporter, lines, metricsText: () => metrics.registry.metrics(), clock };
}

const count = (text: string, stage: string): number => {
  const m = new RegExp(`^mssante_policyd_misplaced_checks_total\\{stage="${stage}"\\} (\\d+)$`, 'm').exec(text);
  assert.ok(m !== null, `no series for stage ${stage}`);
  return Number(m[1]);
};

describe('misplaced policy checks', () => {
  it('every undecided stage has a series at 0 from the start, and only those (bounded labels)', async () => {
    const { metricsText } = setup();
    const text = await metricsText();
    for (const stage of UNDECIDED_STAGES) assert.equal(count(text, stage), 0);
    assert.equal(text.match(/^mssante_policyd_misplaced_checks_total\{/gm)?.length, UNDECIDED_STAGES.length);
  });

  it('counts each request at an undecided stage, ignores decided stages', async () => {
    const { reporter, metricsText, lines } = setup();
    reporter.note('connect', 'CONNECT');
    reporter.note('connect', 'CONNECT');
    reporter.note('vrfy', 'VRFY');
    reporter.note('other', 'SOMETHING-NEW');
    for (const stage of ['mail', 'rcpt', 'data'] as const) reporter.note(stage, stage.toUpperCase());
    const text = await metricsText();
    assert.equal(count(text, 'connect'), 2);
    assert.equal(count(text, 'vrfy'), 1);
    assert.equal(count(text, 'other'), 1);
    assert.equal(count(text, 'helo'), 0);
    assert.equal(lines.length, 3);
    assert.ok(lines.every((l) => l.event === 'misplaced_check' && l.level === 40));
    assert.deepEqual(
      lines.map((l) => l.stage),
      ['connect', 'vrfy', 'other'],
    );
    assert.match(String(lines[0]!.msg), /smtpd_recipient_restrictions/);
  });

  it('warns at most once per stage per interval, then reports what it suppressed', () => {
    const { reporter, lines, clock } = setup(60_000);
    for (let i = 0; i < 100; i++) reporter.note('helo', 'EHLO');
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.suppressed, 0);
    clock.t += 59_999;
    reporter.note('helo', 'EHLO');
    assert.equal(lines.length, 1);
    clock.t += 1;
    reporter.note('helo', 'EHLO');
    assert.equal(lines.length, 2);
    assert.equal(lines[1]!.suppressed, 100);
    // Another stage has its own budget.
    reporter.note('etrn', 'ETRN');
    assert.equal(lines.length, 3);
  });

  it('bounds what it logs of protocol_state', () => {
    const { reporter, lines } = setup();
    reporter.note('other', 'X'.repeat(10_000));
    assert.equal(String(lines[0]!.protocolState).length, 32);
  });
});
