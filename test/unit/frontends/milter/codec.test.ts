import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  MilterCodecError,
  MilterDecoder,
  SMFIC,
  SMFIF,
  SMFIM,
  SMFIP,
  decodePacket,
  encodeAccept,
  encodeConnect,
  encodeContinue,
  encodeHelo,
  encodeMacro,
  encodeMail,
  encodeOptneg,
  encodeOptnegReply,
  encodeRaw,
  encodeRcpt,
  encodeReject,
  encodeReplyCode,
  encodeTempfail,
  splitPackets,
  type MilterCodecErrorKind,
  type MilterCommand,
} from '../../../../src/frontends/milter/codec.js';
import { DEFAULT_MAX_MILTER_PACKET_BYTES } from '../../../../src/listener-defaults.js';

const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);

/** What Postfix 3.7 sends for one TLS session with two messages (macro lists of its defaults). */
const POSTFIX_SESSION: Buffer[] = [
  encodeOptneg(6, 0x1ff, 0x1fffff),
  encodeMacro('C', [
    ['j', 'mx.chu-exemple.fr'],
    ['{daemon_name}', 'mx.chu-exemple.fr'],
    ['{daemon_addr}', '198.51.100.10'],
    ['v', 'Postfix 3.7.11'],
    ['_', 'mx.ch-exemple.fr [192.0.2.25]'],
  ]),
  encodeConnect('mx.ch-exemple.fr', 'inet', 41822, '192.0.2.25'),
  encodeMacro('H', [
    ['{tls_version}', 'TLSv1.3'],
    ['{cipher}', 'TLS_AES_256_GCM_SHA384'],
    ['{cipher_bits}', '256'],
    ['{cert_subject}', 'mx.ch-exemple.fr'],
    ['{cert_issuer}', 'TEST AC IGC-SANTE ÉLÉMENTAIRE ORGANISATIONS'],
  ]),
  encodeHelo('mx.ch-exemple.fr'),
  encodeMacro('M', [
    ['i', '4XyZ1k2Lm'],
    ['{auth_authen}', ''],
    ['{mail_addr}', 'dr.martin@ch-exemple.mssante.fr'],
  ]),
  encodeMail(['<dr.martin@ch-exemple.mssante.fr>', 'SIZE=48213', 'BODY=8BITMIME']),
  encodeMacro('R', [['{rcpt_addr}', 'secretariat@chu-exemple.mssante.fr']]),
  encodeMacro('T', []),
  encodeMacro('E', [['i', '4XyZ1k2Lm']]),
  encodeRaw(SMFIC.BODYEOB),
  encodeMacro('M', [
    ['i', '4XyZ1k2Ln'],
    ['{mail_addr}', ''],
  ]),
  encodeMail(['<>']),
  encodeRaw(SMFIC.ABORT),
  encodeRaw(SMFIC.QUIT),
];

const POSTFIX_EXPECTED: MilterCommand[] = [
  { type: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff },
  {
    type: 'macro',
    stage: 'C',
    macros: [
      ['j', 'mx.chu-exemple.fr'],
      ['{daemon_name}', 'mx.chu-exemple.fr'],
      ['{daemon_addr}', '198.51.100.10'],
      ['v', 'Postfix 3.7.11'],
      ['_', 'mx.ch-exemple.fr [192.0.2.25]'],
    ],
  },
  { type: 'connect', hostname: 'mx.ch-exemple.fr', family: 'inet', port: 41822, address: '192.0.2.25' },
  {
    type: 'macro',
    stage: 'H',
    macros: [
      ['{tls_version}', 'TLSv1.3'],
      ['{cipher}', 'TLS_AES_256_GCM_SHA384'],
      ['{cipher_bits}', '256'],
      ['{cert_subject}', 'mx.ch-exemple.fr'],
      ['{cert_issuer}', 'TEST AC IGC-SANTE ÉLÉMENTAIRE ORGANISATIONS'],
    ],
  },
  { type: 'helo', name: 'mx.ch-exemple.fr' },
  {
    type: 'macro',
    stage: 'M',
    macros: [
      ['i', '4XyZ1k2Lm'],
      ['{auth_authen}', ''],
      ['{mail_addr}', 'dr.martin@ch-exemple.mssante.fr'],
    ],
  },
  { type: 'mail', args: ['<dr.martin@ch-exemple.mssante.fr>', 'SIZE=48213', 'BODY=8BITMIME'] },
  { type: 'macro', stage: 'R', macros: [['{rcpt_addr}', 'secretariat@chu-exemple.mssante.fr']] },
  { type: 'macro', stage: 'T', macros: [] },
  { type: 'macro', stage: 'E', macros: [['i', '4XyZ1k2Lm']] },
  { type: 'bodyeob', dataBytes: 0 },
  {
    type: 'macro',
    stage: 'M',
    macros: [
      ['i', '4XyZ1k2Ln'],
      ['{mail_addr}', ''],
    ],
  },
  { type: 'mail', args: ['<>'] },
  { type: 'abort' },
  { type: 'quit' },
];

