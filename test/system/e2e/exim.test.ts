/**
 * A real Exim (GnuTLS build, Debian) with deploy/exim/mssante-policyd.acl and mssante-tls.conf,
 * client certificates verified against a test CA, and swaks as the sending server.
 * First the ACL itself, against a recording responder: what Exim sends (TCP and unix socket, RCPT
 * and MAIL), and how each answer becomes an SMTP reply. Then the TLS profile. Last, the real
 * daemon and the MSSanté scenarios.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { freePort, startDaemon } from '../../support/daemon.js';
import { POLICY_ACTIONS } from '../../../src/trust/reasons.js';
import { fingerprintsFromRequest } from '../../../src/frontends/policy/facts.js';
import { eximOrSkip, probeExim, startExim, type RunningExim } from '../../support/exim.js';
import { operatorSubject, TestPki, type Issued } from '../../support/pki.js';
import { sendMail, type SendResult } from '../../support/swaks.js';
import { toolOrSkip } from '../../support/tools.js';
import { buildListXml } from '../../support/xmlsec.js';

const CA_SUBJECT = [
  ['C', 'FR'],
  ['O', 'ASIP-SANTE'],
  ['OU', '0002 187512751'],
  ['CN', 'TEST AC IGC-SANTE ELEMENTAIRE SERVEURS'],
] as const;

interface Pki {
  pki: TestPki;
  ca: Issued;
  server: Issued;
  /** Listed for operateur-a.test. */
  opA: Issued;
  /** Same CN as opA, another organisation: a different certificate. */
  opATwin: Issued;
  /** Chains to a CA Exim does not trust. */
  rogue: Issued;
  /** A second CA, trusted by Exim only in the --trusted-issuer-cn scenario. */
  otherCa: Issued;
  /** opA's exact subject, issued by otherCa. */
  opAOtherIssuer: Issued;
}

let shared: Pki | undefined;

/** One PKI for the whole file: RSA keys are the slow part. */
function makePki(): Pki {
  shared ??= createPki();
  return shared;
}

function createPki(): Pki {
  const pki = new TestPki();
  const ca = pki.createCa('ca', CA_SUBJECT);
  const other = pki.createCa('other-ca', [
    ['C', 'FR'],
    ['O', 'ROGUE'],
    ['CN', 'ROGUE CA'],
  ]);
  const otherCa = pki.createCa('second-ca', [
    ['C', 'FR'],
    ['O', 'AUTRE PKI'],
    ['CN', 'AC AUTRE SERVEURS'],
  ]);
  return {
    otherCa,
    opAOtherIssuer: pki.issue('op-a-other-issuer', operatorSubject('mx.operateur-a.test', 'OPERATEUR A'), otherCa, {
      usage: 'tls',
    }),
    pki,
    ca,
    server: pki.issue('server', operatorSubject('mx.exim.test', 'RECEIVER'), ca, { usage: 'tls', dnsNames: ['mx.exim.test'] }),
    opA: pki.issue('op-a', operatorSubject('mx.operateur-a.test', 'OPERATEUR A'), ca, { usage: 'tls' }),
    opATwin: pki.issue('op-a-twin', operatorSubject('mx.operateur-a.test', 'OPERATEUR PIRATE'), ca, { usage: 'tls' }),
    rogue: pki.issue('rogue', operatorSubject('mx.operateur-a.test', 'OPERATEUR A'), other, { usage: 'tls' }),
  };
}

/** Every attribute the deploy ACL sends ('' stands for the end-of-request check). */
const REQUEST_ATTRIBUTES = new Set([
  '',
  'request',
  'protocol_state',
  'protocol_name',
  'client_address',
  'client_port',
  'client_name',
  'helo_name',
  'sender',
  'recipient',
  'recipient_count',
  'queue_id',
  'encryption_protocol',
  'encryption_cipher',
  'encryption_keysize',
  'x_ccert_dn',
  'x_ccert_verified',
  'x_ccert_issuer_dn',
  'x_ccert_fingerprint',
  'instance',
]);

