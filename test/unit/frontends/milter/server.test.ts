import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import {
  SMFIC,
  SMFIF,
  SMFIM,
  SMFIP,
  encodeConnect,
  encodeHelo,
  encodeMacro,
  encodeMail,
  encodeOptneg,
  encodeRaw,
  encodeRcpt,
} from '../../../../src/frontends/milter/codec.js';
import { REQUESTED_MACROS, canonicalMacroName, negotiate, senderAddress } from '../../../../src/frontends/milter/session.js';
import type { ListenerHandle } from '../../../../src/net/stream-server.js';
import {
  startMilterServer,
  type MilterServerOptions,
  type MilterTransaction,
  type MilterVerdict,
} from '../../../../src/frontends/milter/server.js';
import { createMetrics, type Metrics } from '../../../../src/observe/metrics.js';
import { REASONS, replyText } from '../../../../src/trust/reasons.js';
import { MilterTestClient, type ReplyPacket } from '../../../support/miltertest.js';
import { LISTENER_DEFAULTS } from '../../../../src/listener-defaults.js';

/** Everything a Postfix 3.7 (milter_protocol = 6) and a Sendmail 8.14+ MTA offer. */
const ALL_ACTIONS = 0x1ff;
const ALL_PROTOCOL_V6 = 0x1fffff;
/** What a protocol-2 MTA can skip: NOCONNECT..NOEOH. */
const ALL_PROTOCOL_V2 = 0x7f;

const servers: ListenerHandle[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close(100)));
});

interface Harness {
  readonly server: ListenerHandle;
  readonly metrics: Metrics;
  readonly seen: MilterTransaction[];
  readonly logs: () => Array<Record<string, unknown>>;
}

/** Rejects `reject@...` senders with the reason text, tempfails `boom@...` by throwing, passes the rest. */
function policy(t: MilterTransaction): MilterVerdict {
  if (t.sender.startsWith('boom@')) throw new Error('handler exploded');
  if (t.sender.startsWith('badcode@')) return { action: 'reply', smtpCode: '250', text: '2.0.0 not a refusal' };
  if (t.sender.startsWith('reject@')) {
    const r = REASONS.sender_domain_not_listed;
    return { action: 'reply', smtpCode: r.smtpCode, text: `${replyText(r)} (seq ${t.macros.get('i') ?? '-'}, 100%)` };
  }
  return { action: 'continue' };
}