/** Sendmail style, every other command and family, and a full-size body chunk. */
const SENDMAIL_SESSION: Buffer[] = [
  encodeOptneg(2, 0x3f, 0x7f),
  encodeMacro('C', [
    ['j', 'mx.example'],
    ['_', 'client [2001:db8::25]'],
  ]),
  encodeConnect('client.example', 'inet6', 25025, '2001:db8::25'),
  encodeMacro('H', [
    ['{verify}', 'OK'],
    ['{cert_subject}', '/C=FR/ST=Paris+20(75)/O=CH+20EXEMPLE/OU=10000000001/CN=mx.ch-exemple.fr'],
  ]),
  encodeHelo('client.example'),
  encodeMail(['<a@b.example>']),
  encodeRcpt(['<c@d.example>', 'NOTIFY=NEVER']),
  encodeRaw(SMFIC.DATA),
  encodeRaw(SMFIC.HEADER, Buffer.from('Subject\0hello\0')),
  encodeRaw(SMFIC.EOH),
  encodeRaw(SMFIC.BODY, Buffer.alloc(65_535, 0x41)),
  encodeRaw(SMFIC.BODYEOB),
  encodeRaw(SMFIC.UNKNOWN, Buffer.from('XFOO bar\0')),
  encodeRaw(SMFIC.QUIT_NC),
  encodeConnect('localhost', 'unix', 0, '/var/run/sendmail.sock'),
  encodeConnect('unknown', 'unknown', 0, ''),
  encodeRaw(SMFIC.QUIT),
];

function decodeAll(stream: Buffer, slice: number, max = DEFAULT_MAX_MILTER_PACKET_BYTES): MilterCommand[] {
  const decoder = new MilterDecoder({ maxPacketBytes: max });
  const out: MilterCommand[] = [];
  for (let i = 0; i < stream.length; i += slice) {
    out.push(...decoder.push(stream.subarray(i, i + slice)));
    assert.ok(decoder.bufferedBytes <= max + 4, 'buffered bytes stay bounded');
  }
  assert.equal(decoder.bufferedBytes, 0);
  return out;
}

function codecError(fn: () => unknown, kind: MilterCodecErrorKind): void {
  assert.throws(fn, (err: unknown) => err instanceof MilterCodecError && err.kind === kind);
}

