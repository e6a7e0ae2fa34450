/**
 * Memory bounded by construction, on a running daemon: 1 000 hostile Milter connections (the
 * default --max-connections) each send the most a connection may make the daemon keep — a packet
 * of thousands of made-up macro names (CONNECT stage), a `{cert_subject}` as large as
 * --max-connection-bytes allows, macros for every stage the decision does not read, then a
 * largest packet left incomplete — and hold on. The daemon runs with a small V8 heap
 * (--max-old-space-size=256) that the old per-stage macro maps (~7 MB per connection) would blow.
 *
 * It must live, answer a policy request on the side (SECURITY.md states 1 s as the goal; the test
 * allows a generous deadline, the machine being shared), and keep its peak RSS under the bound
 * SECURITY.md states: RSS before the attack + connections × (--max-connection-bytes + per-socket
 * overhead) + GC headroom.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SMFIC, encodeMacro, encodeOptneg } from '../../../src/frontends/milter/codec.js';
import { LISTENER_DEFAULTS } from '../../../src/listener-defaults.js';
import { MACRO_ENTRY_COST } from '../../../src/frontends/milter/session.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { VALID, isAlive, metricNow, unsignedListFile, waitFor } from '../../support/faults.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';

const CONNECTIONS = 1000;
const CONNECTION_BYTES = LISTENER_DEFAULTS.milter.maxConnectionBytes;
const PACKET_BYTES = LISTENER_DEFAULTS.milter.maxPacketBytes;
/** What SECURITY.md allows per connection besides its budget: socket, stream and session objects. */
const PER_SOCKET_OVERHEAD = 16 * 1024;
/**
 * Young generation and not-yet-collected garbage of the decoding itself (SECURITY.md). With both
 * cores busy V8's concurrent marking lags: growth 150 MiB on a quiet machine, up to 214 under load.
 */
const GC_HEADROOM = 96 * 1024 * 1024;
const POLICY_DEADLINE_MS = 10_000;
const DROPPED_STAGES = ['R', 'T', 'E', 'N', 'L', 'B', 'U'];

/** A MACRO packet of `stage` just under the packet limit, made of short made-up names (none kept). */
function junkMacros(stage: string): Buffer {
  const macros: Array<[string, string]> = [];
  let size = 5 + 1;
  for (let i = 0; size + 16 < PACKET_BYTES; i++) {
    const pair: [string, string] = [`x${i}`, 'v'];
    macros.push(pair);
    size += pair[0].length + pair[1].length + 2;
  }
  return encodeMacro(stage, macros);
}

/** The one kept macro, as large as the budget allows beside one incomplete largest packet. */
function largestSubject(): Buffer {
  const room = CONNECTION_BYTES - (PACKET_BYTES + 4) - MACRO_ENTRY_COST - 2 * 64; // 64 chars for the MAIL macro
  const chars = Math.floor(room / 2) - '{cert_subject}'.length;
  return encodeMacro('H', [
    ['{cert_subject}', 'C'.repeat(chars)],
    ...Array.from({ length: 100 }, (_, i): [string, string] => [`y${i}`, 'v']),
  ]);
}

/** The header and all but one byte of a largest BODY packet: the daemon holds its buffer. */
function incompletePacket(): Buffer {
  const packet = Buffer.alloc(4 + PACKET_BYTES - 1);
  packet.writeUInt32BE(PACKET_BYTES, 0);
  packet[4] = SMFIC.BODY;
  return packet;
}

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m !== null, `${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

function connect(address: string): Promise<net.Socket> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function send(socket: net.Socket, chunks: readonly Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.write(Buffer.concat(chunks), (err) => (err ? reject(err) : resolve()));
  });
}

describe('memory under 1 000 hostile Milter connections', { timeout: 300_000 }, () => {
  let d: DaemonHandle;
  const sockets: net.Socket[] = [];

  before(async () => {
    d = await startDaemon({
      whitelist: unsignedListFile(),
      milter: true,
      // Long timers: the hostile connections must still be there when memory is measured.
      extraArgs: ['--milter-idle-timeout', '600', '--request-timeout', '600', '--log-level', 'warn'],
      env: { NODE_OPTIONS: '--max-old-space-size=256' },
    });
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await d?.stop();
  });

  it('lives, answers a policy request on the side, and keeps RSS under the stated bound', async () => {
    const rssBeforeKiB = statusKiB(d.pid, 'VmRSS');
    const t0 = Date.now();
    const payload = [
      encodeOptneg(6, 0x1ff, 0x1fffff),
      junkMacros('C'),
      largestSubject(),
      encodeMacro('M', [['i', 'Q'.repeat(20)]]), // costs 2 × 21 + 64 = 106 bytes, within the 128 left for it
      // Dropped whole whatever their size: one macro each is enough to show they are counted, not kept.
      ...DROPPED_STAGES.map((stage) =>
        encodeMacro(stage, [
          ['{cert_subject}', 'forged'],
          ['i', 'x'],
        ]),
      ),
      incompletePacket(),
    ];
    // In batches, so that the listen backlog never overflows on a loaded machine.
    for (let i = 0; i < CONNECTIONS; i += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, CONNECTIONS - i) }, () => connect(d.milterAddress!)));
      for (const s of batch) s.on('data', () => {}); // the OPTNEG answer
      sockets.push(...batch);
      await Promise.all(batch.map((s) => send(s, payload)));
    }
    const sentMs = Date.now() - t0;
    // Every connection's dropped stages are counted: the daemon has read them all.
    const outcome = await waitFor(
      'every hostile packet read',
      async () => {
        if (!isAlive(d.pid)) return 'died';
        return (
          (await metricNow(d, 'protocol_errors_total', { frontend: 'milter', kind: 'macro_stage_ignored' })) >=
            CONNECTIONS * DROPPED_STAGES.length && 'read'
        );
      },
      120_000,
      500,
    );
    assert.equal(
      outcome,
      'read',
      `the daemon died:\n${d.logs
        .filter((l) => l.startsWith('stderr:'))
        .slice(-8)
        .join('\n')}`,
    );
    assert.equal(
      await metricNow(d, 'connections_active', { frontend: 'milter' }),
      CONNECTIONS,
      'every hostile connection is held, none went over budget',
    );
    assert.equal(await metricNow(d, 'protocol_errors_total', { frontend: 'milter', kind: 'connection_budget_exceeded' }), 0);

    const started = Date.now();
    const answer = await Promise.race([
      askOnce(d.policyAddress, postfixRequest(VALID.cn, VALID.sender)),
      new Promise<string>((resolve) => setTimeout(() => resolve('no answer in time'), POLICY_DEADLINE_MS).unref()),
    ]);
    const latencyMs = Date.now() - started;
    assert.equal(answer, 'DUNNO');
    assert.ok(isAlive(d.pid), 'the daemon lives');

    const peakKiB = statusKiB(d.pid, 'VmHWM');
    const boundKiB = rssBeforeKiB + (CONNECTIONS * (CONNECTION_BYTES + PER_SOCKET_OVERHEAD) + GC_HEADROOM) / 1024;
    console.log(
      `# RSS before ${Math.round(rssBeforeKiB / 1024)} MiB, peak ${Math.round(peakKiB / 1024)} MiB, bound ${Math.round(boundKiB / 1024)} MiB; sent in ${sentMs} ms, read in ${started - t0} ms; policy answer in ${latencyMs} ms`,
    );
    assert.ok(peakKiB < boundKiB, `peak RSS ${peakKiB} KiB under the bound ${Math.round(boundKiB)} KiB`);
  });
});