/** The certificate's SHA-256 over its DER, uppercase hex without colons (what `${sha256:$tls_in_peercert}` gives). */
function sha256Hex(cert: Issued): string {
  return new X509Certificate(readFileSync(cert.certPath)).fingerprint256.replace(/:/g, '');
}

/** GnuTLS (Exim's $tls_in_peerdn) writes the subject in certificate order, comma separated. */
function gnutlsDn(cert: Issued): string {
  return cert.subjectRfc2253.split(',').reverse().join(',');
}

interface Responder {
  readonly address: string;
  readonly requests: Array<Map<string, string>>;
  /** The next answers' action, or null to close without answering. */
  answer: string | null;
  close(): Promise<void>;
}

/** A throw-away policy server: records each request, answers `action=<answer>` at EOF. */
async function startResponder(unixPath?: string): Promise<Responder> {
  const sockets = new Set<Socket>();
  const responder = {
    address: '',
    requests: [] as Array<Map<string, string>>,
    answer: 'DUNNO' as string | null,
    close: async () => {},
  };
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let raw = '';
    socket.on('data', (d: Buffer) => {
      raw += d.toString('utf8');
    });
    socket.on('end', () => {
      const attrs = new Map<string, string>();
      attrs.set('', raw.endsWith('\n\n') ? 'ends-with-empty-line' : 'no-empty-line');
      for (const line of raw.split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) attrs.set(line.slice(0, eq), line.slice(eq + 1));
      }
      responder.requests.push(attrs);
      if (responder.answer === null) socket.end();
      else socket.end(`action=${responder.answer}\n\n`);
    });
  });
  if (unixPath !== undefined) {
    await new Promise<void>((r) => server.listen(unixPath, r));
    // Exim asks from its own user, Debian-exim.
    chmodSync(unixPath, 0o666);
    responder.address = unixPath;
  } else {
    const port = await freePort();
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    responder.address = `127.0.0.1:${port}`;
  }
  responder.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return responder;
}

/** One mail by swaks from a sending server, STARTTLS unless told otherwise. */
function send(port: number, from: string, to: string, cert?: Issued, tls = true): Promise<SendResult> {
  return sendMail({ port, from, to, tls, ehlo: 'client.exim.test', ...(cert ? { cert } : {}) });
}

/** Exim wraps long replies ("550-5.7.1 ..." lines, each a cut at a space): one line again. */
function unwrapped(reply: string): string {
  const lines = reply.split('\n');
  const head = /^(\d{3})[- ](\d\.\d{1,3}\.\d{1,3} )?/.exec(lines[0] ?? '');
  if (head === null) return reply;
  const words = lines.map((l) => l.replace(/^\d{3}[- ](\d\.\d{1,3}\.\d{1,3} )?/, ''));
  return `${head[1]} ${head[2] ?? ''}${words.join(' ')}`;
}

/** The server's reply to one command ('' when the session never got there). */
function reply(run: SendResult, command: 'MAIL' | 'RCPT' | '.'): string {
  return run.stages.find((s) => s.command === command)?.text ?? '';
}

function why(run: SendResult, exim: RunningExim): string {
  return `\n--- swaks\n${run.transcript}\n--- exim\n${exim.logs()}`;
}

