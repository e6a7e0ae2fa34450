import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  PolicyCodecError,
  PolicyDecoder,
  encodeReply,
  encodeRequest,
  type PolicyCodecErrorKind,
  type PolicyLimits,
  type PolicyRequest,
} from '../../../../src/frontends/policy/codec.js';
import { DEFAULT_POLICY_LIMITS } from '../../../../src/listener-defaults.js';

const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);

type Attrs = ReadonlyArray<readonly [string, string]>;

/** Every attribute Postfix 3.7 sends (SMTPD_POLICY_README), TLS values as a MSSanté peer gives them. */
const POSTFIX_37: Attrs = [
  ['request', 'smtpd_access_policy'],
  ['protocol_state', 'RCPT'],
  ['protocol_name', 'ESMTP'],
  ['client_address', '192.0.2.25'],
  ['client_name', 'mx.ch-exemple.fr'],
  ['client_port', '41822'],
  ['reverse_client_name', 'mx.ch-exemple.fr'],
  ['server_address', '198.51.100.10'],
  ['server_port', '25'],
  ['helo_name', 'mx.ch-exemple.fr'],
  ['sender', 'dr.martin@ch-exemple.mssante.fr'],
  ['recipient', 'secretariat@chu-exemple.mssante.fr'],
  ['recipient_count', '0'],
  ['queue_id', ''],
  ['instance', '1a2b.65f1c0de.4e3f.0'],
  ['size', '48213'],
  ['etrn_domain', ''],
  ['stress', ''],
  ['sasl_method', ''],
  ['sasl_username', ''],
  ['sasl_sender', ''],
  // xtext: Postfix encodes space, '+', '=' and non-ASCII bytes as +XX; the codec leaves that alone.
  ['ccert_subject', 'mx+20MSSant+C3+A9+2Bch-exemple.fr'],
  ['ccert_issuer', 'TEST+20AC+20IGC-SANTE+20ELEMENTAIRE+20ORGANISATIONS'],
  ['ccert_fingerprint', '3B:1F:09:9A:47:C2:6E:8D:55:10:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45'],
  ['ccert_pubkey_fingerprint', 'A0:B1:C2:D3:E4:F5:06:17:28:39:4A:5B:6C:7D:8E:9F:A0:B1:C2:D3:E4:F5:06:17:28:39:4A:5B:6C:7D:8E:9F'],
  ['encryption_protocol', 'TLSv1.2'],
  ['encryption_cipher', 'ECDHE-RSA-AES256-GCM-SHA384'],
  ['encryption_keysize', '256'],
  ['policy_context', ''],
];

const WITH_EQUALS: Attrs = [
  ['request', 'smtpd_access_policy'],
  ['sender', 'bounce+user=example.org@liste.mssante.fr'],
  ['x_ccert_dn', 'CN=mx.ch-exemple.fr,OU=10000000001,O=CH EXEMPLE,ST=Paris (75),C=FR'],
  ['x_ccert_verified', '1'],
  ['empty', ''],
  ['only_equals', '==='],
];

const MULTIBYTE: Attrs = [
  ['request', 'smtpd_access_policy'],
  ['x_ccert_dn', 'CN=mssanté.chu-exemple.fr,O=CHU de Saint-Étienne,ST=Loire (42),C=FR'],
  ['helo_name', 'ﬁ-ligature-日本-😀-\uFFFD'], // a genuine U+FFFD is valid UTF-8
];

function wire(attrs: Attrs, eol = '\n'): Buffer {
  return Buffer.from(attrs.map(([n, v]) => `${n}=${v}${eol}`).join('') + eol, 'utf8');
}

const FIXTURES: ReadonlyArray<{ name: string; bytes: Buffer; attrs: Attrs }> = [
  { name: 'Postfix 3.7 full request', bytes: wire(POSTFIX_37), attrs: POSTFIX_37 },
  { name: 'values containing =', bytes: wire(WITH_EQUALS), attrs: WITH_EQUALS },
  { name: 'CRLF line ends', bytes: wire(POSTFIX_37, '\r\n'), attrs: POSTFIX_37 },
  { name: 'multi-byte UTF-8 values', bytes: wire(MULTIBYTE), attrs: MULTIBYTE },
];

