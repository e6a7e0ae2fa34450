/**
 * Protocol abuse on both frontends of one running daemon with small limits: random bytes, oversize
 * lines and packets, requests that never end, slowloris, connections beyond --max-connections,
 * connect-and-close storms, half-open sockets. Each abuse ends boundedly, with a log line and (for
 * protocol errors) a counted kind; a witness asking valid questions on its own connections, opened
 * first, is answered right all along.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeHelo, encodeMacro, encodeMail, encodeOptneg } from '../../../src/frontends/milter/codec.js';
import { MilterTestClient } from '../../support/miltertest.js';
import { encodeRequest } from '../../../src/frontends/policy/codec.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import {
  VALID,
  closedWithin,
  connectRaw,
  httpGet,
  isAlive,
  logRecords,
  metric,
  metricNow,
  milterAskOnce,
  milterMail,
  milterSession,
  milterTlsMacros,
  pseudoRandomBytes,
  scrape,
  startWitness,
  unsignedListFile,
  waitFor,
  type RawConnection,
} from '../../support/faults.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';

/** The limits under test, small so that the suite stays fast. */
const LIMITS = {
  maxConnections: 50,
  idleTimeoutS: 3,
  milterIdleTimeoutS: 3,
  requestTimeoutS: 2,
  maxLineBytes: 1024,
  maxRequestBytes: 4096,
  maxAttributes: 20,
  maxMilterPacketBytes: 2048,
} as const;

/** Longest any abuse may hold a connection: the largest timeout, plus slack for a loaded machine. */
const BOUND_MS = (Math.max(LIMITS.idleTimeoutS, LIMITS.milterIdleTimeoutS, LIMITS.requestTimeoutS) + 5) * 1000;

const VALID_REQUEST = Object.entries({
  request: 'smtpd_access_policy',
  protocol_state: 'RCPT',
  ...postfixRequest(VALID.cn, VALID.sender),
});

