/**
 * The listener skeleton on its own, with a toy line protocol (`line\n` → `echo:line\n`; `bad` is a
 * codec fault, `crash` a decoder bug, `boom` a bug while answering; `last` answers a large farewell
 * and fails after flushing it): byte budget, request and idle timers, the one codec-fault behaviour,
 * guarded session calls, connection limit, draining close.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { startStreamServer, type ListenerHandle, type StreamLimits, type StreamSession } from '../../../src/net/stream-server.js';
import { createMetrics, type Metrics } from '../../../src/observe/metrics.js';

const servers: ListenerHandle[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close(100)));
});

/** Larger than a socket buffer: it cannot all leave in the write() call itself. */
const FAREWELL = Buffer.from(`bye:${'z'.repeat(4 * 1024 * 1024)}\n`, 'latin1');
const LIMITS: StreamLimits = {
  maxConnections: 10,
  idleTimeoutMs: 60_000,
  requestTimeoutMs: 60_000,
  maxConnectionBytes: 100,
  heapWatermarkPercent: 95,
};

/** The toy codec's fault: `bad` is malformed; the lines before it in the same chunk are completed. */
class ToyFault extends Error {
  constructor(
    readonly kind: 'bad_line',
    readonly completed: readonly string[],
  ) {
    super('bad line');
  }
}

/** Which session call throws (a bug in the frontend): `boom` in answer, or one of the hooks. */
type Throwing = 'createSession' | 'onIdleTimeout' | 'idle' | null;

async function start(limits: Partial<StreamLimits> = {}, throwing: Throwing = null) {
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l !== '') logs.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  const server = await startStreamServer('127.0.0.1:0', {
    frontend: 'policy',
    protocolErrorKinds: ['last_line', 'bad_line'],
    limits: { ...LIMITS, ...limits },
    logger: pino({ level: 'debug' }, sink),
    metrics,
    codecFault: (err) => (err instanceof ToyFault ? err : null),
    createSession: (conn): StreamSession<string> => {
      if (throwing === 'createSession') throw new Error('no session for you');
      let buffered = '';
      return {
        decode(chunk) {
          buffered += chunk.toString('latin1');
          const lines: string[] = [];
          for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            if (line === 'bad') throw new ToyFault('bad_line', lines);
            if (line === 'crash') throw new Error('decoder exploded');
            lines.push(line);
          }
          return lines;
        },
        answer(lines) {
          for (const line of lines) {
            if (line === 'boom') throw new Error('session exploded');
            if (line === 'last') {
              conn.write(FAREWELL);
              conn.fail('last_line', 'warn', {});
              return;
            }
            conn.write(Buffer.from(`echo:${line}\n`));
          }
        },
        pendingBytes: () => buffered.length,
        heldBytes: () => buffered.length,
        idle: () => {
          if (throwing === 'idle') throw new Error('idle exploded');
          return buffered.length === 0;
        },
        ...(throwing === 'onIdleTimeout'
          ? {
              onIdleTimeout: () => {
                throw new Error('idle hook exploded');
              },
            }
          : {}),
      };
    },
  });
  servers.push(server);
  return { server, metrics, logs };
}

async function counted(metrics: Metrics, kind: string): Promise<number> {
  const { values } = await metrics.protocolErrors.get();
  return values.find((v) => v.labels.kind === kind)?.value ?? 0;
}

class Client {
  data = '';
  readonly closed: Promise<void>;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => (this.data += d.toString('latin1')));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }
  static connect(address: string): Promise<Client> {
    const socket = net.connect({ host: '127.0.0.1', port: Number(address.split(':')[1]) });
    return new Promise((resolve, reject) => socket.once('connect', () => resolve(new Client(socket))).once('error', reject));
  }
  async until(text: string): Promise<void> {
    while (!this.data.includes(text)) {
      await Promise.race([new Promise((r) => this.socket.once('data', r)), this.closed]);
      if (this.socket.destroyed && !this.data.includes(text))
        throw new Error(`closed before ${JSON.stringify(text)}; got ${JSON.stringify(this.data)}`);
    }
  }
}

