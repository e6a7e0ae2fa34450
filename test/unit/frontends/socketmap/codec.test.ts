import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  SocketmapCodecError,
  SocketmapDecoder,
  decodeReply,
  encodeReply,
  encodeRequest,
  type SocketmapCodecErrorKind,
  type SocketmapLimits,
  type SocketmapRequest,
} from '../../../../src/frontends/socketmap/codec.js';
import { DEFAULT_SOCKETMAP_LIMITS } from '../../../../src/listener-defaults.js';

const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);

/** What Postfix sends for each map and key form (see test/system/e2e/socketmap-postmap.test.ts for the real thing). */
const REQUESTS: ReadonlyArray<readonly [string, string]> = [
  ['mssante-domain', 'chu-exemple.mssante.fr'],
  ['mssante-tls-policy', 'chu-exemple.mssante.fr'],
  ['mssante-transport', 'dr.martin+ext@chu-exemple.mssante.fr'],
  ['mssante-transport', '.mssante.fr'],
  ['mssante-transport', '*'],
  ['mssante-recipient-access', 'dr.martin@chu-exemple.mssante.fr'],
  ['mssante-recipient-access', 'dr.martin@'],
  ['mssante-recipient-access', 'hôpital-exemple.fr'],
  ['mssante-recipient-access', 'a key with spaces'],
  ['mssante-domain', ''],
];

function wire(requests: ReadonlyArray<readonly [string, string]>): Buffer {
  return Buffer.concat(requests.map(([n, k]) => encodeRequest(n, k)));
}

function slices(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

type Outcome = { requests: Array<[string, string]>; error: SocketmapCodecErrorKind | null };

function feed(
  chunks: readonly Buffer[],
  limits: SocketmapLimits = DEFAULT_SOCKETMAP_LIMITS,
  onPush?: (d: SocketmapDecoder) => void,
): Outcome {
  const decoder = new SocketmapDecoder(limits);
  const requests: Array<[string, string]> = [];
  const take = (rs: SocketmapRequest[]): void => {
    for (const r of rs) requests.push([r.name, r.key]);
  };
  try {
    for (const chunk of chunks) {
      take(decoder.push(chunk));
      onPush?.(decoder);
    }
    decoder.end();
    return { requests, error: null };
  } catch (err) {
    if (!(err instanceof SocketmapCodecError)) throw err;
    take([...err.completed]);
    return { requests, error: err.kind };
  }
}

describe('socketmap decoder: framing', () => {
  const bytes = wire(REQUESTS);
  for (const size of [1, 16, 128, 4096]) {
    it(`decodes every request fed in slices of ${size} bytes`, () => {
      const got = feed(slices(bytes, size));
      assert.equal(got.error, null);
      assert.deepEqual(
        got.requests,
        REQUESTS.map(([n, k]) => [n, k]),
      );
    });
  }

  it('splits at the first space only: the key keeps its spaces', () => {
    assert.deepEqual(feed([Buffer.from('9:m a b  c ,')]).requests, [['m', 'a b  c ']]);
  });

  it('accepts an empty key and leading zeros in the length', () => {
    assert.deepEqual(feed([Buffer.from('002:m ,')]).requests, [['m', '']]);
  });

  it('decodes a multi-byte UTF-8 key cut inside a character', () => {
    const b = encodeRequest('mssante-domain', 'hôpital.fr');
    const cut = b.indexOf(0xc3) + 1;
    const got = feed([b.subarray(0, cut), b.subarray(cut)]);
    assert.deepEqual(got.requests, [['mssante-domain', 'hôpital.fr']]);
  });

  it('tells how many bytes are pending and whether a request is half-read', () => {
    const d = new SocketmapDecoder(DEFAULT_SOCKETMAP_LIMITS);
    assert.equal(d.midRequest, false);
    d.push(Buffer.from('11:mssant'));
    assert.equal(d.midRequest, true);
    assert.equal(d.pendingBytes, 9);
    assert.deepEqual(d.push(Buffer.from('e-x k,')), [{ name: 'mssante-x', key: 'k' }]);
    assert.equal(d.midRequest, false);
    assert.equal(d.pendingBytes, 0);
  });
});

describe('socketmap decoder: errors', () => {
  const cases: ReadonlyArray<readonly [string, string, SocketmapCodecErrorKind]> = [
    ['no digits before the colon', ':m k,', 'bad_length'],
    ['a letter in the length', '1x:m k,', 'bad_length'],
    ['a sign in the length', '-3:m k,', 'bad_length'],
    ['eleven digits', '00000000003:m k,', 'bad_length'],
    ['no comma after the payload', '3:m k;', 'missing_comma'],
    ['a payload longer than announced', '2:m k,', 'missing_comma'],
    ['no space', '3:mkk,', 'malformed_request'],
    ['an empty map name', '3: kk,', 'malformed_request'],
    ['an empty payload', '0:,', 'malformed_request'],
    ['EOF inside the payload', '5:m k', 'truncated'],
    ['EOF inside the length', '12', 'truncated'],
    ['EOF before the comma', '3:m k', 'truncated'],
  ];
  for (const [what, text, kind] of cases) {
    it(`${what} → ${kind}`, () => {
      for (const size of [1, 16, 4096])
        assert.equal(feed(slices(Buffer.from(text, 'latin1'), size)).error, kind, `slices of ${size}`);
    });
  }

  it('invalid UTF-8 in the key → invalid_utf8', () => {
    assert.equal(feed([Buffer.concat([Buffer.from('4:m '), Buffer.from([0xc3, 0x28]), Buffer.from(',')])]).error, 'invalid_utf8');
  });

  it('requests completed before the fault, in the same chunk, come with the error', () => {
    const got = feed([Buffer.concat([encodeRequest('m', 'a'), Buffer.from('x')])]);
    assert.deepEqual(got.requests, [['m', 'a']]);
    assert.equal(got.error, 'bad_length');
  });

  it('a failed decoder stays failed', () => {
    const d = new SocketmapDecoder(DEFAULT_SOCKETMAP_LIMITS);
    assert.throws(() => d.push(Buffer.from('x')), SocketmapCodecError);
    assert.throws(
      () => d.push(encodeRequest('m', 'k')),
      (e: unknown) => e instanceof SocketmapCodecError && e.kind === 'bad_length',
    );
  });

  it('EOF between requests is a clean end', () => {
    assert.equal(feed([encodeRequest('m', 'k')]).error, null);
  });
});

describe('socketmap decoder: request size limit', () => {
  it("defaults to Postfix's 100 000 bytes", () => {
    assert.equal(DEFAULT_SOCKETMAP_LIMITS.maxRequestBytes, 100_000);
  });

  it('takes a payload of exactly the limit and refuses one byte more', () => {
    const limits = { maxRequestBytes: 64 };
    const exact = encodeRequest('m', 'k'.repeat(62));
    assert.deepEqual(feed([exact], limits).requests, [['m', 'k'.repeat(62)]]);
    assert.equal(feed([encodeRequest('m', 'k'.repeat(63))], limits).error, 'request_too_large');
  });

  it('refuses on the length prefix, before buffering any payload', () => {
    const d = new SocketmapDecoder({ maxRequestBytes: 100_000 });
    assert.throws(
      () => d.push(Buffer.from('100001')),
      (e: unknown) => e instanceof SocketmapCodecError && e.kind === 'request_too_large',
    );
  });

  it('refuses an invalid limit', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) assert.throws(() => new SocketmapDecoder({ maxRequestBytes: bad }), RangeError);
  });
});