function asPairs(request: PolicyRequest): Array<[string, string]> {
  return [...request.entries()];
}

function slices(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

type Outcome = {
  requests: Array<Array<[string, string]>>;
  error: PolicyCodecErrorKind | null;
  atEnd: Array<[string, string]> | null;
};

/** Feeds chunks then EOF; requests returned before an error are kept. */
function feed(
  chunks: readonly Buffer[],
  limits: PolicyLimits = DEFAULT_POLICY_LIMITS,
  onPush?: (d: PolicyDecoder) => void,
): Outcome {
  const decoder = new PolicyDecoder(limits);
  const requests: Array<Array<[string, string]>> = [];
  try {
    for (const chunk of chunks) {
      for (const r of decoder.push(chunk)) requests.push(asPairs(r));
      onPush?.(decoder);
    }
    const last = decoder.end();
    return { requests, error: null, atEnd: last === null ? null : asPairs(last) };
  } catch (err) {
    if (!(err instanceof PolicyCodecError)) throw err;
    return { requests, error: err.kind, atEnd: null };
  }
}

function errorKind(fn: () => unknown): PolicyCodecErrorKind | null {
  try {
    fn();
    return null;
  } catch (err) {
    if (err instanceof PolicyCodecError) return err.kind;
    throw err;
  }
}

/** A request of exactly `total` wire bytes, every line at most `maxLine` bytes. */
function requestOfSize(total: number, maxLine: number, eol = '\n'): Buffer {
  const lines: string[] = [];
  let left = total - eol.length; // the terminating empty line
  let i = 0;
  while (left > 0) {
    const prefix = `a${i++}=`;
    const room = Math.min(maxLine, left - eol.length);
    const rest = left - (room + eol.length);
    // Never leave a remainder too short to hold a line of its own.
    const take = rest > 0 && rest < prefix.length + 2 + eol.length ? room - (prefix.length + 2 + eol.length) : room;
    assert.ok(take >= prefix.length, 'size too small for this helper');
    lines.push(prefix + 'x'.repeat(take - prefix.length) + eol);
    left -= take + eol.length;
  }
  const bytes = Buffer.from(lines.join('') + eol);
  assert.equal(bytes.length, total);
  return bytes;
}

describe('policy codec: fixtures', () => {
  for (const fixture of FIXTURES) {
    it(`${fixture.name}: identical result in slices of 1, 16, 128 and 4096 bytes`, () => {
      const expected = fixture.attrs.map(([n, v]) => [n, v]);
      for (const size of [1, 16, 128, 4096]) {
        const outcome = feed(slices(fixture.bytes, size));
        assert.deepEqual(outcome, { requests: [expected], error: null, atEnd: null }, `slice size ${size}`);
      }
    });
  }

  it('leaves xtext encoding and = inside values untouched', () => {
    const [request] = new PolicyDecoder(DEFAULT_POLICY_LIMITS).push(wire(POSTFIX_37));
    assert.equal(request?.get('ccert_subject'), 'mx+20MSSant+C3+A9+2Bch-exemple.fr');
    const [other] = new PolicyDecoder(DEFAULT_POLICY_LIMITS).push(wire(WITH_EQUALS));
    assert.equal(other?.get('x_ccert_dn'), 'CN=mx.ch-exemple.fr,OU=10000000001,O=CH EXEMPLE,ST=Paris (75),C=FR');
    assert.equal(other?.get('only_equals'), '===');
    assert.equal(other?.get('empty'), '');
  });

  it('decodes every fixture from one stream, in order, whatever the slicing', () => {
    const all = Buffer.concat(FIXTURES.map((f) => f.bytes));
    const expected = FIXTURES.map((f) => f.attrs.map(([n, v]) => [n, v]));
    for (const size of [1, 7, 16, 128, 4096, all.length]) {
      assert.deepEqual(feed(slices(all, size)).requests, expected, `slice size ${size}`);
    }
  });

  it('returns two requests found in one chunk, and nothing stays pending', () => {
    const decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
    const requests = decoder.push(Buffer.concat([wire([['seq', '1']]), wire([['seq', '2']])]));
    assert.deepEqual(
      requests.map((r) => r.get('seq')),
      ['1', '2'],
    );
    assert.equal(decoder.pendingBytes, 0);
  });

  it('counts pending bytes until the request ends', () => {
    const decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
    assert.deepEqual(decoder.push(Buffer.from('a=1\nb=')), []);
    assert.equal(decoder.pendingBytes, 6);
    assert.equal(decoder.push(Buffer.from('2\n\n')).length, 1);
    assert.equal(decoder.pendingBytes, 0);
  });
});

describe('policy codec: EOF (Exim readsocket)', () => {
  it('answers pending attributes without the empty line', () => {
    assert.deepEqual(feed([Buffer.from('request=smtpd_access_policy\nsender=a@b.fr\n')]), {
      requests: [],
      error: null,
      atEnd: [
        ['request', 'smtpd_access_policy'],
        ['sender', 'a@b.fr'],
      ],
    });
  });

  it('accepts a last line without LF, with or without CR', () => {
    assert.deepEqual(feed([Buffer.from('a=1\nb=2')]).atEnd, [
      ['a', '1'],
      ['b', '2'],
    ]);
    assert.deepEqual(feed([Buffer.from('a=1\r\nb=2\r')]).atEnd, [
      ['a', '1'],
      ['b', '2'],
    ]);
    assert.deepEqual(feed(slices(Buffer.from('a=1\nb=x=y'), 1)).atEnd, [
      ['a', '1'],
      ['b', 'x=y'],
    ]);
  });

  it('returns null when nothing is pending', () => {
    assert.equal(new PolicyDecoder(DEFAULT_POLICY_LIMITS).end(), null);
    assert.deepEqual(feed([wire([['a', '1']])]), { requests: [[['a', '1']]], error: null, atEnd: null });
  });

  it('reports a line cut before its = as truncated', () => {
    assert.equal(feed([Buffer.from('a=1\nsend')]).error, 'truncated');
    assert.equal(feed([Buffer.from('recip')]).error, 'truncated');
  });

  it('refuses to be used after end()', () => {
    const decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
    decoder.end();
    assert.throws(() => decoder.push(Buffer.from('a=1\n')), /after end/);
  });
});

describe('policy codec: malformed input', () => {
  const cases: ReadonlyArray<[string, string | Buffer, PolicyCodecErrorKind]> = [
    ['a line without =', 'request=smtpd_access_policy\ngarbage\n\n', 'malformed_line'],
    ['an empty name', '=value\n\n', 'malformed_line'],
    ['an empty request', '\n', 'malformed_line'],
    ['an empty request with CRLF', '\r\n', 'malformed_line'],
    ['a duplicate attribute', 'ccert_subject=a\nccert_subject=b\n\n', 'duplicate_attribute'],
    ['invalid UTF-8 in a value', Buffer.from([0x61, 0x3d, 0xff, 0x0a, 0x0a]), 'invalid_utf8'],
    ['a lone continuation byte', Buffer.from([0x61, 0x3d, 0x80, 0x0a, 0x0a]), 'invalid_utf8'],
    ['an overlong encoding of /', Buffer.from([0x61, 0x3d, 0xc0, 0xaf, 0x0a, 0x0a]), 'invalid_utf8'],
    ['a UTF-8 character cut by the line end', Buffer.from([0x61, 0x3d, 0xc3, 0x0a, 0xa9, 0x0a, 0x0a]), 'invalid_utf8'],
    ['invalid UTF-8 in a name', Buffer.from([0xfe, 0x3d, 0x31, 0x0a, 0x0a]), 'invalid_utf8'],
  ];
  for (const [name, input, kind] of cases) {
    it(`rejects ${name} as ${kind}, in any slicing`, () => {
      const bytes = typeof input === 'string' ? Buffer.from(input) : input;
      for (const size of [1, 2, 3, 4096]) assert.equal(feed(slices(bytes, size)).error, kind, `slice size ${size}`);
    });
  }

  it('keeps CR inside a value and drops only the CR before LF', () => {
    const [request] = new PolicyDecoder(DEFAULT_POLICY_LIMITS).push(Buffer.from('a=x\ry\r\n\n'));
    assert.equal(request?.get('a'), 'x\ry');
  });

  it('is unusable after an error, and says which', () => {
    const decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
    assert.equal(
      errorKind(() => decoder.push(Buffer.from('junk\n'))),
      'malformed_line',
    );
    assert.equal(
      errorKind(() => decoder.push(Buffer.from('a=1\n\n'))),
      'malformed_line',
    );
    assert.equal(
      errorKind(() => decoder.end()),
      'malformed_line',
    );
  });

  it('never quotes the input in its error messages', () => {
    try {
      new PolicyDecoder(DEFAULT_POLICY_LIMITS).push(Buffer.from('SECRET-MARKER\n'));
      assert.fail('should have thrown');
    } catch (err) {
      assert.ok(err instanceof PolicyCodecError);
      assert.doesNotMatch(err.message, /SECRET/);
    }
  });

  it('refuses invalid limits', () => {
    assert.throws(() => new PolicyDecoder({ maxLineBytes: 0, maxRequestBytes: 10, maxAttributes: 1 }), RangeError);
    assert.throws(() => new PolicyDecoder({ maxLineBytes: 10, maxRequestBytes: 1.5, maxAttributes: 1 }), RangeError);
  });
});

describe('policy codec: ASCII and non-ASCII lines in one chunk', () => {
  // The hot path decodes a chunk once as latin1 and cuts ASCII lines from that string; a line with a
  // byte ≥ 0x80 is decoded on its own as UTF-8. These mix both kinds in one chunk, in either order.
  const MIXED: Attrs = [
    ['request', 'smtpd_access_policy'],
    ['x_ccert_dn', 'CN=mssanté.chu-exemple.fr,O=CHU de Saint-Étienne,C=FR'],
    ['sender', 'a@b.fr'],
    ['helo_name', '日本-😀'],
    ['recipient', 'c@d.fr'],
  ];

  it('keeps every value exact, in one chunk, several requests per chunk and any slicing', () => {
    const expected = MIXED.map(([n, v]) => [n, v]);
    const two = Buffer.concat([wire(MIXED), wire(MIXED, '\r\n')]);
    for (const size of [1, 2, 3, 5, 16, two.length]) {
      assert.deepEqual(feed(slices(two, size)).requests, [expected, expected], `slice size ${size}`);
    }
  });

  it('reports invalid UTF-8 after ASCII lines, and an error on an ASCII line after a non-ASCII one', () => {
    const invalidLate = Buffer.concat([
      Buffer.from('a=1\nb=2\n'),
      Buffer.from([0x63, 0x3d, 0xc3, 0x28, 0x0a]),
      Buffer.from('d=4\n\n'),
    ]);
    assert.equal(feed([invalidLate]).error, 'invalid_utf8');
    assert.equal(feed([Buffer.from('a=é\nb=ü\ngarbage\n\n')]).error, 'malformed_line');
    assert.equal(feed([Buffer.from('a=é\nb=1\nb=2\n\n')]).error, 'duplicate_attribute');
  });

  it('finds a duplicate whichever path each of its two lines took', () => {
    assert.equal(feed([Buffer.from('a=1\na=é\n\n')]).error, 'duplicate_attribute');
    assert.equal(feed([Buffer.from('a=é\na=1\n\n')]).error, 'duplicate_attribute');
    assert.equal(feed([Buffer.from('a=1\nb'), Buffer.from('=2\nb=3\n\n')]).error, 'duplicate_attribute');
  });

  it('reports the first error of the stream when a later line breaks another rule', () => {
    // malformed first, then a UTF-8 error, then a line far too long: the first one wins, as line by line.
    const bytes = Buffer.concat([
      Buffer.from('a=1\njunk\n'),
      Buffer.from([0x62, 0x3d, 0xff, 0x0a]),
      Buffer.from(`c=${'x'.repeat(9000)}\n\n`),
    ]);
    assert.equal(feed([bytes]).error, 'malformed_line');
  });
});

describe('policy codec: limits, at the limit and one byte over', () => {
  const L = DEFAULT_POLICY_LIMITS;

  it('defaults are far above what Postfix sends (8 KiB lines, 64 KiB requests, 100 attributes)', () => {
    assert.equal(L.maxLineBytes, 8192);
    assert.equal(L.maxRequestBytes, 65536);
    assert.equal(L.maxAttributes, 100);
    assert.ok(POSTFIX_37.length * 3 < L.maxAttributes);
  });

  for (const eol of ['\n', '\r\n']) {
    const label = eol === '\n' ? 'LF' : 'CRLF';
    it(`maxLineBytes (${label})`, () => {
      const line = (n: number): Buffer => Buffer.from(`a=${'x'.repeat(n - 2)}${eol}${eol}`);
      for (const size of [1, 16, 128, 4096, 1 << 20]) {
        const ok = feed(slices(line(L.maxLineBytes), size));
        assert.equal(ok.error, null, `slice ${size}`);
        assert.equal(ok.requests[0]?.[0]?.[1]?.length, L.maxLineBytes - 2);
        assert.equal(feed(slices(line(L.maxLineBytes + 1), size)).error, 'line_too_long', `slice ${size}`);
      }
    });

    it(`maxLineBytes at EOF without LF (${label})`, () => {
      const cr = eol === '\r\n' ? '\r' : '';
      assert.equal(feed([Buffer.from(`a=${'x'.repeat(L.maxLineBytes - 2)}${cr}`)]).atEnd?.[0]?.[1]?.length, L.maxLineBytes - 2);
      assert.equal(feed([Buffer.from(`a=${'x'.repeat(L.maxLineBytes - 1)}${cr}`)]).error, 'line_too_long');
    });

    it(`maxRequestBytes (${label})`, () => {
      const exact = requestOfSize(L.maxRequestBytes, L.maxLineBytes, eol);
      const over = requestOfSize(L.maxRequestBytes + 1, L.maxLineBytes, eol);
      for (const size of [1, 16, 128, 4096, 1 << 20]) {
        const ok = feed(slices(exact, size));
        assert.equal(ok.error, null, `slice ${size}`);
        assert.equal(ok.requests.length, 1);
        assert.equal(feed(slices(over, size)).error, 'request_too_large', `slice ${size}`);
      }
    });
  }

  it('maxRequestBytes counts the missing empty line of a request ended by EOF', () => {
    const exact = requestOfSize(L.maxRequestBytes, L.maxLineBytes);
    const unterminated = exact.subarray(0, exact.length - 1);
    assert.equal(feed([unterminated]).atEnd?.length, feed([exact]).requests[0]?.length);
    const over = requestOfSize(L.maxRequestBytes + 1, L.maxLineBytes);
    assert.equal(feed([over.subarray(0, over.length - 1)]).error, 'request_too_large');
  });

  it('maxAttributes', () => {
    const attrs = (n: number): Attrs => Array.from({ length: n }, (_, i) => [`x_${i}`, `${i}`] as const);
    for (const size of [1, 16, 4096]) {
      const ok = feed(slices(wire(attrs(L.maxAttributes)), size));
      assert.equal(ok.requests[0]?.length, L.maxAttributes, `slice ${size}`);
      assert.equal(feed(slices(wire(attrs(L.maxAttributes + 1)), size)).error, 'too_many_attributes', `slice ${size}`);
    }
  });

  it('keeps memory bounded while a too-long line streams in', () => {
    const decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
    const kind = errorKind(() => {
      for (let i = 0; i < 1000; i++) {
        decoder.push(Buffer.alloc(64, 0x78));
        assert.ok(decoder.pendingBytes <= L.maxLineBytes + 1);
      }
    });
    assert.equal(kind, 'line_too_long');
  });
});

describe('policy codec: encoders', () => {
  it('encodes a reply as action=...\\n\\n', () => {
    assert.equal(encodeReply('DUNNO').toString(), 'action=DUNNO\n\n');
    assert.equal(encodeReply('550 5.7.1 refus / refused').toString(), 'action=550 5.7.1 refus / refused\n\n');
  });

  it('keeps a reply on one line whatever the action holds', () => {
    const text = encodeReply('DUNNO\r\n\r\naction=OK\n\nx').toString();
    assert.equal(text.indexOf('\n'), text.length - 2);
    assert.ok(text.startsWith('action=DUNNO'));
    assert.doesNotMatch(text, /\r/);
  });

  it('hands back the same bytes for the same action, and stays right past its cache bound', () => {
    assert.equal(encodeReply('DUNNO'), encodeReply('DUNNO'));
    for (let i = 0; i < 200; i++) assert.equal(encodeReply(`550 5.7.1 n${i}`).toString(), `action=550 5.7.1 n${i}\n\n`);
    assert.equal(encodeReply('DUNNO').toString(), 'action=DUNNO\n\n');
    assert.equal(encodeReply('a\nb').toString(), 'action=a b\n\n');
    assert.equal(encodeReply('a\nb').toString(), 'action=a b\n\n');
    assert.equal(encodeReply('refusé').toString('utf8'), 'action=refusé\n\n');
  });

  it('encodes a request the decoder reads back, in order', () => {
    const [request] = new PolicyDecoder(DEFAULT_POLICY_LIMITS).push(encodeRequest(POSTFIX_37));
    assert.deepEqual(
      request === undefined ? null : asPairs(request),
      POSTFIX_37.map(([n, v]) => [n, v]),
    );
    assert.deepEqual(encodeRequest(new Map([['a', 'b=c']])).toString(), 'a=b=c\n\n');
  });

  it('refuses what cannot be framed', () => {
    assert.throws(() => encodeRequest([['', 'x']]), RangeError);
    assert.throws(() => encodeRequest([['a=b', 'x']]), RangeError);
    assert.throws(() => encodeRequest([['a', 'x\ny=z']]), RangeError);
    assert.throws(() => encodeRequest([['a\r', 'x']]), RangeError);
    assert.throws(() => encodeRequest([]), RangeError);
  });
});

describe('policy codec: random input', () => {
  const SMALL: PolicyLimits = { maxLineBytes: 24, maxRequestBytes: 64, maxAttributes: 6 };
  // Mostly well-formed lines and request ends, some noise: reaches every state, limits and EOF included.
  const eol = fc.constantFrom('\n', '\r\n');
  const goodLine = fc
    .tuple(fc.integer({ min: 0, max: 19 }), fc.constantFrom('', '1', 'v=w', 'é😀', '\uFFFD', 'x'.repeat(12), '+20=+3D'), eol)
    .map(([n, v, e]) => Buffer.from(`n${n}=${v}${e}`));
  const noise = fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 3 }).map((a) => Buffer.from(a)),
    fc.constantFrom('=', '\r', 'abc', 'x'.repeat(30)).map((t) => Buffer.from(t)),
  );
  const structured = fc
    .array(
      fc.oneof(
        { arbitrary: goodLine, weight: 10 },
        { arbitrary: eol.map((e) => Buffer.from(e)), weight: 3 },
        { arbitrary: noise, weight: 1 },
      ),
      {
        maxLength: 60,
      },
    )
    .map((parts) => Buffer.concat(parts));
  const random = fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a));
  const cuts = fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 });

  function cutAt(bytes: Buffer, sizes: number[]): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0, k = 0; i < bytes.length; k++) {
      const n = sizes[k % sizes.length] as number;
      out.push(bytes.subarray(i, i + n));
      i += n;
    }
    return out;
  }

  /** The rules of codec.ts restated the plain way (whole input, TextDecoder), to check the incremental one against. */
  function reference(
    bytes: Buffer,
    limits: PolicyLimits,
  ): { error: PolicyCodecErrorKind | null; requests: string[][][]; atEnd: string[][] | null } {
    const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    const requests: string[][][] = [];
    let attrs: string[][] = [];
    let size = 0;
    const line = (raw: Buffer, wire: number): PolicyCodecErrorKind | 'end' | null => {
      const content = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, raw.length - 1) : raw;
      if (content.length > limits.maxLineBytes) return 'line_too_long';
      size += wire;
      if (size > limits.maxRequestBytes) return 'request_too_large';
      if (content.length === 0) return attrs.length === 0 ? 'malformed_line' : 'end';
      if (size >= limits.maxRequestBytes) return 'request_too_large';
      const eq = content.indexOf(0x3d);
      if (eq <= 0) return 'malformed_line';
      let text: string;
      try {
        text = utf8.decode(content);
      } catch {
        return 'invalid_utf8';
      }
      const name = utf8.decode(content.subarray(0, eq));
      if (attrs.some(([n]) => n === name)) return 'duplicate_attribute';
      if (attrs.length >= limits.maxAttributes) return 'too_many_attributes';
      attrs.push([name, text.slice(name.length + 1)]);
      return null;
    };
    let start = 0;
    for (let lf = bytes.indexOf(0x0a); lf !== -1; start = lf + 1, lf = bytes.indexOf(0x0a, start)) {
      const r = line(bytes.subarray(start, lf), lf - start + 1);
      if (r === 'end') {
        requests.push(attrs);
        attrs = [];
        size = 0;
      } else if (r !== null) return { error: r, requests: [], atEnd: null };
    }
    const rest = bytes.subarray(start);
    if (rest.length > 0) {
      const content = rest[rest.length - 1] === 0x0d ? rest.subarray(0, rest.length - 1) : rest;
      // A partial line is refused as soon as it cannot fit any more, EOF or not.
      if (content.length > limits.maxLineBytes) return { error: 'line_too_long', requests: [], atEnd: null };
      if (content.length > 0 && content.indexOf(0x3d) === -1) return { error: 'truncated', requests: [], atEnd: null };
      const r = line(rest, rest.length + 1);
      if (r === 'end') return { error: null, requests, atEnd: attrs };
      if (r !== null) return { error: r, requests: [], atEnd: null };
    }
    return { error: null, requests, atEnd: attrs.length > 0 ? attrs : null };
  }

  for (const [label, input] of [
    ['random bytes', random],
    ['protocol-like tokens', structured],
  ] as const) {
    for (const [limitsLabel, limits] of [
      ['small limits', SMALL],
      ['default limits', DEFAULT_POLICY_LIMITS],
    ] as const) {
      it(`${label}, ${limitsLabel}: only PolicyCodecError, bounded memory, same outcome in any slicing and as the plain reference`, () => {
        fc.assert(
          fc.property(input, cuts, (bytes, sizes) => {
            const bound = limits.maxRequestBytes + limits.maxLineBytes;
            // feed() rethrows anything that is not a PolicyCodecError, failing the property.
            const whole = feed([bytes], limits);
            const expected = reference(bytes, limits);
            assert.equal(whole.error, expected.error);
            if (expected.error === null) assert.deepEqual(whole, expected);
            const sliced = feed(cutAt(bytes, sizes), limits, (d) => assert.ok(d.pendingBytes <= bound));
            assert.equal(sliced.error, whole.error);
            if (whole.error === null) assert.deepEqual(sliced, whole);
          }),
          { numRuns: FUZZ_RUNS },
        );
      });
    }
  }
});
