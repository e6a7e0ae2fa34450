/**
 * Request corpora for the benchmark, built from a whitelist file: realistic Postfix 3.7 policy
 * requests and the same transactions as Milter packets, each with the answer's expected first word.
 *
 * The list is read with a plain regex scan on purpose: the expected answers must not come from the
 * daemon's own parser. Only entries whose CN and domain are unambiguous (plain ASCII names) are used
 * to build passes, so any normalisation the daemon does agrees with ours by construction.
 */
import { createHash } from 'node:crypto';

const DOMAINE = /<Domaine>([\s\S]*?)<\/Domaine>/g;
const CLEAN_CN = /^[a-z0-9][a-z0-9.-]*$/;
const CLEAN_DOMAIN = /^[a-z0-9-]+(\.[a-z0-9-]+)+$/;

function unescapeXml(text) {
  return text
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

function field(block, name) {
  const m = new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(block);
  return m === null ? '' : unescapeXml(m[1]).trim();
}

function cnOf(dn) {
  const m = /(?:^|,)\s*CN\s*=\s*([^,]*)/i.exec(dn);
  return m === null
    ? null
    : m[1]
        .replace(/[\s\u00a0]+/g, ' ')
        .trim()
        .toLowerCase();
}

/**
 * The list as the benchmark sees it: every CN and domain present (to stay clear of them when making
 * refusals), and the clean (CN, domains) bindings used to make passes and mismatches.
 */
export function scanList(xml) {
  const allCns = new Set();
  const allDomains = new Set();
  /** domain → CNs bound to it (every entry, clean or not) */
  const cnsByDomain = new Map();
  /** domains with at least one entry we could not read plainly: never used for mismatches */
  const murkyDomains = new Set();
  /** clean CN → clean domains */
  const domainsByCn = new Map();
  let entries = 0;
  for (const m of xml.matchAll(DOMAINE)) {
    entries++;
    const nom = field(m[1], 'Nom').toLowerCase();
    const cn = cnOf(field(m[1], 'DNCertificatOperateur'));
    if (nom !== '') allDomains.add(nom);
    if (cn !== null) allCns.add(cn);
    if (nom === '') continue;
    if (!cnsByDomain.has(nom)) cnsByDomain.set(nom, new Set());
    if (cn !== null) cnsByDomain.get(nom).add(cn);
    if (cn === null || !CLEAN_CN.test(cn) || !CLEAN_DOMAIN.test(nom)) {
      murkyDomains.add(nom);
      continue;
    }
    if (!domainsByCn.has(cn)) domainsByCn.set(cn, new Set());
    domainsByCn.get(cn).add(nom);
  }
  const bindings = [...domainsByCn].map(([cn, domains]) => ({ cn, domains: [...domains] }));
  return { entries, allCns, allDomains, cnsByDomain, murkyDomains, bindings };
}

/** Deterministic pseudo-random numbers (mulberry32): the same corpus on every run. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fingerprint(text) {
  return createHash('sha256').update(text).digest('hex').toUpperCase().match(/../g).join(':');
}

/** Postfix xtext: '+', '=' and bytes outside 33..126 become +XX. */
function xtext(value) {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out +=
      byte < 33 || byte > 126 || byte === 0x2b || byte === 0x3d
        ? `+${byte.toString(16).toUpperCase().padStart(2, '0')}`
        : String.fromCharCode(byte);
  }
  return out;
}

const ISSUER = 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS';
const QUEUE_ALPHABET = '0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz';

/**
 * One SMTP transaction: what the MTA knows at RCPT (policy) or MAIL FROM (Milter), and the answer's
 * expected first word: DUNNO (pass), 550 (refusal). `kind` names the reason aimed at.
 */
function transaction(kind, cn, sender, recipientDomain, random, i) {
  const tls = kind !== 'tls_required';
  const cert = tls && kind !== 'cert_missing' ? cn : null;
  let queueId = '';
  for (let k = 0; k < 15; k++) queueId += QUEUE_ALPHABET[Math.floor(random() * QUEUE_ALPHABET.length)];
  const host = cert ?? `relay${i % 97}.fai.example.net`;
  return {
    kind,
    expect: kind === 'ok' || kind === 'ok_bounce' ? 'DUNNO' : '550',
    cert,
    tls,
    sender,
    recipient: `dr.${['martin', 'bernard', 'dubois', 'thomas', 'robert', 'richard'][i % 6]}.${i % 1000}@${recipientDomain}`,
    clientAddress: `198.51.100.${1 + (i % 250)}`,
    clientName: host,
    clientPort: String(1024 + Math.floor(random() * 60000)),
    helo: host,
    queueId,
    size: String(2000 + Math.floor(random() * 5_000_000)),
    instance: `${(0x1000 + i).toString(16)}.${(0x67a1b2c3 + i).toString(16)}.${(0xd4e5f + (i % 4096)).toString(16)}.0`,
  };
}