describe('Exim with deploy/exim/mssante-policyd.acl, against a recording responder', () => {
  let bin: string | null = null;
  let p: Pki;
  // Left unset when before() skips or fails; after() stops only what started.
  let responder!: Responder;
  let exim!: RunningExim;

  before(async () => {
    bin = eximOrNull();
    if (bin === null) return;
    p = makePki();
    responder = await startResponder();
    exim = await startExim({ bin, policyAddress: responder.address, serverCert: p.server, ca: p.ca });
  });
  after(async () => {
    if (exim) await exim.stop();
    if (responder) await responder.close();
  });

  test('sends the policy request with the full DN, the verification flag and the TLS facts; DUNNO delivers', async (t) => {
    if (!ready(t, bin)) return;
    responder.answer = 'DUNNO';
    responder.requests.length = 0;
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.opA);
    assert.match(reply(run, 'RCPT'), /^250 /, why(run, exim));
    assert.match(reply(run, '.'), /^250 /, why(run, exim));
    const mail = await exim.waitForMail('bob@recv.test', run.testId);
    assert.match(mail, new RegExp(`^X-Mssante-Test-Id: ${run.testId}$`, 'm'));

    assert.equal(responder.requests.length, 1, 'one question per recipient');
    const req = responder.requests[0]!;
    assert.equal(req.get(''), 'ends-with-empty-line');
    assert.equal(req.get('request'), 'smtpd_access_policy');
    assert.equal(req.get('protocol_state'), 'RCPT');
    assert.equal(req.get('protocol_name'), 'ESMTP');
    assert.equal(req.get('client_address'), '127.0.0.1');
    assert.equal(req.get('helo_name'), 'client.exim.test');
    assert.equal(req.get('sender'), 'alice@operateur-a.test');
    assert.equal(req.get('recipient'), 'bob@recv.test');
    assert.match(req.get('encryption_protocol') ?? '', /^TLS1\.[23]$/);
    assert.notEqual(req.get('encryption_cipher') ?? '', '');
    assert.equal(req.get('x_ccert_verified'), '1');
    assert.equal(req.get('x_ccert_dn'), gnutlsDn(p.opA));
    assert.equal(req.get('x_ccert_issuer_dn'), gnutlsDn(p.ca));
    // The certificate's SHA-256 as openssl computes it, which the daemon parses as a fingerprint.
    assert.equal(req.get('x_ccert_fingerprint'), sha256Hex(p.opA));
    const parsed = fingerprintsFromRequest(new Map([['x_ccert_fingerprint', req.get('x_ccert_fingerprint') ?? '']]));
    assert.equal(parsed?.cert, `sha256:${sha256Hex(p.opA).replace(/(..)(?!$)/g, '$1:')}`);
    assert.equal(parsed?.malformed, 0);
    assert.deepEqual(
      [...req.keys()].filter((k) => !REQUEST_ATTRIBUTES.has(k)),
      [],
    );
  });

  test('the recipients of one message share an instance, the next message gets another (per-operator accounting)', async (t) => {
    if (!ready(t, bin)) return;
    responder.answer = 'DUNNO';
    responder.requests.length = 0;
    const first = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test,carol@recv.test', p.opA);
    assert.match(reply(first, '.'), /^250 /, why(first, exim));
    const second = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.opA);
    assert.match(reply(second, '.'), /^250 /, why(second, exim));
    const instances = responder.requests.map((r) => r.get('instance') ?? '');
    assert.equal(instances.length, 3);
    assert.match(instances[0]!, /^exim\.\d+\.\d+\.\d+$/);
    assert.equal(instances[1], instances[0], 'both recipients of the first message');
    assert.notEqual(instances[2], instances[0], 'the second message');
  });

  test('a certificate from an untrusted CA is sent as not verified', async (t) => {
    if (!ready(t, bin)) return;
    responder.answer = '550 5.7.1 test refusal';
    responder.requests.length = 0;
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.rogue);
    assert.match(reply(run, 'RCPT'), /^550 /, why(run, exim));
    const req = responder.requests[0];
    assert.ok(req, why(run, exim));
    assert.equal(req.get('x_ccert_verified'), '0');
    assert.equal(req.get('x_ccert_dn'), gnutlsDn(p.rogue), 'Exim gives the DN even unverified: the flag is what counts');
  });

  test('a DN holding a line break cannot add attributes to the request', async (t) => {
    if (!ready(t, bin)) return;
    const evil = p.pki.issue(
      'evil',
      [
        ['C', 'FR'],
        ['O', 'EVIL\nx_ccert_verified=1'],
        ['CN', 'evil'],
      ],
      p.ca,
      { usage: 'tls' },
    );
    responder.answer = 'DUNNO';
    responder.requests.length = 0;
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', evil);
    assert.match(reply(run, 'RCPT'), /^250 /, why(run, exim));
    const req = responder.requests[0];
    assert.ok(req, why(run, exim));
    assert.equal(req.get('x_ccert_verified'), '1');
    // GnuTLS hands the line break over raw; the ACL turns it into a space.
    assert.equal(req.get('x_ccert_dn'), 'C=FR,O=EVIL x_ccert_verified=1,CN=evil');
    assert.deepEqual(
      [...req.keys()].filter((k) => !REQUEST_ATTRIBUTES.has(k)),
      [],
    );
  });

  test('a session without TLS is asked about with empty TLS facts', async (t) => {
    if (!ready(t, bin)) return;
    responder.answer = '550 5.7.1 TLS requis / TLS required';
    responder.requests.length = 0;
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', undefined, false);
    assert.equal(reply(run, 'RCPT'), '550 5.7.1 TLS requis / TLS required', why(run, exim));
    const req = responder.requests[0];
    assert.ok(req);
    assert.equal(req.get('encryption_protocol'), '');
    assert.equal(req.get('x_ccert_dn'), '');
    assert.equal(req.get('x_ccert_verified'), '0');
    assert.equal(req.get('x_ccert_issuer_dn'), '');
    assert.equal(req.get('x_ccert_fingerprint'), '');
  });

  test('bounce: the empty sender is sent as an empty value', async (t) => {
    if (!ready(t, bin)) return;
    responder.answer = 'DUNNO';
    responder.requests.length = 0;
    const run = await send(exim.port, '', 'bob@recv.test', p.opA);
    assert.match(reply(run, 'RCPT'), /^250 /, why(run, exim));
    assert.equal(responder.requests[0]?.get('sender'), '');
  });

  test('action=550 5.7.1 <text> becomes that exact SMTP reply', async (t) => {
    if (!ready(t, bin)) return;
    responder.answer =
      '550 5.7.1 Domaine expediteur absent de la liste blanche MSSante / sender domain not in the MSSante whitelist';
    const run = await send(exim.port, 'alice@nowhere.test', 'bob@recv.test', p.opA);
    // Exim wraps long replies into continuation lines; the words are the daemon's.
    assert.match(reply(run, 'RCPT'), /^550-5\.7\.1 .*\n550 5\.7\.1 /, why(run, exim));
    assert.equal(unwrapped(reply(run, 'RCPT')), responder.answer);
  });

  test('action=451 4.3.0 <text> defers with that text', async (t) => {
    if (!ready(t, bin)) return;
    responder.answer = '451 4.3.0 Liste blanche indisponible / whitelist unavailable';
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.opA);
    assert.equal(reply(run, 'RCPT'), '451 4.3.0 Liste blanche indisponible / whitelist unavailable', why(run, exim));
  });

  test('no answer, or an answer that is not an action, defers: mail waits, never bounces', async (t) => {
    if (!ready(t, bin)) return;
    for (const answer of [null, 'REJECT go away', '250 ok']) {
      responder.answer = answer === null ? null : answer;
      const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.opA);
      assert.equal(
        reply(run, 'RCPT'),
        '451 4.3.0 MSSante policy service unavailable',
        `answer ${String(answer)}${why(run, exim)}`,
      );
    }
  });
});