async function start(options: Partial<MilterServerOptions> = {}, listen = '127.0.0.1:0'): Promise<Harness> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(
        ...String(chunk)
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  const seen: MilterTransaction[] = [];
  const server = await startMilterServer(listen, {
    ...LISTENER_DEFAULTS.milter,
    logger: pino({ level: 'debug' }, sink),
    metrics,
    onMailFrom: (t) => {
      seen.push(t);
      return policy(t);
    },
    ...options,
  });
  servers.push(server);
  return { server, metrics, seen, logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function counter(
  metrics: Metrics,
  name: 'protocolErrors' | 'connectionsRejected',
  labels: Record<string, string>,
): Promise<number> {
  const { values } = await metrics[name].get();
  const hit = values.find((v) => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val));
  return hit?.value ?? 0;
}

async function gauge(metrics: Metrics): Promise<number> {
  const { values } = await metrics.connectionsActive.get();
  return values.find((v) => v.labels.frontend === 'milter')?.value ?? -1;
}

interface OptnegAnswer {
  version: number;
  actions: number;
  protocol: number;
  symlists: Array<{ stage: number; names: string[] }>;
}

function parseOptneg(reply: ReplyPacket): OptnegAnswer {
  assert.equal(reply.command, 'O');
  const d = reply.data;
  const symlists: OptnegAnswer['symlists'] = [];
  let pos = 12;
  while (pos < d.length) {
    const stage = d.readUInt32BE(pos);
    const nul = d.indexOf(0, pos + 4);
    symlists.push({ stage, names: d.toString('latin1', pos + 4, nul).split(' ') });
    pos = nul + 1;
  }
  return { version: d.readUInt32BE(0), actions: d.readUInt32BE(4), protocol: d.readUInt32BE(8), symlists };
}

function replyLine(reply: ReplyPacket): string {
  assert.equal(reply.command, 'y', 'a REPLYCODE');
  assert.equal(reply.data[reply.data.length - 1], 0, 'NUL-terminated');
  return reply.data.subarray(0, -1).toString('latin1');
}

async function negotiated(
  h: Harness,
  version = 6,
  protocol = ALL_PROTOCOL_V6,
): Promise<{ client: MilterTestClient; answer: OptnegAnswer }> {
  const client = await MilterTestClient.connect(h.server.address);
  client.send(encodeOptneg(version, ALL_ACTIONS, protocol));
  return { client, answer: parseOptneg(await client.readPacket()) };
}

const POSTFIX_TLS_HELO: Array<[string, string]> = [
  ['{tls_version}', 'TLSv1.3'],
  ['{cipher}', 'TLS_AES_256_GCM_SHA384'],
  ['{cipher_bits}', '256'],
  ['{cert_subject}', 'mx.ch-exemple.fr'],
  ['{cert_issuer}', 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'],
];

describe('milter negotiation', () => {
  it('answers a version 6 MTA with 6, only the events needed, no-reply for CONNECT/HELO, and macro lists', () => {
    const answer = negotiate({ version: 6, actions: ALL_ACTIONS, protocol: ALL_PROTOCOL_V6 });
    assert.ok(answer !== null);
    assert.equal(answer.version, 6);
    assert.equal(answer.actions, SMFIF.SETSYMLIST);
    const expected =
      SMFIP.NORCPT | SMFIP.NOBODY | SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NODATA | SMFIP.NOUNKNOWN | SMFIP.NR_CONN | SMFIP.NR_HELO;
    assert.equal(answer.protocol, expected);
    assert.equal(
      answer.protocol & (SMFIP.NOCONNECT | SMFIP.NOHELO | SMFIP.NOMAIL | SMFIP.NR_MAIL),
      0,
      'CONNECT, HELO and MAIL are wanted, MAIL is answered',
    );
    assert.deepEqual(answer.symlists, REQUESTED_MACROS);
  });

  it('asks a version 2 MTA only for flags it offered, without macro lists', () => {
    const answer = negotiate({ version: 2, actions: 0x3f, protocol: ALL_PROTOCOL_V2 });
    assert.deepEqual(answer, {
      version: 2,
      actions: 0,
      protocol: SMFIP.NORCPT | SMFIP.NOBODY | SMFIP.NOHDRS | SMFIP.NOEOH,
      symlists: [],
    });
  });

  it('caps the version at 6, and needs SMFIF_SETSYMLIST offered to send macro lists', () => {
    assert.equal(negotiate({ version: 8, actions: 0, protocol: 0 })?.version, 6);
    assert.deepEqual(negotiate({ version: 6, actions: 0x3f, protocol: 0 })?.symlists, []);
    assert.equal(negotiate({ version: 1, actions: 0, protocol: 0 }), null);
  });

  it('gives the v6 answer on the wire, with SETSYMLIST lists for HELO and MAIL', async () => {
    const h = await start();
    const { client, answer } = await negotiated(h);
    assert.equal(answer.version, 6);
    assert.equal(answer.actions, SMFIF.SETSYMLIST);
    assert.equal(answer.protocol, negotiate({ version: 6, actions: ALL_ACTIONS, protocol: ALL_PROTOCOL_V6 })!.protocol);
    const helo = answer.symlists.find((l) => l.stage === SMFIM.HELO);
    const mail = answer.symlists.find((l) => l.stage === SMFIM.ENVFROM);
    for (const name of ['{cert_subject}', '{cert_issuer}', '{verify}', '{tls_version}', '{cipher}', '{cipher_bits}']) {
      assert.ok(helo?.names.includes(name), `HELO list has ${name}`);
    }
    for (const name of ['{mail_addr}', 'i', '{auth_authen}']) assert.ok(mail?.names.includes(name), `MAIL list has ${name}`);
    client.destroy();
  });

  it('gives the bare v2 answer on the wire', async () => {
    const h = await start();
    const { client, answer } = await negotiated(h, 2, ALL_PROTOCOL_V2);
    assert.deepEqual(answer, {
      version: 2,
      actions: 0,
      protocol: SMFIP.NORCPT | SMFIP.NOBODY | SMFIP.NOHDRS | SMFIP.NOEOH,
      symlists: [],
    });
    client.destroy();
  });

  it('closes a connection whose MTA speaks a version below 2', async () => {
    const h = await start();
    const client = await MilterTestClient.connect(h.server.address);
    client.send(encodeOptneg(1, 0, 0));
    await client.closed();
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'unsupported_version' }), 1);
  });
});

