/**
 * Admission of a new connection: the connection limit and the heap watermark, each refusal counted
 * and warned about at most every 10 s.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino, type Logger } from 'pino';
import { createAdmission, heapUsedRatio } from '../../../src/net/admission.js';
import { createMetrics, type Metrics } from '../../../src/observe/metrics.js';

function fakeSocket(): Socket & { destroyedByAdmission: boolean } {
  const s = {
    destroyedByAdmission: false,
    destroy() {
      s.destroyedByAdmission = true;
    },
  };
  return s as unknown as Socket & { destroyedByAdmission: boolean };
}

function logSink(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

async function count(metrics: Metrics, name: 'connectionsRejected' | 'connectionsRejectedMemory'): Promise<number> {
  const { values } = await metrics[name].get();
  return values.find((v) => v.labels.frontend === 'milter')?.value ?? 0;
}

describe('admission', () => {
  it('refuses new connections while the heap is above --heap-watermark, counted, one warning per 10 s', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const { logger, lines } = logSink();
    let ratio = 0.8;
    const admission = createAdmission('milter', 1000, false, metrics, logger, {
      heapWatermarkPercent: 70,
      heapUsedRatio: () => ratio,
    });
    const refused = Array.from({ length: 50 }, () => fakeSocket());
    for (const socket of refused) assert.equal(admission.admit(socket, 3), false);
    assert.ok(refused.every((s) => s.destroyedByAdmission));
    assert.equal(await count(metrics, 'connectionsRejectedMemory'), 50);
    assert.equal(await count(metrics, 'connectionsRejected'), 0, 'not the connection limit');
    const warnings = lines.filter((l) => /heap above its watermark/.test(String(l.msg)));
    assert.equal(warnings.length, 1, 'rate-limited');
    assert.equal(warnings[0]?.heapUsedPercent, 80);
    ratio = 0.69;
    const socket = fakeSocket();
    assert.equal(admission.admit(socket, 3), true, 'admitted again once the heap is back under the watermark');
    assert.equal(socket.destroyedByAdmission, false);
  });

  it('checks the connection limit first, and reads the real heap by default', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const { logger } = logSink();
    const admission = createAdmission('milter', 2, false, metrics, logger, { heapWatermarkPercent: 95 });
    assert.equal(admission.admit(fakeSocket(), 2), false);
    assert.equal(await count(metrics, 'connectionsRejected'), 1);
    assert.equal(admission.admit(fakeSocket(), 1), true, 'this test process is far below 95 % of its heap');
    const r = heapUsedRatio();
    assert.ok(r > 0 && r < 1, `a ratio, got ${r}`);
  });
});