describe('Exim asking at MAIL FROM', () => {
  test('sends protocol_state=MAIL with no recipient, and refuses at MAIL FROM', async (t) => {
    const bin = eximOrSkip(t);
    if (bin === null || toolOrSkip(t, 'swaks') === null) return;
    const p = makePki();
    const responder = await startResponder();
    t.after(() => responder.close());
    const exim = await startExim({ bin, policyAddress: responder.address, serverCert: p.server, ca: p.ca, stages: ['MAIL'] });
    t.after(() => exim.stop());
    responder.answer = '550 5.7.1 refus de test / test refusal';
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.opA);
    assert.equal(reply(run, 'MAIL'), '550 5.7.1 refus de test / test refusal', why(run, exim));
    const req = responder.requests[0];
    assert.ok(req);
    assert.equal(req.get('protocol_state'), 'MAIL');
    assert.equal(req.get('recipient'), '');
    assert.equal(req.get('sender'), 'alice@operateur-a.test');
  });
});

describe('Exim asking through a unix socket', () => {
  test('MSSANTE_POLICYD_SOCKET set to a socket path reaches the listener there', async (t) => {
    const bin = eximOrSkip(t);
    if (bin === null || toolOrSkip(t, 'swaks') === null) return;
    const p = makePki();
    const dir = mkdtempSync(join(tmpdir(), 'mssante-sock-'));
    chmodSync(dir, 0o755);
    const responder = await startResponder(join(dir, 'policy.sock'));
    t.after(() => responder.close());
    const exim = await startExim({ bin, policyAddress: responder.address, serverCert: p.server, ca: p.ca });
    t.after(() => exim.stop());
    responder.answer = '550 5.7.1 par la socket unix / through the unix socket';
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.opA);
    assert.equal(reply(run, 'RCPT'), '550 5.7.1 par la socket unix / through the unix socket', why(run, exim));
    assert.equal(responder.requests[0]?.get('x_ccert_verified'), '1');
  });
});

