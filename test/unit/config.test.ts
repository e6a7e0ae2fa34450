import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  ConfigError,
  DEMO_SIGNER,
  DEMO_WHITELIST,
  envName,
  resolveConfig,
  resolveSettings,
  settingParseOptions,
  settingsHelp,
  SETTINGS,
  type FlagValues,
} from '../../src/config.js';

const flags = (entries: Array<[string, string | boolean | string[]]>): FlagValues => new Map(entries);

function configFile(content: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'config.json');
  writeFileSync(path, JSON.stringify(content));
  return path;
}

describe('resolveConfig', () => {
  it('per-operator throttle: off by default; --operator-rate, --operator-burst, mode and exemptions typed and checked', () => {
    const off = resolveConfig(flags([['whitelist', 'demo']]), {}, null);
    assert.equal(off.operatorRate, 0);
    assert.equal(off.operatorBurst, 0);
    assert.equal(off.operatorRateMode, 'enforce');
    assert.deepEqual(off.operatorRateExempt, []);
    const on = resolveConfig(
      flags([
        ['whitelist', 'demo'],
        ['operator-rate', '5'],
        ['operator-burst', '10'],
        ['operator-rate-mode', 'observe'],
        ['operator-rate-exempt', ['mx.op1.fr', 'CN=a.fr,O=X,C=FR']],
      ]),
      {},
      null,
    );
    assert.equal(on.operatorRate, 5);
    assert.equal(on.operatorBurst, 10);
    assert.equal(on.operatorRateMode, 'observe');
    assert.deepEqual(on.operatorRateExempt, ['mx.op1.fr', 'CN=a.fr,O=X,C=FR']);
    assert.throws(
      () =>
        resolveConfig(
          flags([
            ['whitelist', 'demo'],
            ['operator-rate-mode', 'drop'],
          ]),
          {},
          null,
        ),
      ConfigError,
    );
    assert.throws(
      () =>
        resolveConfig(
          flags([
            ['whitelist', 'demo'],
            ['operator-rate', '-1'],
          ]),
          {},
          null,
        ),
      ConfigError,
    );
    assert.throws(
      () =>
        resolveConfig(
          flags([
            ['whitelist', 'demo'],
            ['operator-rate-exempt', ['=broken']],
          ]),
          {},
          null,
        ),
      /neither a CN nor a DN/,
    );
  });

  it('refuses to run without a whitelist: the demo list must be asked for by name', () => {
    assert.throws(
      () => resolveConfig(flags([]), {}, null),
      (e: unknown) => e instanceof ConfigError && /no whitelist given.*"demo"/.test(e.message),
    );
    // The hurried operator's config file: everything but the list.
    assert.throws(
      () => resolveConfig(flags([]), {}, configFile({ signer: ['/s.pem'], 'policy-listen': '127.0.0.1:10040' })),
      /no whitelist given/,
    );
    assert.throws(() => resolveConfig(flags([['whitelist', '']]), {}, null), /no whitelist given/);
  });

  it('--whitelist repeated: ordered sources, http:// (a peer mirror) accepted, the first is `whitelist`', () => {
    const c = resolveConfig(
      flags([
        ['whitelist', ['https://ans.example/l.xml', 'http://mx2.example:9464/v1/whitelist/signed', '/var/l.xml']],
        ['allow-unsigned', true],
      ]),
      {},
      null,
    );
    assert.deepEqual(c.whitelistSources, [
      'https://ans.example/l.xml',
      'http://mx2.example:9464/v1/whitelist/signed',
      '/var/l.xml',
    ]);
    assert.equal(c.whitelist, 'https://ans.example/l.xml');
  });

  it('--whitelist demo serves the demo list verified by the demo signer', () => {
    const c = resolveConfig(flags([['whitelist', 'demo']]), {}, null);
    assert.equal(c.whitelistIsDemo, true);
    assert.equal(c.whitelist, DEMO_WHITELIST);
    assert.deepEqual(c.signer, [DEMO_SIGNER]);
    assert.equal(c.policyListen, '127.0.0.1:10040');
    assert.equal(c.httpListen, '127.0.0.1:9464');
    assert.equal(c.milterListen, null);
    assert.equal(c.refreshSeconds, 3600);
    assert.equal(c.idleTimeoutSeconds, 330, 'above Postfix smtpd_policy_service_max_idle (300 s)');
    assert.equal(c.requestTimeoutSeconds, 110, 'above Postfix smtpd_policy_service_timeout (100 s)');
    assert.equal(c.maxLineBytes, 8192);
    assert.equal(c.maxRequestBytes, 65536);
    assert.equal(c.maxAttributes, 100);
  });

  it('applies flag > env > file > default, and says where each value came from', () => {
    const file = configFile({
      refresh: 600,
      'max-shrink': 20,
      'policy-listen': '127.0.0.1:1',
      signer: ['/f.pem'],
      whitelist: '/list.xml',
    });
    const env = { [envName('refresh')]: '700', [envName('policy-listen')]: '127.0.0.1:2' };
    const c = resolveConfig(flags([['refresh', '800']]), env, file);
    assert.equal(c.refreshSeconds, 800);
    assert.equal(c.origins.refresh, 'flag');
    assert.equal(c.policyListen, '127.0.0.1:2');
    assert.equal(c.origins['policy-listen'], 'env');
    assert.equal(c.maxShrinkPercent, 20);
    assert.equal(c.origins['max-shrink'], 'file');
    assert.deepEqual(c.signer, ['/f.pem']);
    assert.equal(c.origins['idle-timeout'], 'default');
  });

  it('CA trust with a CN constraint; --max-list-age 30 by default, 0 for the embedded demo list unless set', () => {
    const c = resolveConfig(
      flags([
        ['whitelist', '/l.xml'],
        ['signer-ca', ['/ca.pem']],
        ['signer-cn', ['alb.mssante.fr']],
      ]),
      {},
      null,
    );
    assert.deepEqual([c.signer, c.signerCa, c.signerCn, c.signerSubject], [[], ['/ca.pem'], ['alb.mssante.fr'], []]);
    assert.equal(c.maxListAgeDays, 30);
    assert.equal(resolveConfig(flags([['whitelist', 'demo']]), {}, null).maxListAgeDays, 0);
    assert.equal(
      resolveConfig(
        flags([
          ['whitelist', DEMO_WHITELIST],
          ['signer', [DEMO_SIGNER]],
        ]),
        {},
        null,
      ).maxListAgeDays,
      0,
    );
    assert.equal(
      resolveConfig(
        flags([
          ['whitelist', 'demo'],
          ['max-list-age', '7'],
        ]),
        {},
        null,
      ).maxListAgeDays,
      7,
    );
    assert.equal(
      resolveConfig(
        flags([
          ['whitelist', '/l.xml'],
          ['signer', ['/s.pem']],
        ]),
        { [envName('max-list-age')]: '0' },
        null,
      ).maxListAgeDays,
      0,
    );
  });

  it('reads repeatable settings from env as comma lists', () => {
    const c = resolveConfig(flags([['whitelist', '/l.xml']]), { [envName('signer')]: '/a.pem, /b.pem' }, null);
    assert.deepEqual(c.signer, ['/a.pem', '/b.pem']);
  });

  const invalid: Array<[string, FlagValues, NodeJS.ProcessEnv, RegExp]> = [
    [
      'a list without signer nor --allow-unsigned',
      flags([['whitelist', '/l.xml']]),
      {},
      /no list signer given: pin it with --signer PEM/,
    ],
    [
      '--signer-ca without --signer-cn or --signer-subject',
      flags([
        ['whitelist', '/l.xml'],
        ['signer-ca', ['/ca.pem']],
      ]),
      {},
      /--signer-ca needs an identity constraint: add --signer-cn NAME/,
    ],
    [
      '--signer-cn without --signer-ca',
      flags([
        ['whitelist', '/l.xml'],
        ['signer', ['/s.pem']],
        ['signer-cn', ['alb.mssante.fr']],
      ]),
      {},
      /give the CA with --signer-ca/,
    ],
    [
      '--signer-ca with --allow-unsigned',
      flags([
        ['whitelist', '/l.xml'],
        ['signer-ca', ['/ca.pem']],
        ['signer-cn', ['x']],
        ['allow-unsigned', true],
      ]),
      {},
      /stripped of its signature/,
    ],
    ['a negative --max-list-age', flags([['max-list-age', '-1']]), {}, /whole number/],
    [
      'the demo list among several sources',
      flags([
        ['whitelist', ['demo', 'http://x/l.xml']],
        ['allow-unsigned', true],
      ]),
      {},
      /cannot be one of several sources/,
    ],
    ['a refresh below the minimum', flags([['refresh', '1']]), {}, /below the minimum/],
    ['a non-number', flags([['max-connections', '12a']]), {}, /whole number/],
    ['an unknown TLS profile', flags([['tls-profile', 'tls9']]), {}, /not one of/],
    ['a bad boolean in env', flags([]), { [envName('allow-unsigned')]: 'maybe' }, /boolean/],
    [
      'a --max-connection-bytes smaller than one Milter packet',
      flags([
        ['whitelist', 'demo'],
        ['max-connection-bytes', '65536'],
      ]),
      {},
      /--max-connection-bytes must hold/,
    ],
    [
      'a --max-connection-bytes smaller than one policy request',
      flags([
        ['whitelist', 'demo'],
        ['max-connection-bytes', '70000'],
        ['max-milter-packet-bytes', '2048'],
      ]),
      {},
      /--max-connection-bytes must hold/,
    ],
    [
      'a --max-connection-bytes smaller than one socketmap request',
      flags([
        ['whitelist', 'demo'],
        ['max-socketmap-request-bytes', '131072'],
      ]),
      {},
      /--max-connection-bytes must hold one --max-socketmap-request-bytes/,
    ],
    [
      'a --heap-watermark above 95 %',
      flags([
        ['whitelist', 'demo'],
        ['heap-watermark', '99'],
      ]),
      {},
      /above the maximum/,
    ],
    [
      'no listener at all',
      flags([
        ['whitelist', 'demo'],
        ['policy-listen', 'off'],
      ]),
      {},
      /nothing would answer/,
    ],
    [
      'an --http-allowed-host that is no host',
      flags([
        ['whitelist', 'demo'],
        ['http-allowed-host', ['evil.example/x']],
      ]),
      {},
      /--http-allowed-host/,
    ],
    [
      'an --http-allowed-host with a bad port',
      flags([
        ['whitelist', 'demo'],
        ['http-allowed-host', ['a.example:port']],
      ]),
      {},
      /--http-allowed-host/,
    ],
    [
      '--signer with --allow-unsigned (a stripped signature would pass)',
      flags([
        ['whitelist', '/l.xml'],
        ['signer', ['/s.pem']],
        ['allow-unsigned', true],
      ]),
      {},
      /stripped of its signature/,
    ],
  ];
  for (const [name, f, env, message] of invalid) {
    it(`refuses ${name} with a clear error`, () => {
      assert.throws(
        () => resolveConfig(f, env, null),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }

  it("unix socket files: mode 0660 and the daemon's owner by default; an octal --socket-mode, owner and group", () => {
    const d = resolveConfig(flags([['whitelist', 'demo']]), {}, null);
    assert.equal(d.socketMode, 0o660);
    assert.equal(d.socketOwner, null);
    assert.equal(d.socketGroup, null);
    const c = resolveConfig(
      flags([
        ['whitelist', 'demo'],
        ['socket-mode', '0640'],
        ['socket-group', 'postfix'],
      ]),
      { [envName('socket-owner')]: 'mssante-policyd' },
      null,
    );
    assert.equal(c.socketMode, 0o640);
    assert.equal(c.socketGroup, 'postfix');
    assert.equal(c.socketOwner, 'mssante-policyd');
    assert.equal(
      resolveConfig(
        flags([
          ['whitelist', 'demo'],
          ['socket-mode', '660'],
        ]),
        {},
        null,
      ).socketMode,
      0o660,
    );
    for (const bad of ['4755', '0o660', 'rw-rw----', '0680', '', '06600']) {
      assert.throws(
        () =>
          resolveConfig(
            flags([
              ['whitelist', 'demo'],
              ['socket-mode', bad],
            ]),
            {},
            null,
          ),
        (e: unknown) => e instanceof ConfigError && /--socket-mode/.test(e.message),
        bad,
      );
    }
  });

  it('refuses unknown keys and broken JSON in the config file', () => {
    assert.throws(() => resolveConfig(flags([]), {}, configFile({ refersh: 10 })), /unknown setting "refersh"/);
    const broken = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'c.json');
    writeFileSync(broken, '{ nope');
    assert.throws(() => resolveConfig(flags([]), {}, broken), ConfigError);
    assert.throws(() => resolveConfig(flags([]), {}, '/nonexistent/c.json'), /cannot read config file/);
  });

  it('documents every setting with its environment variable in --help', () => {
    const help = settingsHelp();
    for (const s of SETTINGS) {
      assert.ok(help.includes(`--${s.key}`), s.key);
      assert.ok(help.includes(envName(s.key)), s.key);
    }
  });
});

describe('resolveSettings: one table for every command', () => {
  it('coerces and limits a subset exactly as serve does, with the same error', () => {
    const keys = ['max-list-entries', 'max-shrink'] as const;
    let serveError = '';
    try {
      resolveConfig(
        flags([
          ['whitelist', 'demo'],
          ['max-list-entries', 'abc'],
        ]),
        {},
        null,
      );
    } catch (e) {
      serveError = (e as Error).message;
    }
    assert.match(serveError, /max-list-entries \(--max-list-entries\): expected a whole number/);
    assert.throws(
      () => resolveSettings(keys, flags([['max-list-entries', 'abc']]), {}, null),
      (e: unknown) => e instanceof ConfigError && e.message === serveError,
    );
    assert.throws(() => resolveSettings(keys, flags([['max-shrink', '101']]), {}, null), /above the maximum 100/);
    const s = resolveSettings(
      keys,
      flags([]),
      { [envName('max-shrink')]: '20' },
      configFile({ 'max-list-entries': 5, 'policy-listen': '127.0.0.1:1' }),
    );
    assert.equal(s.get('max-shrink'), 20);
    assert.equal(s.origin('max-shrink'), 'env');
    assert.equal(s.get('max-list-entries'), 5);
    assert.equal(s.origin('max-list-entries'), 'file');
    // A setting not asked for is not read.
    assert.throws(() => s.get('policy-listen'), /not resolved/);
  });

  it('settingParseOptions gives the flags serve has, by kind', () => {
    assert.deepEqual(settingParseOptions(['signer', 'allow-unsigned', 'max-shrink']), {
      signer: { type: 'string', multiple: true },
      'allow-unsigned': { type: 'boolean' },
      'max-shrink': { type: 'string' },
    });
  });
});