describe('milter session', () => {
  it('runs a Postfix session: macros reach onMailFrom, replies are REPLYCODE or CONTINUE, ABORT resets the message', async () => {
    const h = await start();
    const { client } = await negotiated(h);
    client.send(
      encodeMacro('C', [
        ['j', 'mx.chu-exemple.fr'],
        ['{daemon_name}', 'mx.chu-exemple.fr'],
      ]),
      encodeConnect('mx.ch-exemple.fr', 'inet', 41822, '192.0.2.25'), // NR_CONN: no reply
      encodeMacro('H', POSTFIX_TLS_HELO),
      encodeHelo('mx.ch-exemple.fr'), // NR_HELO: no reply
      encodeMacro('M', [
        ['i', 'A1'],
        ['{mail_addr}', 'reject@ch-exemple.mssante.fr'],
        ['{auth_authen}', ''],
      ]),
      encodeMail(['<reject@ch-exemple.mssante.fr>', 'SIZE=1000']),
    );
    const first = replyLine(await client.readPacket());
    assert.equal(first, `550 ${replyText(REASONS.sender_domain_not_listed)} (seq A1, 100%%)`);

    // Postfix aborts after a refusal; the next MAIL carries its own macros only.
    client.send(encodeRaw(SMFIC.ABORT), encodeMacro('M', [['i', 'A2']]), encodeMail(['<>']));
    assert.equal((await client.readPacket()).command, 'c');
    assert.equal(client.pendingBytes, 0, 'ABORT and MACRO got no reply');

    const [t1, t2] = h.seen;
    assert.ok(t1 !== undefined && t2 !== undefined);
    assert.equal(t1.sender, 'reject@ch-exemple.mssante.fr');
    assert.equal(t1.clientAddress, '192.0.2.25');
    assert.equal(t1.clientName, 'mx.ch-exemple.fr');
    assert.equal(t1.helo, 'mx.ch-exemple.fr');
    // Only the macros the decision and the trace read are kept: `j` and `{daemon_name}` are dropped.
    assert.deepEqual(Object.fromEntries(t1.macros), {
      ...Object.fromEntries(POSTFIX_TLS_HELO),
      i: 'A1',
      '{mail_addr}': 'reject@ch-exemple.mssante.fr',
      '{auth_authen}': '',
    });
    assert.equal(t2.sender, '', 'the null sender');
    assert.equal(t2.macros.get('{cert_subject}'), 'mx.ch-exemple.fr', 'HELO macros live for the connection');
    assert.equal(t2.macros.get('i'), 'A2');
    assert.equal(t2.macros.has('{mail_addr}'), false, 'MAIL macros of the aborted message are gone');
    assert.equal(t1.connectionId, t2.connectionId);

    // The message goes on to its end, then a second message on the same connection.
    client.send(encodeRaw(SMFIC.BODYEOB));
    assert.equal((await client.readPacket()).command, 'c');
    client.send(
      encodeMacro('M', [
        ['i', 'A3'],
        ['{mail_addr}', 'dr.martin@ch-exemple.mssante.fr'],
      ]),
      encodeMail(['<dr.martin@ch-exemple.mssante.fr>']),
    );
    assert.equal((await client.readPacket()).command, 'c');
    assert.equal(h.seen[2]?.sender, 'dr.martin@ch-exemple.mssante.fr');
    assert.equal(h.seen[2]?.macros.get('i'), 'A3');

    client.send(encodeRaw(SMFIC.QUIT));
    await client.closed();
    assert.equal(client.pendingBytes, 0, 'QUIT is not answered');
  });

  it('answers CONNECT and HELO when the MTA cannot skip the replies', async () => {
    const h = await start();
    const { client, answer } = await negotiated(h, 6, ALL_PROTOCOL_V6 & ~(SMFIP.NR_CONN | SMFIP.NR_HELO));
    assert.equal(answer.protocol & (SMFIP.NR_CONN | SMFIP.NR_HELO), 0);
    client.send(encodeConnect('h', 'inet', 1, '192.0.2.1'));
    assert.equal((await client.readPacket()).command, 'c');
    client.send(encodeHelo('h'));
    assert.equal((await client.readPacket()).command, 'c');
    client.destroy();
  });

  it('answers CONTINUE, in order, to every event an old MTA sends anyway', async () => {
    const h = await start();
    const { client } = await negotiated(h, 2, 0);
    client.send(
      encodeConnect('h', 'inet', 1, '192.0.2.1'),
      encodeHelo('h'),
      encodeMail(['<a@b.example>']),
      encodeRcpt(['<c@d.example>']),
      encodeRaw(SMFIC.DATA),
      encodeRaw(SMFIC.HEADER, Buffer.from('Subject\0x\0')),
      encodeRaw(SMFIC.EOH),
      encodeRaw(SMFIC.BODY, Buffer.from('body')),
      encodeRaw(SMFIC.UNKNOWN, Buffer.from('XFOO\0')),
      encodeRaw(SMFIC.BODYEOB),
      encodeMail(['<reject@b.example>']),
    );
    for (let i = 0; i < 10; i++) assert.equal((await client.readPacket()).command, 'c', `reply ${i}`);
    assert.match(replyLine(await client.readPacket()), /^550 5\.7\.1 /);
    client.destroy();
  });

  it('keeps replies in command order when MAILs are pipelined in one write', async () => {
    const h = await start();
    const { client } = await negotiated(h);
    const senders = ['<a@x.fr>', '<reject@x.fr>', '<b@x.fr>', '<reject@y.fr>', '<>'];
    client.send(...senders.flatMap((s, i) => [encodeMacro('M', [['i', `Q${i}`]]), encodeMail([s]), encodeRaw(SMFIC.ABORT)]));
    const got: string[] = [];
    for (let i = 0; i < senders.length; i++) {
      const reply = await client.readPacket();
      got.push(reply.command === 'c' ? 'continue' : replyLine(reply).replace(/^.*\(seq (Q\d).*$/, '$1'));
    }
    assert.deepEqual(got, ['continue', 'Q1', 'continue', 'Q3', 'continue']);
    client.destroy();
  });

  it('answers 451 internal_error when the handler throws or returns an unusable reply', async () => {
    const h = await start();
    const { client } = await negotiated(h);
    const expected = `451 ${replyText(REASONS.internal_error)}`;
    client.send(encodeMail(['<boom@x.fr>']));
    assert.equal(replyLine(await client.readPacket()), expected);
    client.send(encodeRaw(SMFIC.ABORT), encodeMail(['<badcode@x.fr>']));
    assert.equal(replyLine(await client.readPacket()), expected);
    assert.ok(
      h.logs().some((l) => l.level === 50 && l.conn !== undefined),
      'an error log line',
    );
    client.destroy();
  });

  it('starts afresh after QUIT_NC: no macro, client or HELO of the previous session', async () => {
    const h = await start();
    const { client } = await negotiated(h);
    client.send(
      encodeMacro('C', [['j', 'one']]),
      encodeConnect('first.example', 'inet', 1, '192.0.2.1'),
      encodeMacro('H', POSTFIX_TLS_HELO),
      encodeHelo('first.example'),
      encodeMail(['<a@x.fr>']),
    );
    assert.equal((await client.readPacket()).command, 'c');
    client.send(
      encodeRaw(SMFIC.BODYEOB),
      encodeRaw(SMFIC.QUIT_NC),
      encodeConnect('second.example', 'inet6', 2, '2001:db8::2'),
      encodeMail(['<b@y.fr>']),
    );
    assert.equal((await client.readPacket()).command, 'c', 'end of message');
    assert.equal((await client.readPacket()).command, 'c', 'MAIL of the next session');
    const t = h.seen[1];
    assert.ok(t !== undefined);
    assert.equal(t.clientAddress, '2001:db8::2');
    assert.equal(t.clientName, 'second.example');
    assert.equal(t.helo, null);
    assert.equal(t.macros.size, 0);
    client.destroy();
  });

  it('normalises macro names and MAIL FROM arguments', () => {
    assert.equal(canonicalMacroName('cert_subject'), '{cert_subject}');
    assert.equal(canonicalMacroName('{verify}'), '{verify}');
    assert.equal(canonicalMacroName('i'), 'i');
    assert.equal(senderAddress('<a@b.fr>'), 'a@b.fr');
    assert.equal(senderAddress('<>'), '');
    assert.equal(senderAddress('< a@b.fr >'), 'a@b.fr');
    assert.equal(senderAddress('<@relay.example,@r2.example:a@b.fr>'), 'a@b.fr');
    assert.equal(senderAddress('a@b.fr'), 'a@b.fr');
  });

  it('stores macros sent without braces under their braced name', async () => {
    const h = await start();
    const { client } = await negotiated(h);
    client.send(
      encodeMacro('H', [
        ['cert_subject', 'mx.x.fr'],
        ['{verify}', 'OK'],
      ]),
      encodeHelo('h'),
      encodeMail(['<a@x.fr>']),
    );
    await client.readPacket();
    assert.equal(h.seen[0]?.macros.get('{cert_subject}'), 'mx.x.fr');
    client.destroy();
  });
});

describe('milter protocol errors and limits', () => {
  it('closes a connection that sends garbage, counts and logs it, and keeps answering the others', async () => {
    const h = await start();
    const { client: good } = await negotiated(h);
    const { client: bad } = await negotiated(h);
    bad.send(Buffer.from([0, 0, 0, 3, 0x7a, 1, 2]));
    await bad.closed();
    good.send(encodeMail(['<a@x.fr>']));
    assert.equal((await good.readPacket()).command, 'c');
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'unknown_command' }), 1);
    const warn = h.logs().find((l) => l.level === 40 && l.kind === 'unknown_command');
    assert.ok(warn !== undefined, 'a structured warn line');
    assert.equal(warn.command, 'z');
    good.destroy();
  });

  it('closes a connection on an oversize packet, before its data arrives', async () => {
    const h = await start({ maxPacketBytes: 1000 });
    const { client } = await negotiated(h);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(1001, 0);
    header[4] = SMFIC.BODY;
    client.send(header);
    await client.closed();
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'packet_too_large' }), 1);
  });

  it('accepts a packet of exactly maxPacketBytes', async () => {
    const h = await start({ maxPacketBytes: 1000 });
    const { client } = await negotiated(h, 2, 0);
    client.send(encodeRaw(SMFIC.BODY, Buffer.alloc(999)));
    assert.equal((await client.readPacket()).command, 'c');
    client.destroy();
  });

  it('closes a connection on a malformed command', async () => {
    const h = await start();
    const { client } = await negotiated(h);
    client.send(encodeRaw(SMFIC.HELO, Buffer.from('no-nul')));
    await client.closed();
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'malformed' }), 1);
  });

  it('closes a connection whose first command is not OPTNEG', async () => {
    const h = await start();
    const client = await MilterTestClient.connect(h.server.address);
    client.send(encodeMail(['<a@x.fr>']));
    await client.closed();
    assert.equal(client.pendingBytes, 0);
    assert.equal(h.seen.length, 0);
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'unexpected_command' }), 1);
  });

  it('refuses connections beyond maxConnections and counts them', async () => {
    const h = await start({ maxConnections: 1 });
    const { client: first } = await negotiated(h);
    const second = await MilterTestClient.connect(h.server.address);
    await second.closed();
    assert.equal(await counter(h.metrics, 'connectionsRejected', { frontend: 'milter' }), 1);
    first.send(encodeMail(['<a@x.fr>']));
    assert.equal((await first.readPacket()).command, 'c');
    assert.equal(await gauge(h.metrics), 1);
    first.destroy();
  });

  it('closes a connection idle for idleTimeoutMs', async () => {
    const h = await start({ idleTimeoutMs: 100, packetTimeoutMs: 100 });
    const { client } = await negotiated(h);
    await client.closed();
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'idle_timeout' }), 1);
  });

  it('closes a connection whose kept macros exceed maxConnectionBytes, and keeps answering the others', async () => {
    const h = await start({ maxPacketBytes: 2000, maxConnectionBytes: 4000 });
    const { client: good } = await negotiated(h);
    const { client: greedy } = await negotiated(h);
    // Each costs 2 × 1514 + 64 = 3092 bytes kept: one fits beside a 2004-byte packet buffer, two do not.
    greedy.send(encodeMacro('H', [['{cert_subject}', 'x'.repeat(1500)]]), encodeHelo('h'), encodeMail(['<a@x.fr>']));
    assert.equal((await greedy.readPacket()).command, 'c', 'within the budget: answered');
    greedy.send(encodeMacro('M', [['{mail_addr}', 'y'.repeat(1500)]]));
    await greedy.closed();
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'connection_budget_exceeded' }), 1);
    const warn = h.logs().find((l) => l.kind === 'connection_budget_exceeded');
    assert.ok(
      warn !== undefined && typeof warn.heldBytes === 'number' && warn.heldBytes > 4000,
      'a structured warn line with the bytes held',
    );
    good.send(encodeMail(['<a@x.fr>']));
    assert.equal((await good.readPacket()).command, 'c');
    good.destroy();
  });

  it('refuses a maxConnectionBytes that cannot hold one packet', async () => {
    await assert.rejects(start({ maxPacketBytes: 2000, maxConnectionBytes: 2003 }), /maxConnectionBytes/);
  });

  it('drops macros of stages the decision does not read, counts them, and goes on', async () => {
    const h = await start();
    const { client } = await negotiated(h);
    client.send(
      encodeMacro('E', [['{msg_id}', '<1@x.fr>']]),
      encodeMacro('R', [['{rcpt_addr}', 'b@y.fr']]),
      encodeMail(['<a@x.fr>']),
    );
    assert.equal((await client.readPacket()).command, 'c');
    assert.equal(await counter(h.metrics, 'protocolErrors', { frontend: 'milter', kind: 'macro_stage_ignored' }), 2);
    assert.deepEqual([...(h.seen[0]?.macros.keys() ?? [])], []);
    client.destroy();
  });

  it('derives its defaults from the MTA: idle beyond Postfix milter_content_timeout (300 s), packets fit a 64 KiB body chunk', () => {
    const d = LISTENER_DEFAULTS.milter;
    // Postfix is silent towards a Milter while the client sends RCPTs and the body: an hour, not 330 s.
    assert.ok(d.idleTimeoutMs >= 3_600_000);
    // A packet begun is written whole by the MTA: the policy side's 110 s (Postfix waits 100 s).
    assert.ok(d.packetTimeoutMs > 100_000 && d.packetTimeoutMs < d.idleTimeoutMs);
    assert.ok(d.maxPacketBytes >= 65_535 + 1);
    assert.ok(d.maxConnectionBytes >= d.maxPacketBytes + 4);
    assert.equal(d.maxConnections, 1000);
  });
});