/**
 * `count` transactions drawn from the list: 90 % passes (a listed CN with one of its domains, 3 % of
 * them null-sender bounces), 10 % refusals spread over five reasons.
 */
export function buildTransactions(scan, count, seed = 20250228) {
  const random = rng(seed);
  const pick = (array) => array[Math.floor(random() * array.length)];
  if (scan.bindings.length < 2) throw new Error('the list has fewer than two usable certificates: cannot build a corpus');
  const recipientDomain = pick(scan.bindings).domains[0];
  const cleanDomains = [...scan.allDomains].filter((d) => CLEAN_DOMAIN.test(d) && !scan.murkyDomains.has(d));
  const out = [];
  const refusals = ['tls_required', 'cert_missing', 'cert_not_listed', 'sender_domain_not_listed', 'sender_cert_mismatch'];
  for (let i = 0; i < count; i++) {
    const binding = pick(scan.bindings);
    const local = `${['secretariat', 'dr.durand', 'labo', 'imagerie', 'admissions', 'no-reply'][i % 6]}${i % 500}`;
    const r = random();
    let kind;
    if (r < 0.9) kind = random() < 0.03 ? 'ok_bounce' : 'ok';
    else kind = refusals[Math.floor((r - 0.9) * 50)] ?? 'sender_cert_mismatch';
    let cn = binding.cn;
    let sender = `${local}@${pick(binding.domains)}`;
    if (kind === 'ok_bounce') sender = '';
    if (kind === 'cert_not_listed') {
      cn = `mx${i}.inconnu-${i % 37}.example`;
      if (scan.allCns.has(cn)) throw new Error(`generated CN ${cn} is listed`);
    }
    if (kind === 'sender_domain_not_listed') {
      const domain = `cabinet-${i}.non-liste.example`;
      if (scan.allDomains.has(domain)) throw new Error(`generated domain ${domain} is listed`);
      sender = `${local}@${domain}`;
    }
    if (kind === 'sender_cert_mismatch') {
      let domain = null;
      for (let tries = 0; tries < 1000 && domain === null; tries++) {
        const d = pick(cleanDomains);
        if (!scan.cnsByDomain.get(d)?.has(cn)) domain = d;
      }
      if (domain === null) throw new Error('no domain bound to another certificate: cannot build a mismatch');
      sender = `${local}@${domain}`;
    }
    out.push(transaction(kind, cn, sender, recipientDomain, random, i));
  }
  return out;
}

/** A Postfix 3.7 smtpd_access_policy request at RCPT, attributes in Postfix's order. */
export function policyRequest(t) {
  const attrs = [
    ['request', 'smtpd_access_policy'],
    ['protocol_state', 'RCPT'],
    ['protocol_name', 'ESMTP'],
    ['helo_name', t.helo],
    ['queue_id', t.queueId],
    ['sender', t.sender],
    ['recipient', t.recipient],
    ['recipient_count', '0'],
    ['client_address', t.clientAddress],
    ['client_name', t.clientName],
    ['reverse_client_name', t.clientName],
    ['instance', t.instance],
    ['sasl_method', ''],
    ['sasl_username', ''],
    ['sasl_sender', ''],
    ['size', t.size],
    ['ccert_subject', t.cert === null ? '' : xtext(t.cert)],
    ['ccert_issuer', t.cert === null ? '' : xtext(ISSUER)],
    ['ccert_fingerprint', t.tls ? fingerprint(`cert:${t.cert ?? t.clientName}`) : ''],
    ['ccert_pubkey_fingerprint', t.tls ? fingerprint(`key:${t.cert ?? t.clientName}`) : ''],
    ['encryption_protocol', t.tls ? 'TLSv1.3' : ''],
    ['encryption_cipher', t.tls ? 'TLS_AES_256_GCM_SHA384' : ''],
    ['encryption_keysize', t.tls ? '256' : '0'],
    ['etrn_domain', ''],
    ['stress', ''],
    ['policy_context', 'mssante'],
    ['server_address', '127.0.0.1'],
    ['server_port', '25'],
    ['client_port', t.clientPort],
    ['compatibility_level', '3.6'],
    ['mail_version', '3.7.11'],
  ];
  return Buffer.from(`${attrs.map(([k, v]) => `${k}=${v}`).join('\n')}\n\n`, 'utf8');
}

// ---- Milter (protocol 6), encoded here so the bench does not lean on the daemon's codec ----

function packet(cmd, data) {
  const out = Buffer.allocUnsafe(5 + data.length);
  out.writeUInt32BE(1 + data.length, 0);
  out[4] = cmd.charCodeAt(0);
  data.copy(out, 5);
  return out;
}

function cstrings(values) {
  return Buffer.from(values.map((v) => `${v}\0`).join(''), 'utf8');
}