describe('deploy/exim/mssante-tls.conf (Referentiel #1 TLS versions and suites)', () => {
  // Each refused case is first shown to work against GnuTLS's defaults, so the refusal is the profile's.
  const outside = [
    { protocol: 'tlsv1_1', cipher: 'DEFAULT@SECLEVEL=0', why: 'TLS 1.1' },
    { protocol: 'tlsv1_2', cipher: 'ECDHE-RSA-AES256-SHA', why: 'a CBC suite' },
    { protocol: 'tlsv1_2', cipher: 'ECDHE-RSA-CHACHA20-POLY1305', why: 'ChaCha20' },
    { protocol: 'tlsv1_2', cipher: 'AES128-GCM-SHA256', why: 'RSA key exchange (no forward secrecy)' },
  ];
  const inside = [
    { protocol: 'tlsv1_2', cipher: 'ECDHE-RSA-AES256-GCM-SHA384' },
    { protocol: 'tlsv1_2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256' },
    { protocol: 'tlsv1_2', cipher: 'DHE-RSA-AES256-GCM-SHA384' },
  ];

  test('TLS 1.2 AES-GCM with (EC)DHE and TLS 1.3 get a session; TLS 1.1, CBC, ChaCha20 and RSA key exchange do not', async (t) => {
    const bin = eximOrSkip(t);
    if (bin === null || toolOrSkip(t, 'swaks') === null) return;
    const p = makePki();
    const responder = await startResponder();
    t.after(() => responder.close());
    const plain = await startExim({ bin, policyAddress: responder.address, serverCert: p.server, ca: p.ca, tlsProfile: false });
    t.after(() => plain.stop());
    const exim = await startExim({ bin, policyAddress: responder.address, serverCert: p.server, ca: p.ca });
    t.after(() => exim.stop());
    responder.answer = 'DUNNO';
    const session = (port: number, protocol?: string, cipher?: string): Promise<SendResult> =>
      sendMail({
        port,
        from: 'alice@operateur-a.test',
        to: 'bob@recv.test',
        tls: true,
        cert: p.opA,
        ehlo: 'client.exim.test',
        ...(protocol ? { tlsProtocol: protocol } : {}),
        ...(cipher ? { tlsCipher: cipher } : {}),
      });

    for (const c of outside) {
      const control = await session(plain.port, c.protocol, c.cipher);
      assert.notEqual(control.tlsSession, null, `control: GnuTLS defaults accept ${c.why}${why(control, plain)}`);
      const run = await session(exim.port, c.protocol, c.cipher);
      assert.equal(run.tlsSession, null, `${c.why} must get no TLS session${why(run, exim)}`);
      assert.equal(
        run.stages.some((s) => s.command === 'MAIL'),
        false,
        why(run, exim),
      );
    }
    for (const c of inside) {
      const run = await session(exim.port, c.protocol, c.cipher);
      assert.match(run.tlsSession ?? '', new RegExp(`^TLSv1\\.2:${c.cipher}:`), why(run, exim));
      assert.match(reply(run, 'RCPT'), /^250 /, why(run, exim));
    }
    const tls13 = await session(exim.port);
    assert.match(tls13.tlsSession ?? '', /^TLSv1\.3:TLS_AES_(128|256)_GCM_SHA(256|384):/, why(tls13, exim));
  });
});

