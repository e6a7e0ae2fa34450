/**
 * One codec-fault behaviour for every frontend, decided once in net/stream-server.ts: the requests
 * completed before the fault (in the same chunk) are answered, in order; then one log line, one
 * protocol_errors_total{frontend,kind} count, and that connection only is closed — another
 * connection to the same listener is still answered. Table-driven: a new frontend adds a row.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino, type Logger } from 'pino';
import { encodeConnect, encodeOptneg, encodeRaw } from '../../../src/frontends/milter/codec.js';
import { startMilterServer } from '../../../src/frontends/milter/server.js';
import { encodeRequest as encodePolicyRequest } from '../../../src/frontends/policy/codec.js';
import { startPolicyServer } from '../../../src/frontends/policy/server.js';
import { decodeReply, encodeRequest as encodeSocketmapRequest } from '../../../src/frontends/socketmap/codec.js';
import { SocketmapTables } from '../../../src/frontends/socketmap/maps.js';
import { startSocketmapServer } from '../../../src/frontends/socketmap/server.js';
import { LISTENER_DEFAULTS } from '../../../src/listener-defaults.js';
import type { ListenerHandle } from '../../../src/net/stream-server.js';
import { createMetrics, type Metrics } from '../../../src/observe/metrics.js';

const servers: ListenerHandle[] = [];
after(async () => Promise.all(servers.map((s) => s.close(100))));

interface Row {
  readonly frontend: 'policy' | 'milter' | 'socketmap';
  readonly start: (logger: Logger, metrics: Metrics) => Promise<ListenerHandle>;
  /** Two complete requests, each answered. */
  readonly valid: Buffer;
  /** Bytes the codec refuses, and the kind it counts. */
  readonly bad: Buffer;
  readonly kind: string;
  /** How many answers a byte stream holds. */
  readonly answers: (data: Buffer) => number;
}

function policyAnswers(data: Buffer): number {
  return data.toString('latin1').split('\n\n').length - 1;
}

function socketmapAnswers(data: Buffer): number {
  let n = 0;
  for (let r = decodeReply(data); r !== null; r = decodeReply(r.rest)) n++;
  return n;
}

function milterAnswers(data: Buffer): number {
  let n = 0;
  for (let at = 0; at + 4 <= data.length; at += 4 + data.readUInt32BE(at)) n++;
  return n;
}

const ROWS: readonly Row[] = [
  {
    frontend: 'policy',
    start: (logger, metrics) =>
      startPolicyServer('127.0.0.1:0', { ...LISTENER_DEFAULTS.policy, logger, metrics, handle: () => 'DUNNO' }),
    valid: Buffer.concat([
      encodePolicyRequest([['request', 'smtpd_access_policy']]),
      encodePolicyRequest([['request', 'smtpd_access_policy']]),
    ]),
    bad: Buffer.from('no equals sign\n'),
    kind: 'malformed_line',
    answers: policyAnswers,
  },
  {
    frontend: 'milter',
    start: (logger, metrics) =>
      startMilterServer('127.0.0.1:0', {
        ...LISTENER_DEFAULTS.milter,
        logger,
        metrics,
        onMailFrom: () => ({ action: 'continue' }),
      }),
    // OPTNEG (answered with ours) then CONNECT (answered CONTINUE: no no-reply flag offered).
    valid: Buffer.concat([encodeOptneg(6, 0x1ff, 0), encodeConnect('mx.example', 'inet', 25, '192.0.2.1')]),
    bad: encodeRaw(0x7a),
    kind: 'unknown_command',
    answers: milterAnswers,
  },
  {
    frontend: 'socketmap',
    start: (logger, metrics) =>
      startSocketmapServer('127.0.0.1:0', {
        ...LISTENER_DEFAULTS.socketmap,
        logger,
        metrics,
        tables: new SocketmapTables({ tlsPolicy: 'secure', transport: 'smtp:' }),
        currentIndex: () => null,
      }),
    valid: Buffer.concat([
      encodeSocketmapRequest('mssante-domain', 'a.example'),
      encodeSocketmapRequest('mssante-domain', 'b.example'),
    ]),
    bad: Buffer.from('x:'),
    kind: 'bad_length',
    answers: socketmapAnswers,
  },
];

/** Writes `bytes` at once; resolves with everything received until the server closes. */
function exchange(address: string, bytes: Buffer): Promise<Buffer> {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host: '127.0.0.1', port }, () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** Writes `bytes`; resolves with the first `count` answers' bytes, then closes. */
function ask(address: string, bytes: Buffer, answers: (data: Buffer) => number, count: number): Promise<Buffer> {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    let data = Buffer.alloc(0);
    const socket = net.connect({ host: '127.0.0.1', port }, () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      if (answers(data) >= count) {
        socket.destroy();
        resolve(data);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed after ${answers(data)} answers`)));
  });
}

/** A logger whose JSON lines land in `lines`, and fresh metrics. */
function capture(): { lines: Array<Record<string, unknown>>; logger: Logger; metrics: ReturnType<typeof createMetrics> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: pino({ level: 'info' }, sink), metrics: createMetrics({ defaultMetrics: false }) };
}

describe('a codec fault, the same on every frontend', () => {
  for (const row of ROWS) {
    it(`${row.frontend}: answers the requests before the fault in order, logs once, counts ${row.kind} once, closes that connection only`, async () => {
      const { lines, logger, metrics } = capture();
      const server = await row.start(logger, metrics);
      servers.push(server);
      // What the two requests get on a clean connection: the faulty one must get exactly this.
      const clean = await ask(server.address, row.valid, row.answers, 2);
      const faulty = await exchange(server.address, Buffer.concat([row.valid, row.bad, row.valid]));
      assert.equal(row.answers(faulty), 2);
      assert.deepEqual(faulty, clean);
      const { values } = await metrics.protocolErrors.get();
      const counted = values.filter((v) => v.labels['frontend'] === row.frontend && v.value > 0);
      assert.deepEqual(
        counted.map((v) => [v.labels['kind'], v.value]),
        [[row.kind, 1]],
      );
      assert.equal(lines.filter((l) => l['kind'] === row.kind).length, 1);
      // The listener goes on.
      await ask(server.address, row.valid, row.answers, 2);
    });
  }
});

describe('a frontend handler that throws', () => {
  it('socketmap: a lookup that throws closes that connection only, logged as an error, counted handler_failed', async () => {
    class BrokenTables extends SocketmapTables {
      override lookup(...args: Parameters<SocketmapTables['lookup']>): ReturnType<SocketmapTables['lookup']> {
        if (args[1] === 'boom.example') throw new Error('lookup exploded');
        return super.lookup(...args);
      }
    }
    const { lines, logger, metrics } = capture();
    const server = await startSocketmapServer('127.0.0.1:0', {
      ...LISTENER_DEFAULTS.socketmap,
      logger,
      metrics,
      tables: new BrokenTables({ tlsPolicy: 'secure', transport: 'smtp:' }),
      currentIndex: () => null,
    });
    servers.push(server);
    const got = await exchange(server.address, encodeSocketmapRequest('mssante-domain', 'boom.example'));
    assert.equal(got.length, 0);
    const { values } = await metrics.protocolErrors.get();
    assert.equal(values.find((v) => v.labels['kind'] === 'handler_failed')?.value, 1);
    assert.ok(lines.some((l) => l['level'] === 50 && /connection failed, closed/.test(String(l['msg']))));
    await ask(server.address, encodeSocketmapRequest('mssante-domain', 'fine.example'), socketmapAnswers, 1);
  });
});