describe('protocol abuse on both frontends (running daemon, small limits)', { timeout: 120_000 }, () => {
  let d: DaemonHandle;
  let witness: Awaited<ReturnType<typeof startWitness>>;

  before(async () => {
    d = await startDaemon({
      whitelist: unsignedListFile(),
      milter: true,
      extraArgs: [
        '--max-connections',
        String(LIMITS.maxConnections),
        '--idle-timeout',
        String(LIMITS.idleTimeoutS),
        '--milter-idle-timeout',
        String(LIMITS.milterIdleTimeoutS),
        '--request-timeout',
        String(LIMITS.requestTimeoutS),
        '--max-line-bytes',
        String(LIMITS.maxLineBytes),
        '--max-request-bytes',
        String(LIMITS.maxRequestBytes),
        '--max-attributes',
        String(LIMITS.maxAttributes),
        '--max-milter-packet-bytes',
        String(LIMITS.maxMilterPacketBytes),
        '--log-level',
        'debug',
      ],
    });
    witness = await startWitness(d);
  });

  after(async () => {
    const report = await witness?.stop();
    await d?.stop();
    if (report !== undefined) assert.deepEqual(report.wrong, [], 'the witness was answered right all along');
  });

  /** After each abuse: the daemon lives, and the witness, on its own connections, is still answered right. */
  async function stillAnswering(): Promise<void> {
    assert.ok(isAlive(d.pid), 'the daemon is alive');
    const before = witness.snapshot();
    await waitFor('more witness answers', () => {
      const now = witness.snapshot();
      return now.policyAnswers > before.policyAnswers + 2 && now.milterAnswers > before.milterAnswers + 2;
    });
    assert.deepEqual(witness.snapshot().wrong, [], 'every witness answer was a pass');
    assert.equal(await askOnce(d.policyAddress, postfixRequest(VALID.cn, VALID.sender)), 'DUNNO');
    assert.equal(await milterAskOnce(d.milterAddress!, VALID.cn, VALID.sender), 'CONTINUE');
  }

  const errors = async (frontend: 'policy' | 'milter', kind?: string): Promise<number> =>
    metricNow(d, 'protocol_errors_total', kind === undefined ? { frontend } : { frontend, kind });

  /** Log records (this daemon's JSON lines) written from `from` on. */
  const logsSince = (from: number, msg: RegExp): Array<Record<string, unknown>> => logRecords({ logs: d.logs.slice(from) }, msg);

  it('random bytes: every connection is closed, each close is a counted protocol error or an idle timeout', async () => {
    const from = d.logs.length;
    const [policyErrors, milterErrors] = [await errors('policy'), await errors('milter')];
    const seeds = Array.from({ length: 30 }, (_, i) => 0x9e3779b9 + i * 7919);
    const conns = await Promise.all(
      seeds.flatMap(() => [
        connectRaw(d.policyAddress).then((c) => ({ c, frontend: 'policy' })),
        connectRaw(d.milterAddress!).then((c) => ({ c, frontend: 'milter' })),
      ]),
    );
    conns.forEach(({ c }, i) => c.socket.write(pseudoRandomBytes(seeds[i >> 1]!, 1 + ((seeds[i >> 1]! * 31) % 8192))));
    for (const { c, frontend } of conns) {
      await closedWithin(c, BOUND_MS, `${frontend} random bytes`);
      assert.equal(c.received().length, 0, `${frontend}: random bytes got no answer`);
    }
    // Policy: a protocol error (counted) or, for bytes that happen to end a line and stop, the idle timeout (logged).
    const accounted = async (): Promise<number> =>
      (await errors('policy')) - policyErrors + logsSince(from, /^policy connection idle/).length;
    await waitFor('every policy close accounted for', async () => (await accounted()) >= 30);
    assert.equal(await accounted(), 30, 'each policy close is accounted for, once');
    // Milter: every close is a counted protocol error, its idle timeout included.
    assert.equal((await errors('milter')) - milterErrors, 30, 'each milter close is counted');
    assert.ok(logsSince(from, /protocol error, connection closed/).length >= 30, 'and logged');
    await stillAnswering();
  });

  it('oversize lines, requests, attribute counts and packets are refused at the limit and answered just under it', async () => {
    const ask = async (attrs: Array<[string, string]>): Promise<RawConnection> => {
      const c = await connectRaw(d.policyAddress);
      c.socket.write(encodeRequest([...VALID_REQUEST, ...attrs]));
      return c;
    };
    const pad = (name: string, lineBytes: number): [string, string] => [name, 'A'.repeat(lineBytes - name.length - 1)];
    const refusedFor = async (kind: string, attrs: Array<[string, string]>): Promise<void> => {
      const before = await errors('policy', kind);
      const c = await ask(attrs);
      await closedWithin(c, BOUND_MS, kind);
      assert.equal(c.received().length, 0, `${kind}: no answer`);
      assert.equal(await errors('policy', kind), before + 1, `${kind} counted`);
    };
    const answered = async (what: string, attrs: Array<[string, string]>): Promise<void> => {
      const c = await ask(attrs);
      await waitFor(`the answer (${what})`, () => c.received().toString() === 'action=DUNNO\n\n' || c.isClosed());
      assert.equal(c.received().toString(), 'action=DUNNO\n\n', what);
      c.socket.destroy();
    };
    await answered('a line of exactly --max-line-bytes', [pad('pad', LIMITS.maxLineBytes)]);
    await refusedFor('line_too_long', [pad('pad', LIMITS.maxLineBytes + 1)]);
    const fillers = (n: number): Array<[string, string]> => Array.from({ length: n }, (_, i) => [`pad${i}`, 'x']);
    await answered('exactly --max-attributes attributes', fillers(LIMITS.maxAttributes - VALID_REQUEST.length));
    await refusedFor('too_many_attributes', fillers(LIMITS.maxAttributes - VALID_REQUEST.length + 1));
    await refusedFor('request_too_large', [pad('pad0', 1000), pad('pad1', 1000), pad('pad2', 1000), pad('pad3', 1000)]);

    // A 1 MiB line: cut after the limit, not buffered whole.
    const huge = await connectRaw(d.policyAddress);
    huge.socket.on('error', () => {});
    huge.socket.write(`sender=${'a'.repeat(1024 * 1024)}`);
    await closedWithin(huge, BOUND_MS, '1 MiB line');

    // Milter: a MACRO packet of exactly the limit is taken; one byte more is refused on its length field alone.
    const m = await milterSession(d.milterAddress!, VALID.cn);
    const macro = encodeMacro('M', [['{pad}', 'P'.repeat(LIMITS.maxMilterPacketBytes - 9)]]);
    assert.equal(macro.readUInt32BE(0), LIMITS.maxMilterPacketBytes, 'the packet is exactly at the limit');
    m.send(macro);
    assert.equal(await milterMail(m, VALID.sender), 'CONTINUE');
    m.destroy();
    const tooLarge = await errors('milter', 'packet_too_large');
    const big = await milterSession(d.milterAddress!, VALID.cn);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(LIMITS.maxMilterPacketBytes + 1);
    big.send(header);
    await big.closed();
    assert.equal(await errors('milter', 'packet_too_large'), tooLarge + 1);
    await stillAnswering();
  });

  it('a request that never ends is cut by --request-timeout (policy) and the packet timeout (milter)', async () => {
    const [policyTimeouts, milterTimeouts] = [
      await errors('policy', 'request_timeout'),
      await metricNow(d, 'protocol_errors_total', { frontend: 'milter' }),
    ];
    const p = await connectRaw(d.policyAddress);
    p.socket.write('request=smtpd_access_policy\nprotocol_state=RCPT\n');
    const m = await milterSession(d.milterAddress!, VALID.cn);
    const partial = encodeMacro('M', [['i', 'x'.repeat(200)]]);
    m.send(partial.subarray(0, 20));
    await closedWithin(p, BOUND_MS, 'policy request without its end');
    await Promise.race([m.closed(), sleep(BOUND_MS).then(() => assert.fail('milter partial packet not cut'))]);
    assert.equal(p.received().length, 0);
    assert.equal(await errors('policy', 'request_timeout'), policyTimeouts + 1);
    const samples = await scrape(d);
    assert.equal(
      metric(samples, 'protocol_errors_total', { frontend: 'milter' }),
      milterTimeouts + 1,
      'the milter cut is counted (request_timeout or idle_timeout)',
    );
    await stillAnswering();
  });

  it('slowloris (1 byte every 250 ms): the socket is never idle, the request timeout cuts it anyway', async () => {
    const from = d.logs.length;
    const [policyTimeouts, milterTimeouts] = [
      await errors('policy', 'request_timeout'),
      await errors('milter', 'request_timeout'),
    ];
    const p = await connectRaw(d.policyAddress);
    const m = await milterSession(d.milterAddress!, VALID.cn);
    const policyBytes = Buffer.from(`sender=${'a'.repeat(900)}`);
    const milterBytes = encodeMacro('M', [['{pad}', 'P'.repeat(1500)]]);
    let sent = 0;
    const drip = setInterval(() => {
      if (!p.isClosed()) p.socket.write(policyBytes.subarray(sent, sent + 1));
      if (!m.socket.destroyed) m.socket.write(milterBytes.subarray(sent, sent + 1));
      sent++;
    }, 250);
    try {
      await closedWithin(p, BOUND_MS, 'policy slowloris');
      await Promise.race([m.closed(), sleep(BOUND_MS).then(() => assert.fail('milter slowloris not cut'))]);
    } finally {
      clearInterval(drip);
    }
    assert.ok(sent < policyBytes.length && sent < milterBytes.length, 'cut while the bytes were still coming');
    assert.equal(await errors('policy', 'request_timeout'), policyTimeouts + 1, 'policy: request_timeout, not an idle close');
    assert.equal(await errors('milter', 'request_timeout'), milterTimeouts + 1, 'milter: request_timeout, not an idle close');
    assert.equal(logsSince(from, /idle/).length, 0, 'no idle timeout fired: the bytes kept the sockets busy');
    await stillAnswering();
  });

  it('connections beyond --max-connections are closed at once and counted; idle ones time out; a fresh one is answered', async () => {
    for (const frontend of ['policy', 'milter'] as const) {
      const address = frontend === 'policy' ? d.policyAddress : d.milterAddress!;
      await waitFor(
        `${frontend}: only the witness connected`,
        async () => (await metricNow(d, 'connections_active', { frontend })) === 1,
      );
      const rejected = await metricNow(d, 'connections_rejected_total', { frontend });
      const opened: RawConnection[] = [];
      for (let batch = 0; batch < 4; batch++)
        opened.push(...(await Promise.all(Array.from({ length: 50 }, () => connectRaw(address)))));
      // The witness holds one connection: 49 more fit, the 151 others are closed at once.
      await waitFor(
        `${frontend}: the excess counted`,
        async () => (await metricNow(d, 'connections_rejected_total', { frontend })) === rejected + 151,
      );
      assert.equal(await metricNow(d, 'connections_active', { frontend }), LIMITS.maxConnections);
      assert.ok(logRecords(d, /connection limit reached/).length >= 1, 'the refusal is logged (rate-limited)');
      // The idle ones are closed by the idle timeout; then there is room again.
      await Promise.all(opened.map((c) => closedWithin(c, BOUND_MS, `${frontend} idle connection`)));
      await waitFor(
        `${frontend}: only the witness left`,
        async () => (await metricNow(d, 'connections_active', { frontend })) === 1,
      );
    }
    await stillAnswering();
  });

  it('connect-and-close storms (1000 per frontend, FIN and RST): nothing leaks, nothing is miscounted', async () => {
    const [policyErrors, milterErrors] = [await errors('policy'), await errors('milter')];
    for (const address of [d.policyAddress, d.milterAddress!]) {
      for (let batch = 0; batch < 25; batch++) {
        const conns = await Promise.all(Array.from({ length: 40 }, () => connectRaw(address)));
        conns.forEach((c, i) => {
          c.socket.on('error', () => {});
          if (i % 2 === 0) c.socket.destroy();
          else c.socket.resetAndDestroy();
        });
        await Promise.all(conns.map((c) => c.closed));
      }
    }
    await waitFor('every stormed connection gone', async () => {
      const s = await scrape(d);
      return (
        metric(s, 'connections_active', { frontend: 'policy' }) === 1 &&
        metric(s, 'connections_active', { frontend: 'milter' }) === 1
      );
    });
    assert.equal(await errors('policy'), policyErrors, 'a connection closed before any byte is no protocol error');
    assert.equal(await errors('milter'), milterErrors);
    await stillAnswering();
  });

  it('hostile values (CR, LF, JSON, format strings) are answered and traced as one JSON line each, never as a label', async () => {
    const from = d.logs.length;
    const forged = '{"level":"fatal","event":"forged"}';
    const c = await connectRaw(d.policyAddress);
    // Written by hand: encodeRequest refuses a CR, Postfix's protocol does not (a CR before LF is dropped, any other kept).
    c.socket.write(`${VALID_REQUEST.map(([k, v]) => `${k}=${v}\n`).join('')}helo_name=evil\r${forged}\nclient_name=%s%n%x%%\n\n`);
    await waitFor('the policy answer', () => c.received().toString() === 'action=DUNNO\n\n');
    c.socket.destroy();
    // Milter values may even hold LF.
    const m = await MilterTestClient.connect(d.milterAddress!);
    m.send(encodeOptneg(6, 0x1ff, 0x1fffff));
    await m.readPacket();
    m.send(
      encodeMacro('H', milterTlsMacros(VALID.cn)),
      encodeHelo(`evil\n${forged}`),
      encodeMacro('M', [['i', `Q\n${forged}`]]),
      encodeMail([`<${VALID.sender}>`]),
    );
    assert.equal((await m.readPacket()).command, 'c');
    m.destroy();
    const traces = await waitFor('both traces', () => {
      const t = logsSince(from, /./).filter((r) => typeof r.helo === 'string' && String(r.helo).startsWith('evil'));
      return t.length === 2 ? t : null;
    });
    assert.deepEqual(
      traces.map((r) => r.helo).sort(),
      [`evil\n${forged}`, `evil\r${forged}`].sort(),
      'the values are kept as data',
    );
    for (const line of d.logs.slice(from)) {
      if (line.startsWith('stderr: ')) continue;
      const record = JSON.parse(line) as Record<string, unknown>;
      assert.notEqual(record.event, 'forged', 'no forged log line');
    }
    assert.ok(!(await httpGet(d, '/metrics')).text.includes('evil'), 'attacker text never becomes a metric label');
    await stillAnswering();
  });

  it('half-open sockets: each gets a bounded, logged end', async () => {
    const from = d.logs.length;
    const truncated = await errors('policy', 'truncated');
    // Exim's way: a whole request without its empty line, then FIN → answered, then closed.
    const exim = await connectRaw(d.policyAddress);
    exim.socket.end(encodeRequest(VALID_REQUEST).subarray(0, -1));
    assert.equal((await closedWithin(exim, BOUND_MS, 'exim-style')).serverEnded, true);
    assert.equal(exim.received().toString(), 'action=DUNNO\n\n');
    // Half a line (its name, no '=' yet), then FIN → truncated, no answer.
    const half = await connectRaw(d.policyAddress);
    half.socket.end('protocol_sta');
    await closedWithin(half, BOUND_MS, 'half a line');
    assert.equal(half.received().length, 0);
    assert.equal(await errors('policy', 'truncated'), truncated + 1);
    // FIN before any byte → closed quietly.
    const silent = await connectRaw(d.policyAddress);
    silent.socket.end();
    assert.equal((await closedWithin(silent, BOUND_MS, 'silent FIN')).serverEnded, true);

    // Milter: MAIL FROM then FIN → the answer, then closed; half a packet then FIN → closed.
    const m = await milterSession(d.milterAddress!, VALID.cn);
    m.socket.end(Buffer.concat([encodeMacro('M', [['i', 'HALF']]), encodeMail([`<${VALID.sender}>`])]));
    assert.equal((await m.readPacket()).command, 'c');
    await m.closed();
    const raw = await connectRaw(d.milterAddress!);
    raw.socket.end(encodeOptneg(6, 0x1ff, 0x1fffff).subarray(0, 7));
    assert.equal((await closedWithin(raw, BOUND_MS, 'milter half packet')).serverEnded, true);
    await waitFor('the close log lines', () => logsSince(from, /milter connection closed/).length >= 2);
    await stillAnswering();
  });
});