function macro(stage, pairs) {
  return packet('D', Buffer.concat([Buffer.from(stage, 'latin1'), cstrings(pairs.flat())]));
}

/** OPTNEG v6 offering every action and every protocol step flag, as Postfix 3.7 does. */
export function milterOptneg() {
  const data = Buffer.allocUnsafe(12);
  data.writeUInt32BE(6, 0);
  data.writeUInt32BE(0x1ff, 4);
  data.writeUInt32BE(0x1fffff, 8);
  return packet('O', data);
}

/** CONNECT, HELO and MAIL with Postfix's macros; only MAIL FROM gets an answer (NR_CONN, NR_HELO). */
export function milterTransaction(t) {
  const port = Buffer.allocUnsafe(2);
  port.writeUInt16BE(Number(t.clientPort), 0);
  const helo = t.tls
    ? [
        ['{tls_version}', 'TLSv1.3'],
        ['{cipher}', 'TLS_AES_256_GCM_SHA384'],
        ['{cipher_bits}', '256'],
        ...(t.cert === null
          ? []
          : [
              ['{cert_subject}', t.cert],
              ['{cert_issuer}', ISSUER],
            ]),
      ]
    : [];
  return Buffer.concat([
    macro('C', [
      ['j', 'mx.recepteur.example'],
      ['{daemon_name}', 'smtpd'],
      ['{daemon_addr}', '127.0.0.1'],
      ['v', 'Postfix 3.7.11'],
      ['_', `${t.clientName} [${t.clientAddress}]`],
      ['{client_addr}', t.clientAddress],
      ['{client_name}', t.clientName],
    ]),
    packet('C', Buffer.concat([cstrings([t.clientName]), Buffer.from('4'), port, cstrings([t.clientAddress])])),
    macro('H', helo),
    packet('H', cstrings([t.helo])),
    macro('M', [
      ['i', t.queueId],
      ['{mail_mailer}', 'smtp'],
      ['{mail_host}', t.sender.split('@')[1] ?? ''],
      ['{mail_addr}', t.sender],
    ]),
    packet('M', cstrings([`<${t.sender}>`, `SIZE=${t.size}`, 'BODY=8BITMIME'])),
  ]);
}

/** Sent after each answer: ABORT the message and QUIT_NC (the connection is reused for a new session). */
export const MILTER_END_OF_SESSION = Buffer.concat([packet('A', Buffer.alloc(0)), packet('K', Buffer.alloc(0))]);

/** The corpus file the load generator reads: wire bytes (base64) and expected first words. */
export function corpusFile(protocol, transactions) {
  const wire = transactions.map((t) => (protocol === 'milter' ? milterTransaction(t) : policyRequest(t)).toString('base64'));
  return { protocol, expect: transactions.map((t) => t.expect), kinds: transactions.map((t) => t.kind), wire };
}

/** A socketmap request netstring `<len>:<map> <key>,` (what Postfix's dict_sockmap writes). */
function socketmapRequest(map, key) {
  const payload = Buffer.from(`${map} ${key}`, 'utf8');
  return Buffer.concat([Buffer.from(`${payload.length}:`), payload, Buffer.from(',')]);
}

/**
 * Socketmap lookups as a sending relay makes them, per recipient: transport, TLS policy and the
 * recipient check, for listed domains (plain ones only) and for domains outside the list. `expect` is
 * the reply's status word, except that a recipient-access refusal is `REJECT` (its value's first word).
 */
export function socketmapCorpus(scan, count) {
  const listed = [...scan.allDomains].filter((d) => CLEAN_DOMAIN.test(d) && !scan.murkyDomains.has(d));
  const random = rng(20250228);
  const items = [];
  for (let i = 0; i < count; i++) {
    const inList = random() < 0.8 && listed.length > 0;
    const domain = inList ? listed[Math.floor(random() * listed.length)] : `hors-liste-${i % 211}.example.org`;
    const pick = i % 3;
    if (pick === 0)
      items.push({
        kind: inList ? 'transport_listed' : 'transport_unlisted',
        expect: inList ? 'OK' : 'NOTFOUND',
        wire: socketmapRequest('mssante-transport', domain),
      });
    else if (pick === 1)
      items.push({
        kind: inList ? 'tls_listed' : 'tls_unlisted',
        expect: inList ? 'OK' : 'NOTFOUND',
        wire: socketmapRequest('mssante-tls-policy', domain),
      });
    else
      items.push({
        kind: inList ? 'rcpt_listed' : 'rcpt_unlisted',
        expect: inList ? 'NOTFOUND' : 'REJECT',
        wire: socketmapRequest('mssante-recipient-access', `dr.x${i % 53}@${domain}`),
      });
  }
  return {
    protocol: 'socketmap',
    expect: items.map((t) => t.expect),
    kinds: items.map((t) => t.kind),
    wire: items.map((t) => t.wire.toString('base64')),
  };
}