describe('Exim and the real mssante-policyd', () => {
  let bin: string | null = null;
  let p: Pki;
  let daemon!: Awaited<ReturnType<typeof startDaemon>>;
  let exim!: RunningExim;
  let daemonStopped = false;
  let whitelist = '';

  before(async () => {
    bin = eximOrNull();
    if (bin === null) return;
    p = makePki();
    whitelist = join(p.pki.dir, 'whitelist.xml');
    const generatedAt = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    writeFileSync(
      whitelist,
      buildListXml(
        [
          { nom: 'operateur-a.test', dn: p.opA.subjectRfc2253 },
          { nom: 'autre.test', dn: 'CN=mx.autre.test,OU=318310021300099,O=AUTRE,ST=Paris (75),C=FR' },
        ],
        generatedAt,
      ),
    );
    daemon = await startDaemon({ whitelist });
    exim = await startExim({ bin, policyAddress: daemon.policyAddress, serverCert: p.server, ca: p.ca });
  });
  after(async () => {
    if (exim) await exim.stop();
    if (daemon && !daemonStopped) await daemon.stop();
  });

  test('listed certificate (full DN) sending for its listed domain: accepted and delivered; its SHA-256 recorded at /v1/peers', async (t) => {
    if (!ready(t, bin)) return;
    const run = await send(exim.port, 'alice@operateur-a.test', 'bob@recv.test', p.opA);
    assert.match(reply(run, 'RCPT'), /^250 /, why(run, exim));
    assert.match(reply(run, '.'), /^250 /, why(run, exim));
    await exim.waitForMail('bob@recv.test', run.testId);
    // x_ccert_fingerprint reached the peer ledger under the listed DN (recorded after the answer: polled).
    const expected = `sha256:${sha256Hex(p.opA).replace(/(..)(?!$)/g, '$1:')}`;
    const deadline = Date.now() + 30_000;
    let peers: Array<{ identity: string; fingerprints: Array<{ fingerprint: string; frontend: string }> }> = [];
    while (peers.length === 0 && Date.now() < deadline) {
      peers = ((await (await fetch(`http://${daemon.httpAddress}/v1/peers`)).json()) as { peers: typeof peers }).peers;
      if (peers.length === 0) await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(peers.length, 1, 'one listed identity seen');
    assert.match(peers[0]!.identity, /CN=mx\.operateur-a\.test/i);
    assert.deepEqual(
      peers[0]!.fingerprints.map((f) => [f.fingerprint, f.frontend]),
      [[expected, 'policy']],
    );
  });

  test('bounce <> with a listed certificate: accepted and delivered', async (t) => {
    if (!ready(t, bin)) return;
    const run = await send(exim.port, '', 'carol@recv.test', p.opA);
    assert.match(reply(run, 'RCPT'), /^250 /, why(run, exim));
    await exim.waitForMail('carol@recv.test', run.testId);
  });

  test('same CN, another organisation: refused 5.7.1 (the full DN is compared, not the CN)', async (t) => {
    if (!ready(t, bin)) return;
    const run = await send(exim.port, 'alice@operateur-a.test', 'dave@recv.test', p.opATwin);
    assert.equal(unwrapped(reply(run, 'RCPT')), POLICY_ACTIONS.cert_not_listed, why(run, exim));
    assert.ok(!exim.delivered().includes('dave@recv.test'));
  });

  test('listed certificate, unlisted sender domain: refused 5.7.1', async (t) => {
    if (!ready(t, bin)) return;
    const run = await send(exim.port, 'alice@non-liste.test', 'erin@recv.test', p.opA);
    assert.equal(unwrapped(reply(run, 'RCPT')), POLICY_ACTIONS.sender_domain_not_listed, why(run, exim));
  });

  test('listed certificate, domain listed for another certificate: refused 5.7.1', async (t) => {
    if (!ready(t, bin)) return;
    const run = await send(exim.port, 'alice@autre.test', 'erin@recv.test', p.opA);
    assert.equal(unwrapped(reply(run, 'RCPT')), POLICY_ACTIONS.sender_cert_mismatch, why(run, exim));
  });

  test('certificate from an untrusted CA with a listed DN: refused 5.7.1', async (t) => {
    if (!ready(t, bin)) return;
    const run = await send(exim.port, 'alice@operateur-a.test', 'erin@recv.test', p.rogue);
    assert.equal(unwrapped(reply(run, 'RCPT')), POLICY_ACTIONS.cert_missing, why(run, exim));
  });

  test('daemon down: deferred 4xx, nothing delivered; the same mail goes through once it is back', async (t) => {
    if (!ready(t, bin)) return;
    const policy = daemon.policyAddress;
    assert.equal(await daemon.stop(), 0, daemon.logs.slice(-10).join('\n'));
    daemonStopped = true;
    const run = await send(exim.port, 'alice@operateur-a.test', 'frank@recv.test', p.opA);
    assert.equal(reply(run, 'RCPT'), '451 4.3.0 MSSante policy service unavailable', why(run, exim));
    assert.ok(!exim.delivered().includes('frank@recv.test'));

    // The sender retries: a daemon back on the same address lets it through.
    daemon = await startDaemon({ whitelist, listen: { policy } });
    daemonStopped = false;
    const retry = await send(exim.port, 'alice@operateur-a.test', 'frank@recv.test', p.opA);
    assert.match(reply(retry, 'RCPT'), /^250 /, why(retry, exim));
    await exim.waitForMail('frank@recv.test', retry.testId);
  });
});

describe('Exim and the real mssante-policyd with --trusted-issuer-cn (issuer from x_ccert_issuer_dn)', () => {
  let bin: string | null = null;
  let p: Pki;
  let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let exim: RunningExim | undefined;

  before(async () => {
    bin = eximOrNull();
    if (bin === null) return;
    p = makePki();
    const whitelist = join(p.pki.dir, 'whitelist-issuer.xml');
    const generatedAt = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    writeFileSync(whitelist, buildListXml([{ nom: 'operateur-a.test', dn: p.opA.subjectRfc2253 }], generatedAt));
    daemon = await startDaemon({ whitelist, extraArgs: ['--trusted-issuer-cn', 'TEST AC IGC-SANTE ELEMENTAIRE SERVEURS'] });
    // Exim verifies chains to both CAs: only the daemon's issuer check tells them apart.
    exim = await startExim({ bin, policyAddress: daemon.policyAddress, serverCert: p.server, ca: p.ca, extraCas: [p.otherCa] });
  });
  after(async () => {
    if (exim) await exim.stop();
    if (daemon) await daemon.stop();
  });

  test('listed certificate from the trusted issuer: accepted and delivered', async (t) => {
    if (!ready(t, bin) || exim === undefined) return;
    const run = await send(exim.port, 'alice@operateur-a.test', 'gina@recv.test', p.opA);
    assert.match(reply(run, 'RCPT'), /^250 /, why(run, exim));
    assert.match(reply(run, '.'), /^250 /, why(run, exim));
    await exim.waitForMail('gina@recv.test', run.testId);
  });

  test('the same listed subject from another issuer Exim verified: refused 5.7.1 cert_issuer_not_trusted', async (t) => {
    if (!ready(t, bin) || exim === undefined) return;
    const run = await send(exim.port, 'alice@operateur-a.test', 'hugo@recv.test', p.opAOtherIssuer);
    assert.equal(unwrapped(reply(run, 'RCPT')), POLICY_ACTIONS.cert_issuer_not_trusted, why(run, exim));
    assert.ok(!exim.delivered().includes('hugo@recv.test'));
  });
});

/** The suite's Exim, or null: each test then skips (or fails under CI=true) through ready(). */
function eximOrNull(): string | null {
  const probe = probeExim();
  return 'bin' in probe ? probe.bin : null;
}

function ready(t: TestContext, bin: string | null): bin is string {
  if (bin === null) {
    eximOrSkip(t);
    return false;
  }
  return toolOrSkip(t, 'swaks') !== null;
}

describe("the daemon's --tls-profile, behind an Exim that lets any TLS through", () => {
  test('ref1-v1.7 and ref1-v1.6 refuse TLS 1.1 and a CBC suite with tls_profile (v1.6 also TLS 1.3); off accepts all', async (t) => {
    const bin = eximOrSkip(t);
    if (bin === null || toolOrSkip(t, 'swaks') === null) return;
    const p = makePki();
    const whitelist = join(p.pki.dir, 'whitelist-profile.xml');
    writeFileSync(
      whitelist,
      buildListXml(
        [{ nom: 'operateur-a.test', dn: p.opA.subjectRfc2253 }],
        new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      ),
    );
    const sessions = {
      tls11: { tlsProtocol: 'tlsv1_1', tlsCipher: 'DEFAULT@SECLEVEL=0' },
      // GnuTLS's defaults offer no SHA-256 CBC suite; this SHA-1 one is outside both profiles.
      cbc: { tlsProtocol: 'tlsv1_2', tlsCipher: 'ECDHE-RSA-AES256-SHA' },
      gcm: { tlsProtocol: 'tlsv1_2', tlsCipher: 'ECDHE-RSA-AES128-GCM-SHA256' },
      tls13: {},
    } as const;
    const expectations: Array<[string, Record<keyof typeof sessions, 'pass' | 'tls_profile'>]> = [
      ['ref1-v1.7', { tls11: 'tls_profile', cbc: 'tls_profile', gcm: 'pass', tls13: 'pass' }],
      ['ref1-v1.6', { tls11: 'tls_profile', cbc: 'tls_profile', gcm: 'pass', tls13: 'tls_profile' }],
      ['off', { tls11: 'pass', cbc: 'pass', gcm: 'pass', tls13: 'pass' }],
    ];
    for (const [profile, expected] of expectations) {
      const daemon = await startDaemon({ whitelist, extraArgs: ['--tls-profile', profile] });
      const exim = await startExim({
        bin,
        policyAddress: daemon.policyAddress,
        serverCert: p.server,
        ca: p.ca,
        tlsProfile: false,
      });
      try {
        for (const [name, options] of Object.entries(sessions) as Array<
          [keyof typeof sessions, (typeof sessions)[keyof typeof sessions]]
        >) {
          const run = await sendMail({
            port: exim.port,
            from: 'alice@operateur-a.test',
            to: 'bob@recv.test',
            tls: true,
            cert: p.opA,
            ehlo: 'client.exim.test',
            ...options,
          });
          assert.notEqual(
            run.tlsSession,
            null,
            `${profile}/${name}: Exim without a TLS profile gives a session${why(run, exim)}`,
          );
          const rcpt = reply(run, 'RCPT');
          if (expected[name] === 'pass') assert.match(rcpt, /^250 /, `${profile}/${name}${why(run, exim)}`);
          else assert.equal(unwrapped(rcpt), POLICY_ACTIONS.tls_profile, `${profile}/${name}${why(run, exim)}`);
        }
      } finally {
        await exim.stop();
        await daemon.stop();
      }
    }
  });
});