describe('milter decoder', () => {
  it('decodes a Postfix session into typed commands', () => {
    assert.deepEqual(decodeAll(Buffer.concat(POSTFIX_SESSION), 1 << 20), POSTFIX_EXPECTED);
  });

  it('decodes every command type and address family of a Sendmail session', () => {
    const commands = decodeAll(Buffer.concat(SENDMAIL_SESSION), 1 << 20);
    assert.deepEqual(
      commands.map((c) => c.type),
      [
        'optneg',
        'macro',
        'connect',
        'macro',
        'helo',
        'mail',
        'rcpt',
        'data',
        'header',
        'eoh',
        'body',
        'bodyeob',
        'unknown',
        'quit_nc',
        'connect',
        'connect',
        'quit',
      ],
    );
    assert.deepEqual(commands[2], {
      type: 'connect',
      hostname: 'client.example',
      family: 'inet6',
      port: 25025,
      address: '2001:db8::25',
    });
    assert.deepEqual(commands[6], { type: 'rcpt', args: ['<c@d.example>', 'NOTIFY=NEVER'] });
    assert.deepEqual(commands[10], { type: 'body', dataBytes: 65_535 });
    assert.deepEqual(commands[14], {
      type: 'connect',
      hostname: 'localhost',
      family: 'unix',
      port: 0,
      address: '/var/run/sendmail.sock',
    });
    assert.deepEqual(commands[15], { type: 'connect', hostname: 'unknown', family: 'unknown', port: null, address: null });
  });

  for (const [name, session] of [
    ['Postfix', POSTFIX_SESSION],
    ['Sendmail', SENDMAIL_SESSION],
  ] as const) {
    it(`gives the same commands for the ${name} stream fed in slices of 1, 16, 128 and 4096 bytes`, () => {
      const stream = Buffer.concat(session);
      const whole = decodeAll(stream, stream.length);
      for (const slice of [1, 16, 128, 4096]) assert.deepEqual(decodeAll(stream, slice), whole, `slice ${slice}`);
    });
  }

  it('accepts a packet of exactly maxPacketBytes and refuses one byte more as soon as the length is read', () => {
    const max = 1000;
    const at = encodeRaw(SMFIC.BODY, Buffer.alloc(max - 1));
    assert.deepEqual(new MilterDecoder({ maxPacketBytes: max }).push(at), [{ type: 'body', dataBytes: max - 1 }]);
    const over = encodeRaw(SMFIC.BODY, Buffer.alloc(max));
    // Only the 4 length bytes: the decoder refuses before buffering any data.
    codecError(() => new MilterDecoder({ maxPacketBytes: max }).push(over.subarray(0, 4)), 'packet_too_large');
  });

  it('accepts the largest body chunk an MTA sends with the default limit', () => {
    const chunk = encodeRaw(SMFIC.BODY, Buffer.alloc(65_535));
    assert.deepEqual(new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES }).push(chunk), [
      { type: 'body', dataBytes: 65_535 },
    ]);
    codecError(
      () =>
        new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES }).push(
          encodeRaw(SMFIC.BODY, Buffer.alloc(DEFAULT_MAX_MILTER_PACKET_BYTES)),
        ),
      'packet_too_large',
    );
  });

  it('holds at most one partial packet', () => {
    const max = 5000;
    const decoder = new MilterDecoder({ maxPacketBytes: max });
    const packet = encodeRaw(SMFIC.BODY, Buffer.alloc(max - 1));
    decoder.push(packet.subarray(0, packet.length - 1));
    assert.equal(decoder.bufferedBytes, max + 3);
    assert.deepEqual(decoder.push(packet.subarray(packet.length - 1)), [{ type: 'body', dataBytes: max - 1 }]);
    assert.equal(decoder.bufferedBytes, 0);
  });

  it('refuses a zero length', () => {
    codecError(
      () => new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES }).push(Buffer.from([0, 0, 0, 0])),
      'empty_packet',
    );
  });

  it('refuses an unknown command on its first byte', () => {
    codecError(
      () => new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES }).push(Buffer.from([0, 0, 0x10, 0, 0x7a])),
      'unknown_command',
    );
    const err = (() => {
      try {
        new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES }).push(Buffer.from([0, 0, 0, 1, 0x5a]));
      } catch (e) {
        return e;
      }
      return null;
    })();
    assert.ok(err instanceof MilterCodecError);
    assert.equal(err.command, 'Z');
  });

  it('stays failed after an error', () => {
    const decoder = new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES });
    codecError(() => decoder.push(Buffer.from([0, 0, 0, 0])), 'empty_packet');
    codecError(() => decoder.push(encodeRaw(SMFIC.QUIT)), 'empty_packet');
  });

  it('refuses malformed command data', () => {
    const cases: Array<[string, Buffer]> = [
      ['OPTNEG shorter than 12 bytes', encodeRaw(SMFIC.OPTNEG, Buffer.alloc(11))],
      ['MACRO without a stage', encodeRaw(SMFIC.MACRO)],
      ['MACRO for an unknown stage', encodeRaw(SMFIC.MACRO, Buffer.from('Zi\0x\0'))],
      ['MACRO name without value', encodeRaw(SMFIC.MACRO, Buffer.from('Mi\0'))],
      ['MACRO value without NUL', encodeRaw(SMFIC.MACRO, Buffer.from('Mi\0x'))],
      ['CONNECT without NUL', encodeRaw(SMFIC.CONNECT, Buffer.from('host'))],
      ['CONNECT without family', encodeRaw(SMFIC.CONNECT, Buffer.from('host\0'))],
      ['CONNECT unknown family', encodeRaw(SMFIC.CONNECT, Buffer.from('host\0X\0\0a\0'))],
      ['CONNECT family U followed by data', encodeRaw(SMFIC.CONNECT, Buffer.from('host\0Uxx'))],
      ['CONNECT without port', encodeRaw(SMFIC.CONNECT, Buffer.from('host\x004\0'))],
      ['CONNECT address without NUL', encodeRaw(SMFIC.CONNECT, Buffer.from('host\x004\0\x191.2.3.4'))],
      ['CONNECT two addresses', encodeRaw(SMFIC.CONNECT, Buffer.from('host\x004\0\x191.2.3.4\x005.6.7.8\0'))],
      ['HELO empty', encodeRaw(SMFIC.HELO)],
      ['HELO two strings', encodeRaw(SMFIC.HELO, Buffer.from('a\0b\0'))],
      ['HELO without NUL', encodeRaw(SMFIC.HELO, Buffer.from('a'))],
      ['MAIL without address', encodeRaw(SMFIC.MAIL)],
      ['RCPT without NUL', encodeRaw(SMFIC.RCPT, Buffer.from('<a@b>'))],
    ];
    for (const [name, packet] of cases) {
      assert.throws(
        () => new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES }).push(packet),
        (err: unknown) => err instanceof MilterCodecError && err.kind === 'malformed',
        name,
      );
    }
  });

  it('rejects a limit too small to negotiate', () => {
    assert.throws(() => new MilterDecoder({ maxPacketBytes: 12 }), RangeError);
    assert.throws(() => new MilterDecoder({ maxPacketBytes: 1.5 }), RangeError);
  });

  it('throws only MilterCodecError on random bytes, with bounded buffering', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 600 }),
        fc.integer({ min: 13, max: 300 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }),
        (bytes, max, slices) => {
          const decoder = new MilterDecoder({ maxPacketBytes: max });
          const buf = Buffer.from(bytes);
          let pos = 0;
          let i = 0;
          try {
            while (pos < buf.length) {
              const n = slices[i++ % slices.length]!;
              decoder.push(buf.subarray(pos, pos + n));
              pos += n;
              if (decoder.bufferedBytes > max + 4) return false;
            }
          } catch (err) {
            return err instanceof MilterCodecError;
          }
          return true;
        },
      ),
      { numRuns: FUZZ_RUNS },
    );
  });

  it('throws only MilterCodecError on well-framed packets with random data', () => {
    const commands = Object.values(SMFIC);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(...commands), fc.uint8Array({ maxLength: 40 })), { minLength: 1, maxLength: 6 }),
        (packets) => {
          const stream = Buffer.concat(packets.map(([cmd, data]) => encodeRaw(cmd, Buffer.from(data))));
          try {
            const out = new MilterDecoder({ maxPacketBytes: DEFAULT_MAX_MILTER_PACKET_BYTES }).push(stream);
            return out.length === packets.length;
          } catch (err) {
            return err instanceof MilterCodecError && err.kind === 'malformed';
          }
        },
      ),
      { numRuns: FUZZ_RUNS },
    );
  });

  it('decodePacket refuses an empty packet', () => {
    codecError(() => decodePacket(Buffer.alloc(0)), 'empty_packet');
  });
});