describe('milter life cycle', () => {
  it('close() stops accepting, ends connections between sessions, destroys the rest at the deadline', async () => {
    const h = await start();
    const { client: inSession } = await negotiated(h);
    inSession.send(encodeConnect('h', 'inet', 1, '192.0.2.1'));
    const { client: idle } = await negotiated(h);
    idle.send(encodeConnect('h', 'inet', 1, '192.0.2.1'), encodeRaw(SMFIC.QUIT_NC), encodeMail(['<a@x.fr>']));
    // The MAIL before close is answered: the QUIT_NC was processed.
    assert.equal((await idle.readPacket()).command, 'c');
    // An OPTNEG after the QUIT_NC is answered: the QUIT_NC has been processed.
    idle.send(encodeRaw(SMFIC.BODYEOB), encodeRaw(SMFIC.QUIT_NC), encodeOptneg(6, ALL_ACTIONS, ALL_PROTOCOL_V6));
    assert.equal((await idle.readPacket()).command, 'c');
    assert.equal((await idle.readPacket()).command, 'O');
    const closing = h.server.close(1000);
    await idle.closed();
    // Still in its SMTP session: served while draining, until the deadline.
    inSession.send(encodeMail(['<a@x.fr>']));
    assert.equal((await inSession.readPacket()).command, 'c');
    await closing;
    await inSession.closed();
    assert.equal(await gauge(h.metrics), 0);
    await assert.rejects(MilterTestClient.connect(h.server.address));
  });

  it('listens on a unix socket and removes it on close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'milter-'));
    try {
      const path = join(dir, 'milter.sock');
      const h = await start({}, `unix:${path}`);
      assert.equal(h.server.address, `unix:${path}`);
      const { client } = await negotiated(h);
      client.send(encodeConnect('h', 'unix', 0, path), encodeMail(['<a@x.fr>']));
      assert.equal((await client.readPacket()).command, 'c');
      assert.equal(h.seen[0]?.clientAddress, path);
      client.destroy();
      await h.server.close(100);
      assert.equal(existsSync(path), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports the real port when asked for port 0', async () => {
    const h = await start();
    assert.match(h.server.address, /^127\.0\.0\.1:[1-9][0-9]*$/);
    const socket = net.connect({ host: '127.0.0.1', port: Number(h.server.address.split(':')[1]) });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    socket.destroy();
  });
});