describe('stream server skeleton', () => {
  it('answers through the session, in order', async () => {
    const { server } = await start();
    const c = await Client.connect(server.address);
    c.socket.write('a\nb\nc');
    c.socket.write('\n');
    await c.until('echo:c\n');
    assert.equal(c.data, 'echo:a\necho:b\necho:c\n');
    c.socket.destroy();
  });

  it('closes a connection whose session holds more than maxConnectionBytes, counted, and serves the others', async () => {
    const { server, metrics, logs } = await start();
    const greedy = await Client.connect(server.address);
    const other = await Client.connect(server.address);
    greedy.socket.write('x'.repeat(60));
    greedy.socket.write('x'.repeat(60));
    await greedy.closed;
    assert.equal(await counted(metrics, 'connection_budget_exceeded'), 1);
    assert.ok(logs.some((l) => l.kind === 'connection_budget_exceeded' && l.heldBytes === 120 && l.maxConnectionBytes === 100));
    other.socket.write('still here\n');
    await other.until('echo:still here\n');
    other.socket.destroy();
  });

  it('cuts a request not completed within requestTimeoutMs (counted); an idle connection is closed uncounted', async () => {
    const { server, metrics, logs } = await start({ requestTimeoutMs: 100, idleTimeoutMs: 200 });
    const slow = await Client.connect(server.address);
    slow.socket.write('never ends');
    await slow.closed;
    assert.equal(await counted(metrics, 'request_timeout'), 1);
    const idle = await Client.connect(server.address);
    await idle.closed;
    assert.equal(await counted(metrics, 'request_timeout'), 1);
    assert.ok(logs.some((l) => /idle, closing/.test(String(l.msg))));
  });

  it('a codec fault: the lines completed before it are answered in order, then one log line, one count, that connection closed', async () => {
    const { server, metrics, logs } = await start();
    const bad = await Client.connect(server.address);
    const other = await Client.connect(server.address);
    bad.socket.write('a\nb\nbad\nc\n');
    await bad.closed;
    assert.equal(bad.data, 'echo:a\necho:b\n');
    assert.equal(await counted(metrics, 'bad_line'), 1);
    assert.equal(logs.filter((l) => l.kind === 'bad_line').length, 1);
    other.socket.write('still here\n');
    await other.until('echo:still here\n');
    other.socket.destroy();
  });

  for (const [what, send, throwing, limits] of [
    ['decode throws something other than a codec fault', 'crash\n', null, {}],
    ['answer throws', 'a\nboom\n', null, {}],
    ['createSession throws', 'a\n', 'createSession', {}],
    ['onIdleTimeout throws', '', 'onIdleTimeout', { idleTimeoutMs: 100 }],
  ] as const) {
    it(`guards every session call: ${what} closes that connection only, logged as an error, counted handler_failed`, async () => {
      const { server, metrics, logs } = await start(limits, throwing);
      const victim = await Client.connect(server.address);
      if (send !== '') victim.socket.write(send);
      await victim.closed;
      assert.equal(await counted(metrics, 'handler_failed'), 1);
      assert.ok(logs.some((l) => l.level === 50 && /connection failed, closed/.test(String(l.msg))));
      if (throwing === null) {
        const other = await Client.connect(server.address);
        other.socket.write('still here\n');
        await other.until('echo:still here\n');
        other.socket.destroy();
      }
    });
  }

  it('guards idle() during a drain: the throwing connection is closed and counted, the drain completes', async () => {
    const { server, metrics } = await start({}, 'idle');
    const c = await Client.connect(server.address);
    c.socket.write('a\n');
    await c.until('echo:a\n');
    await server.close(60_000);
    await c.closed;
    assert.equal(await counted(metrics, 'handler_failed'), 1);
  });

  it('a protocol error: what was written leaves whole, then the connection closes, counted once', async () => {
    const { server, metrics } = await start();
    const c = await Client.connect(server.address);
    c.socket.write('a\nlast\n');
    await c.closed;
    assert.equal(c.data.length, 'echo:a\n'.length + FAREWELL.length);
    assert.ok(c.data.startsWith('echo:a\nbye:zzz') && c.data.endsWith('z\n'));
    assert.equal(await counted(metrics, 'last_line'), 1);
  });

  it('refuses connections beyond maxConnections', async () => {
    const { server, metrics } = await start({ maxConnections: 1 });
    const first = await Client.connect(server.address);
    const second = await Client.connect(server.address);
    await second.closed;
    assert.equal((await metrics.connectionsRejected.get()).values.find((v) => v.labels.frontend === 'policy')?.value, 1);
    first.socket.write('ok\n');
    await first.until('echo:ok\n');
    first.socket.destroy();
  });

  it('close(): ends idle connections at once, a busy one once its request is answered, destroys the stuck at the deadline', async () => {
    const { server, logs } = await start();
    const idle = await Client.connect(server.address);
    const busy = await Client.connect(server.address);
    const stuck = await Client.connect(server.address);
    // Each first line's echo proves the server has read the unfinished request after it.
    busy.socket.write('x\nhalf');
    stuck.socket.write('y\nforever');
    idle.socket.write('z\n');
    await Promise.all([busy.until('echo:x\n'), stuck.until('echo:y\n'), idle.until('echo:z\n')]);
    const closing = server.close(1500);
    await idle.closed;
    busy.socket.write(' done\n');
    await busy.until('echo:half done\n');
    assert.equal(busy.data, 'echo:x\necho:half done\n');
    await busy.closed;
    await closing;
    await stuck.closed;
    assert.ok(logs.some((l) => /drain deadline reached/.test(String(l.msg))));
    await assert.rejects(Client.connect(server.address));
  });

  it('close(): a connection accepted but silent yet gets its first answer, then ends (a restart loses no question)', async () => {
    const { server, metrics } = await start();
    const fresh = await Client.connect(server.address);
    // Accepted by the server (not only queued by the kernel) before the close begins.
    for (;;) {
      const active = (await metrics.connectionsActive.get()).values.find((v) => v.labels.frontend === 'policy')?.value;
      if (active === 1) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const closing = server.close(60_000);
    // The MTA connected to ask: its question arrives after the close began, and is answered.
    fresh.socket.write('q\n');
    await fresh.until('echo:q\n');
    await fresh.closed;
    assert.equal(fresh.data, 'echo:q\n');
    await closing;
  });
});