describe('milter encoders', () => {
  it('frames one-byte replies', () => {
    assert.deepEqual(encodeContinue(), Buffer.from([0, 0, 0, 1, 0x63]));
    assert.deepEqual(encodeAccept(), Buffer.from([0, 0, 0, 1, 0x61]));
    assert.deepEqual(encodeReject(), Buffer.from([0, 0, 0, 1, 0x72]));
    assert.deepEqual(encodeTempfail(), Buffer.from([0, 0, 0, 1, 0x74]));
  });

  it('writes REPLYCODE as code, text and NUL, with % doubled', () => {
    const packet = encodeReplyCode('550', '5.7.1 Refus a 100% / rejected');
    const line = '550 5.7.1 Refus a 100%% / rejected\0';
    assert.equal(packet.readUInt32BE(0), 1 + line.length);
    assert.equal(String.fromCharCode(packet[4]!), 'y');
    assert.equal(packet.subarray(5).toString('latin1'), line);
  });

  it('keeps a REPLYCODE on one printable ASCII line', () => {
    const text = (p: Buffer): string => p.subarray(5, p.length - 1).toString('latin1');
    assert.equal(text(encodeReplyCode('451', '4.3.0 a\r\n250 ok\0 é')), '451 4.3.0 a??250 ok? ?');
    const long = text(encodeReplyCode('550', `5.7.1 ${'x'.repeat(2000)}`));
    assert.equal(long.length, 510);
  });

  it('refuses codes an MTA would reject as malformed', () => {
    assert.throws(() => encodeReplyCode('250', '2.0.0 ok'), RangeError);
    assert.throws(() => encodeReplyCode('55', '5.7.1 x'), RangeError);
    assert.throws(() => encodeReplyCode('550', '4.7.1 class differs'), RangeError);
    assert.throws(() => encodeReplyCode('550', 'no enhanced code'), RangeError);
  });

  it('appends SETSYMLIST lists to the OPTNEG reply', () => {
    const packet = encodeOptnegReply({
      version: 6,
      actions: SMFIF.SETSYMLIST,
      protocol: SMFIP.NORCPT | SMFIP.NR_CONN,
      symlists: [
        { stage: SMFIM.HELO, names: ['{verify}', '{cert_subject}'] },
        { stage: SMFIM.ENVFROM, names: ['i'] },
      ],
    });
    const { packets, rest } = splitPackets(packet, DEFAULT_MAX_MILTER_PACKET_BYTES);
    assert.equal(rest.length, 0);
    const body = packets[0]!;
    assert.equal(String.fromCharCode(body[0]!), 'O');
    assert.equal(body.readUInt32BE(1), 6);
    assert.equal(body.readUInt32BE(5), 0x100);
    assert.equal(body.readUInt32BE(9), 0x1008);
    assert.equal(body.readUInt32BE(13), 1);
    assert.equal(body.subarray(17, 17 + 24).toString('latin1'), '{verify} {cert_subject}\0');
    assert.equal(body.readUInt32BE(41), 2);
    assert.equal(body.subarray(45).toString('latin1'), 'i\0');
    assert.equal(encodeOptnegReply({ version: 2, actions: 0, protocol: 0 }).length, 17);
  });

  it('refuses symbol lists that would corrupt the reply', () => {
    assert.throws(
      () => encodeOptnegReply({ version: 6, actions: 0, protocol: 0, symlists: [{ stage: 7, names: ['i'] }] }),
      RangeError,
    );
    assert.throws(
      () => encodeOptnegReply({ version: 6, actions: 0, protocol: 0, symlists: [{ stage: 1, names: ['a b'] }] }),
      RangeError,
    );
  });

  it('round-trips MTA commands through the decoder', () => {
    assert.deepEqual(
      decodePacket(splitPackets(encodeMacro('H', [['{verify}', 'OK']]), DEFAULT_MAX_MILTER_PACKET_BYTES).packets[0]!),
      {
        type: 'macro',
        stage: 'H',
        macros: [['{verify}', 'OK']],
      },
    );
    assert.deepEqual(
      decodePacket(splitPackets(encodeConnect('h', 'inet', 65535, '192.0.2.1'), DEFAULT_MAX_MILTER_PACKET_BYTES).packets[0]!),
      {
        type: 'connect',
        hostname: 'h',
        family: 'inet',
        port: 65535,
        address: '192.0.2.1',
      },
    );
    assert.deepEqual(decodePacket(splitPackets(encodeHelo('héllo'), DEFAULT_MAX_MILTER_PACKET_BYTES).packets[0]!), {
      type: 'helo',
      name: 'héllo',
    });
  });
});
