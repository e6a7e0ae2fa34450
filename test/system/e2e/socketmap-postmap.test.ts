/**
 * Postfix's own socketmap client is the oracle: `postmap -q KEY socketmap:inet:HOST:PORT:MAP` against
 * the real daemon (`serve --socketmap-listen`), for every map and every key form Postfix sends.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../../src/config.js';
import { SocketmapTables } from '../../../src/frontends/socketmap/maps.js';
import { startSocketmapServer } from '../../../src/frontends/socketmap/server.js';
import { createMetrics } from '../../../src/observe/metrics.js';
import { freePort, startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { toolOrSkip } from '../../support/tools.js';
import { LISTENER_DEFAULTS } from '../../../src/listener-defaults.js';

const REJECT =
  'REJECT 5.7.1 Domaine destinataire hors espace de confiance MSSante / recipient domain outside the MSSante trust space';
const TLS = 'secure match=hostname:nexthop:dot-nexthop';

/** postmap needs a main.cf to read; an empty instance config is enough for a lookup. */
function postmapConfig(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mssante-postmap-'));
  writeFileSync(join(dir, 'main.cf'), 'compatibility_level = 3.6\n');
  return dir;
}

interface Query {
  readonly status: number | null;
  readonly value: string;
  readonly stderr: string;
}

/**
 * postmap writes its warnings to stderr only when stderr is a terminal (else to syslog): run it under
 * script(1) to see them. The exit status alone cannot tell an error from "not found" (both 1).
 */
async function postmapOnTerminal(
  script: string,
  bin: string,
  configDir: string,
  address: string,
  map: string,
  key: string,
): Promise<string> {
  const command = [bin, '-c', configDir, '-q', key, `socketmap:inet:${address}:${map}`]
    .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
    .join(' ');
  // Asynchronous: the server answering it runs in this process.
  return new Promise((resolve) => {
    execFile(script, ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000 }, (_err, stdout) => resolve(stdout));
  });
}

function postmapQuery(bin: string, configDir: string, address: string, map: string, key: string): Query {
  const r = spawnSync(bin, ['-c', configDir, '-q', key, `socketmap:inet:${address}:${map}`], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, value: r.stdout.replace(/\n$/, ''), stderr: r.stderr };
}

describe('socketmap tables through postmap (Postfix socketmap client)', () => {
  let daemon: DaemonHandle | null = null;
  let address = '';
  const configDir = postmapConfig();

  before(async () => {
    address = `127.0.0.1:${await freePort()}`;
    daemon = await startDaemon({
      whitelist: DEMO_WHITELIST,
      extraArgs: ['--signer', DEMO_SIGNER, '--socketmap-listen', address],
    });
  });
  after(async () => {
    await daemon?.stop();
  });

  // The demo list: demo-hopital.mssante.fr and its sub-domain pharmacie.demo-hopital.mssante.fr (both
  // CN=mx.demo-hopital.test), demo-clinique.mssante.fr (CN=smtp.demo-clinique.test).
  const CASES: ReadonlyArray<readonly [map: string, key: string, expected: string | null]> = [
    ['mssante-domain', 'demo-hopital.mssante.fr', 'mx.demo-hopital.test'],
    ['mssante-domain', 'DEMO-Clinique.MSSANTE.fr.', 'smtp.demo-clinique.test'],
    ['mssante-domain', 'pharmacie.demo-hopital.mssante.fr', 'mx.demo-hopital.test'],
    ['mssante-domain', 'autre.demo-hopital.mssante.fr', null],
    ['mssante-domain', 'mssante.fr', null],
    ['mssante-tls-policy', 'demo-hopital.mssante.fr', TLS],
    ['mssante-tls-policy', '.demo-hopital.mssante.fr', null],
    ['mssante-tls-policy', 'gmail.com', null],
    ['mssante-transport', 'dr.martin+ext@demo-clinique.mssante.fr', 'smtp-mssante:'],
    ['mssante-transport', 'dr.martin@demo-clinique.mssante.fr', 'smtp-mssante:'],
    ['mssante-transport', 'demo-clinique.mssante.fr', 'smtp-mssante:'],
    ['mssante-transport', '.mssante.fr', null],
    ['mssante-transport', '*', null],
    ['mssante-recipient-access', 'dr.martin+ext@pharmacie.demo-hopital.mssante.fr', null],
    ['mssante-recipient-access', 'dr.martin@demo-hopital.mssante.fr', null],
    ['mssante-recipient-access', 'dr.martin@autre.demo-hopital.mssante.fr', REJECT],
    ['mssante-recipient-access', 'someone@gmail.com', REJECT],
    ['mssante-recipient-access', 'demo-hopital.mssante.fr', null],
    ['mssante-recipient-access', 'mssante.fr', null],
    ['mssante-recipient-access', 'fr', null],
    ['mssante-recipient-access', 'gmail.com', REJECT],
    ['mssante-recipient-access', 'dr.martin@', null],
  ];

  for (const [map, key, expected] of CASES) {
    it(`${map} ${key} → ${expected ?? 'not found'}`, (t: TestContext) => {
      const bin = toolOrSkip(t, 'postmap');
      if (bin === null) return;
      const q = postmapQuery(bin, configDir, address, map, key);
      if (expected === null) {
        // postmap -q: exit 1 and no output when the key is not found.
        assert.equal(q.status, 1, q.stderr);
        assert.equal(q.value, '');
      } else {
        assert.equal(q.status, 0, q.stderr);
        assert.equal(q.value, expected);
      }
    });
  }

  it('counts every lookup in /metrics by map and result', async (t: TestContext) => {
    const bin = toolOrSkip(t, 'postmap');
    if (bin === null || daemon === null) return;
    postmapQuery(bin, configDir, address, 'mssante-recipient-access', 'x@gmail.com');
    const text = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
    const m = /^mssante_policyd_socketmap_lookups_total\{map="mssante-recipient-access",result="ok"\} (\d+)/m.exec(text);
    assert.ok(m !== null && Number(m[1]) >= 1, 'recipient-access refusals counted');
  });
});

describe('socketmap errors as Postfix sees them', () => {
  it('no list in force → TEMP: Postfix reports a temporary error (mail is deferred, never bounced)', async (t: TestContext) => {
    const bin = toolOrSkip(t, 'postmap');
    const script = toolOrSkip(t, 'script');
    if (bin === null || script === null) return;
    const server = await startSocketmapServer('127.0.0.1:0', {
      ...LISTENER_DEFAULTS.socketmap,
      logger: pino({ level: 'silent' }),
      metrics: createMetrics({ defaultMetrics: false }),
      tables: new SocketmapTables({ tlsPolicy: TLS, transport: 'smtp-mssante:' }),
      currentIndex: () => null,
    });
    try {
      const temp = await postmapOnTerminal(
        script,
        bin,
        postmapConfig(),
        server.address,
        'mssante-transport',
        'demo-hopital.mssante.fr',
      );
      assert.match(temp, /socketmap server temporary error: 4\.3\.0 Liste blanche MSSante indisponible/);
      const perm = await postmapOnTerminal(
        script,
        bin,
        postmapConfig(),
        server.address,
        'mssante-typo',
        'demo-hopital.mssante.fr',
      );
      assert.match(perm, /socketmap server permanent error: unknown map name/);
    } finally {
      await server.close(1000);
    }
  });
});