describe('socketmap replies', () => {
  it('encodes the four answers as socketmap_table(5) writes them', () => {
    assert.equal(encodeReply({ status: 'OK', text: 'smtp-mssante:' }).toString(), '16:OK smtp-mssante:,');
    assert.equal(encodeReply({ status: 'NOTFOUND', text: 'ignored' }).toString(), '9:NOTFOUND ,');
    assert.equal(encodeReply({ status: 'TEMP', text: 'no list' }).toString(), '12:TEMP no list,');
    assert.equal(encodeReply({ status: 'PERM', text: 'unknown map' }).toString(), '16:PERM unknown map,');
  });

  it('counts the length in bytes, not characters', () => {
    assert.equal(encodeReply({ status: 'OK', text: 'é' }).toString(), '5:OK é,');
  });

  it('turns control characters into spaces so a value cannot forge a second reply', () => {
    assert.equal(encodeReply({ status: 'OK', text: 'a\r\n3:OK ,' }).toString(), '12:OK a  3:OK ,,');
  });

  it('decodes what it encodes, with the bytes that follow', () => {
    const two = Buffer.concat([encodeReply({ status: 'OK', text: 'x y' }), encodeReply({ status: 'NOTFOUND', text: '' })]);
    const first = decodeReply(two);
    assert.deepEqual(first?.reply, { status: 'OK', text: 'x y' });
    assert.deepEqual(decodeReply(first.rest)?.reply, { status: 'NOTFOUND', text: '' });
    assert.equal(decodeReply(Buffer.from('9:NOTFOU')), null);
  });
});

describe('socketmap decoder: random input', () => {
  it('random bytes never throw anything but a SocketmapCodecError, and keep pending bytes bounded', () => {
    const limits = { maxRequestBytes: 256 };
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }), (chunks) => {
        feed(
          chunks.map((c) => Buffer.from(c)),
          limits,
          (d) => assert.ok(d.pendingBytes <= 10 + 1 + limits.maxRequestBytes),
        );
      }),
      { numRuns: FUZZ_RUNS },
    );
  });

  it('random netstring-like input gives the same outcome however it is sliced', () => {
    const piece = fc.oneof(
      fc.constantFrom('3:m k,', '0:,', ':', ',', ' ', '12:', 'mssante-domain '),
      fc.string({ maxLength: 12 }),
      fc
        .tuple(fc.string({ maxLength: 6 }), fc.string({ maxLength: 20 }))
        .map(([n, k]) => `${Buffer.byteLength(`${n} ${k}`)}:${n} ${k},`),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 10 }), fc.integer({ min: 1, max: 40 }), (pieces, size) => {
        const bytes = Buffer.from(pieces.join(''), 'utf8');
        assert.deepEqual(feed(slices(bytes, size), { maxRequestBytes: 64 }), feed([bytes], { maxRequestBytes: 64 }));
      }),
      { numRuns: FUZZ_RUNS },
    );
  });

  it('any name and key round-trip through encodeRequest and the decoder', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 20 }).filter((n) => !n.includes(' ')),
        fc.string({ maxLength: 200 }),
        (name, key) => {
          assert.deepEqual(feed([encodeRequest(name, key)]).requests, [[name, key]]);
        },
      ),
      { numRuns: FUZZ_RUNS },
    );
  });
});
