/**
 * The Debian package, as an operator meets it: `npm run package:deb` builds it, lintian finds no
 * error, `apt-get install ./….deb` installs it, the installed `mssante-policyd` checks the shipped demo
 * list and serves it (a real policy answer over TCP), `apt-get remove` keeps the conffile and
 * `apt-get purge` leaves nothing behind. Needs root, dpkg-deb, lintian and apt-get: it really installs
 * the package on this machine (CI's), so it skips with a message elsewhere (a failure under CI=true).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { SETTINGS } from '../../../src/config.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { freePort } from '../../support/daemon.js';
import { REPO_ROOT } from '../../support/fixtures.js';
import { toolOrSkip } from '../../support/tools.js';

const NAME = 'mssante-policyd';
const SHIM = 'mssante-policyd-ci-nodejs-shim';
const LIB = `/usr/lib/${NAME}`;
const DEMO_LIST = `${LIB}/examples/demo-whitelist.xml`;
const DEMO_SIGNER = `${LIB}/examples/demo-signer.pem`;
const CONFFILE = `/etc/${NAME}/config.json`;
const READY_TIMEOUT_MS = 60_000;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((ok) => {
    execFile(
      cmd,
      args,
      { cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', ...env } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        ok({ code, stdout, stderr });
      },
    );
  });
}

async function mustRun(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const res = await run(cmd, args, env);
  assert.equal(res.code, 0, `${cmd} ${args.join(' ')} exited ${res.code}\n${res.stdout}\n${res.stderr}`);
  return res;
}

function rootOrSkip(t: TestContext): boolean {
  if (process.getuid?.() === 0) return true;
  const why = 'installing a Debian package needs root (run as root, e.g. in CI)';
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  t.skip(why);
  return false;
}

async function dpkgStatus(pkg: string): Promise<string | null> {
  const res = await run('dpkg-query', ['-W', '-f', '${Status}', pkg]);
  return res.code === 0 && res.stdout.trim() !== '' ? res.stdout.trim() : null;
}

/** Starts the installed /usr/bin/mssante-policyd; resolves once /readyz says 200. */
async function serveInstalled(
  args: readonly string[],
  httpAddress: string,
): Promise<{ stop: () => Promise<void>; logs: string[]; pid: number }> {
  const child = spawn(`/usr/bin/${NAME}`, ['serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmpdir() });
  const logs: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (s: string) => logs.push(s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => logs.push(s));
  let exited: number | null | undefined;
  const exit = new Promise<void>((ok) => child.once('exit', (code) => ((exited = code), ok())));
  const stop = async (): Promise<void> => {
    if (exited === undefined) child.kill('SIGTERM');
    await exit;
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new Error(`the installed daemon exited with ${exited}:\n${logs.join('')}`);
    const status = await fetch(`http://${httpAddress}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
      async (r) => (await r.arrayBuffer(), r.status),
      () => 0,
    );
    if (status === 200) return { stop, logs, pid: child.pid as number };
    await new Promise((r) => setTimeout(r, 200));
  }
  await stop();
  throw new Error(`the installed daemon was not ready within ${READY_TIMEOUT_MS / 1000} s:\n${logs.join('')}`);
}

test('Debian package: builds, lints, installs, checks, serves, keeps its conffile on remove, leaves nothing on purge', async (t) => {
  if (!rootOrSkip(t)) return;
  for (const tool of ['dpkg-deb', 'lintian', 'apt-get', 'dpkg-query']) if (toolOrSkip(t, tool) === null) return;
  if ((await dpkgStatus(NAME)) !== null) {
    t.diagnostic(`${NAME} was already installed on this machine: this test purges it at the end`);
  }
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const out = mkdtempSync(join(tmpdir(), 'mssante-deb-'));
  const deb = join(out, `${NAME}_${version}_all.deb`);
  let shimInstalled = false;
  t.after(async () => {
    // Whatever failed, the machine is left as it was found (the package and the shim purged).
    if ((await dpkgStatus(NAME)) !== null) await run('apt-get', ['purge', '-y', '-q', NAME]);
    if (shimInstalled) await run('dpkg', ['--purge', SHIM]);
    rmSync(out, { recursive: true, force: true });
  });

  await t.test('npm run package:deb builds dist-pkg/<name>_<package.json version>_all.deb', async () => {
    const res = await mustRun('bash', ['scripts/package-deb.sh', out]);
    assert.equal(res.stdout.trim().split('\n').at(-1), deb);
    const field = async (name: string): Promise<string> => (await mustRun('dpkg-deb', ['-f', deb, name])).stdout.trim();
    assert.equal(await field('Package'), NAME);
    assert.equal(await field('Version'), version);
    assert.equal(await field('Architecture'), 'all');
    assert.equal(await field('Depends'), 'nodejs (>= 20)');
    const conffiles = (await mustRun('sh', ['-c', `dpkg-deb --ctrl-tarfile '${deb}' | tar -xOf - ./conffiles`])).stdout;
    // config.json, and the IGC-Santé CAs it names (an operator may replace them; dpkg keeps the edit).
    const [first, ...cas] = conffiles.trim().split('\n');
    assert.equal(first, CONFFILE);
    assert.ok(cas.includes(`/etc/${NAME}/igc-sante/ac-igc-sante-elementaire-organisations.pem`), conffiles);
    for (const ca of cas) assert.match(ca, new RegExp(`^/etc/${NAME}/igc-sante/[^/]+$`));
    const files = (await mustRun('dpkg-deb', ['-c', deb])).stdout;
    for (const path of [
      `./usr/bin/${NAME}`,
      `.${LIB}/dist/cli.js`,
      `.${LIB}/node_modules/pino/package.json`,
      `.${DEMO_LIST}`,
      `./lib/systemd/system/${NAME}.service`,
      `./lib/systemd/system/${NAME}.socket`,
      `.${CONFFILE}`,
      `./etc/${NAME}/igc-sante/ac-igc-sante-elementaire-organisations.pem`,
      `./usr/share/doc/${NAME}/copyright`,
      `./usr/share/doc/${NAME}/grafana/mssante-policyd.json`,
      `./usr/share/doc/${NAME}/deploy/prometheus/`,
      `./usr/share/doc/${NAME}/deploy/postfix/main.cf.policy`,
      `./usr/share/doc/${NAME}/deploy/postfix/test-instance/main.cf`,
      `./usr/share/${NAME}/lab.sh`,
      `./usr/share/${NAME}/prometheus/alerts.yml`,
      `./usr/share/${NAME}/prometheus/prometheus.yml`,
      `./usr/share/${NAME}/grafana/mssante-policyd.json`,
      `./usr/share/doc/${NAME}/deploy/prometheus/alerts.yml`,
      `./usr/share/man/man1/${NAME}.1.gz`,
    ]) {
      assert.match(files, new RegExp(` ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), `${path} in the package`);
    }
    // Production dependencies only: no test runner, compiler or type declarations.
    for (const dev of ['typescript', 'tsx', 'fast-check', '@types/node']) {
      assert.doesNotMatch(files, new RegExp(`node_modules/${dev}/`), `dev dependency ${dev} is not shipped`);
    }
  });

  await t.test('lintian: no error', async () => {
    const res = await run('lintian', ['--tag-display-limit', '0', deb]);
    const lines = `${res.stdout}\n${res.stderr}`.split('\n').filter((l) => /^[EW]: /.test(l));
    for (const l of lines) t.diagnostic(l);
    assert.deepEqual(
      lines.filter((l) => l.startsWith('E: ')),
      [],
    );
    assert.equal(res.code, 0, res.stderr);
  });

  await t.test(
    "the CI-only nodejs shim declares this machine's Node to dpkg, and satisfies Depends: nodejs (>= 20)",
    async () => {
      const shimDeb = (await mustRun('bash', ['scripts/ci-nodejs-shim.sh', '--build-only', out])).stdout.trim();
      const field = async (name: string): Promise<string> => (await mustRun('dpkg-deb', ['-f', shimDeb, name])).stdout.trim();
      assert.equal(await field('Package'), SHIM);
      assert.equal(await field('Provides'), `nodejs (= ${process.versions.node})`);
      // dpkg's own comparison: the provided version meets the package's dependency.
      await mustRun('dpkg', ['--compare-versions', process.versions.node, 'ge', '20']);
    },
  );

  await t.test('apt-get install ./….deb (Depends: nodejs >= 20 met by dpkg, or by the CI-only shim)', async () => {
    const shim = await mustRun('bash', ['scripts/ci-nodejs-shim.sh']);
    shimInstalled = shim.stdout.trim() === SHIM;
    if (shimInstalled) t.diagnostic(`this machine's Node.js is not a dpkg package: ${SHIM} declares it (CI only)`);
    await mustRun('apt-get', ['install', '-y', '-q', '--no-install-recommends', deb]);
    assert.equal(await dpkgStatus(NAME), 'install ok installed');
    const config = JSON.parse(readFileSync(CONFFILE, 'utf8')) as Record<string, unknown>;
    assert.equal(config.whitelist, 'https://espacedeconfiance.mssante.fr/listeblanchemssante.xml');
    assert.equal(config['state-dir'], '/var/lib/mssante-policyd');
    for (const key of ['ca-file', 'signer-ca'] as const) {
      for (const path of ([] as unknown[]).concat(config[key]))
        assert.ok(existsSync(String(path)), `${key} ${String(path)} is installed`);
    }
    // The conffile is what the unit runs with: every key must be a setting the daemon knows.
    const known = new Set<string>(SETTINGS.map((s) => s.key));
    const unknown = Object.keys(config).filter((k) => !known.has(k));
    assert.deepEqual(unknown, [], 'conffile keys the daemon does not know');
    const res = await mustRun(`/usr/bin/${NAME}`, ['serve', '--config', CONFFILE, '--print-config']);
    assert.equal((JSON.parse(res.stdout) as { stateDir: string }).stateDir, '/var/lib/mssante-policyd');
  });

  await t.test('the installed mssante-policyd checks the shipped demo list', async () => {
    const res = await mustRun(`/usr/bin/${NAME}`, ['check', DEMO_LIST, '--signer', DEMO_SIGNER]);
    assert.match(res.stdout, /^signature: VALID/m);
    assert.match(res.stdout, /^USABLE$/m);
  });

  await t.test('the installed mssante-policyd serves the demo list and answers a policy request', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'mssante-deb-state-'));
    const policy = `127.0.0.1:${await freePort()}`;
    const http = `127.0.0.1:${await freePort()}`;
    const daemon = await serveInstalled(
      [
        '--whitelist',
        DEMO_LIST,
        '--signer',
        DEMO_SIGNER,
        '--state-dir',
        stateDir,
        '--policy-listen',
        policy,
        '--http-listen',
        http,
      ],
      http,
    );
    try {
      assert.equal(await askOnce(policy, postfixRequest('mx.demo-hopital.test', 'dr.martin@demo-hopital.mssante.fr')), 'DUNNO');
      assert.match(await askOnce(policy, postfixRequest('mx.demo-hopital.test', 'x@demo-clinique.mssante.fr')), /^550 5\.7\.1 /);
      // The operator's verification command, from the installed files.
      const query = await mustRun(`/usr/bin/${NAME}`, [
        'query',
        '--policy',
        policy,
        'encryption_protocol=TLSv1.3',
        'ccert_subject=mx.demo-hopital.test',
        'sender=dr.martin@demo-hopital.mssante.fr',
      ]);
      assert.equal(query.stdout.trim(), 'action=DUNNO');
    } finally {
      await daemon.stop();
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  await t.test('the installed lab kit finds the packaged Postfix files and the installed command', async (t) => {
    if (toolOrSkip(t, 'openssl') === null || toolOrSkip(t, 'xmlsec1') === null) return;
    const lab = join(mkdtempSync(join(tmpdir(), 'mssante-deb-lab-')), 'lab');
    try {
      const res = await mustRun(`/usr/share/${NAME}/lab.sh`, [lab, '--port', '10925'], {
        MSSANTE_POLICYD_CMD: '',
        MSSANTE_DEPLOY_DIR: '',
      });
      assert.match(res.stdout, new RegExp(`^   ${NAME} serve --whitelist ${lab}/whitelist.xml`, 'm'));
      assert.match(
        readFileSync(join(lab, 'postfix', 'main.cf'), 'utf8'),
        /^mssante_policy_service = unix:private\/mssante-policyd$/m,
      );
      const check = await mustRun(`/usr/bin/${NAME}`, ['check', join(lab, 'whitelist.xml'), '--signer', join(lab, 'signer.pem')]);
      assert.match(check.stdout, /^USABLE$/m);
    } finally {
      rmSync(join(lab, '..'), { recursive: true, force: true });
    }
  });

  await t.test(
    'promtool checks the installed rules and prometheus.yml in place; the dashboard is installed for provisioning',
    async (t) => {
      const promtool = toolOrSkip(t, 'promtool');
      if (promtool === null) return;
      const dir = `/usr/share/${NAME}/prometheus`;
      const rules = await mustRun(promtool, ['check', 'rules', `${dir}/alerts.yml`]);
      assert.match(rules.stdout, /SUCCESS: \d+ rules found/);
      // prometheus.yml names alerts.yml beside it: the check reads it from there.
      const config = await mustRun(promtool, ['check', 'config', `${dir}/prometheus.yml`]);
      assert.match(config.stdout, /SUCCESS: 1 rule files found/);
      assert.match(config.stdout, new RegExp(`Checking ${dir}/alerts\\.yml\\n\\s+SUCCESS: \\d+ rules found`));
      // The same pair as documentation: uncompressed too, so the copy there checks as well.
      await mustRun(promtool, ['check', 'config', `/usr/share/doc/${NAME}/deploy/prometheus/prometheus.yml`]);
      const dashboard = JSON.parse(readFileSync(`/usr/share/${NAME}/grafana/mssante-policyd.json`, 'utf8')) as {
        templating: { list: Array<{ name: string; type: string }> };
      };
      assert.ok(dashboard.templating.list.some((v) => v.name === 'DS_PROMETHEUS' && v.type === 'datasource'));
    },
  );

  await t.test(
    'without systemd: upgrade, remove and purge name the running daemon (pid) and say to restart or stop it by hand',
    async (t) => {
      if (existsSync('/run/systemd/system')) {
        t.skip('systemd runs on this machine: the unit restarts and stops the daemon, nothing is left to say');
        return;
      }
      const stateDir = mkdtempSync(join(tmpdir(), 'mssante-deb-state-'));
      const http = `127.0.0.1:${await freePort()}`;
      const daemon = await serveInstalled(
        [
          '--whitelist',
          DEMO_LIST,
          '--signer',
          DEMO_SIGNER,
          '--state-dir',
          stateDir,
          '--policy-listen',
          `127.0.0.1:${await freePort()}`,
          '--http-listen',
          http,
        ],
        http,
      );
      const said = (r: Run): string => `${r.stdout}${r.stderr}`;
      try {
        // Reinstalling the same version is an upgrade for the maintainer scripts (postinst configure <old version>).
        const upgrade = said(await mustRun('dpkg', ['-i', deb]));
        assert.match(
          upgrade,
          new RegExp(
            `upgraded from ${version.replace(/\./g, '\\.')}, and no systemd runs here: the daemon running as pid (?:\\d+ )*${daemon.pid}(?: \\d+)* was left running`,
          ),
        );
        assert.match(
          upgrade,
          new RegExp(
            `it still runs the old code: restart it by hand now.* kill -TERM (?:\\d+ )*${daemon.pid}(?: \\d+)* and start it again`,
          ),
        );
        const remove = said(await mustRun('dpkg', ['-r', NAME]));
        assert.match(
          remove,
          new RegExp(
            `being removed, and no systemd runs here: the daemon running as pid (?:\\d+ )*${daemon.pid}(?: \\d+)* was left running`,
          ),
        );
        assert.match(remove, new RegExp(`stop it by hand now \\(kill -TERM (?:\\d+ )*${daemon.pid}(?: \\d+)*,`));
        const purge = said(await mustRun('dpkg', ['-P', NAME]));
        assert.match(
          purge,
          new RegExp(
            `purged, and no systemd runs here: the daemon running as pid (?:\\d+ )*${daemon.pid}(?: \\d+)* was left running`,
          ),
        );
        await daemon.stop();
        const quiet = said(await mustRun('apt-get', ['install', '-y', '-q', '--no-install-recommends', deb]));
        // Our daemon stopped: not named any more (another test's daemon on this machine may be).
        const stopped = new RegExp(`pid (?:\\d+ )*${daemon.pid}\\b`);
        assert.doesNotMatch(quiet, stopped);
        assert.doesNotMatch(said(await mustRun('dpkg', ['-i', deb])), stopped);
      } finally {
        await daemon.stop();
        rmSync(stateDir, { recursive: true, force: true });
      }
      assert.equal(await dpkgStatus(NAME), 'install ok installed');
    },
  );

  await t.test('apt-get remove keeps the conffile; apt-get purge leaves nothing behind', async () => {
    const owned = (await mustRun('dpkg', ['-L', NAME])).stdout
      .split('\n')
      .filter(
        (p) =>
          p !== '' &&
          ![
            '/.',
            '/etc',
            '/lib',
            '/usr',
            '/usr/bin',
            '/usr/lib',
            '/usr/share',
            '/usr/share/doc',
            '/usr/share/man',
            '/usr/share/man/man1',
            '/lib/systemd',
            '/lib/systemd/system',
          ].includes(p),
      );
    // State as the daemon leaves it under systemd, and an operator's edit of the conffile.
    await mustRun('install', ['-d', '/var/lib/mssante-policyd']);
    await mustRun('sh', ['-c', 'echo state > /var/lib/mssante-policyd/whitelist.xml']);

    await mustRun('apt-get', ['remove', '-y', '-q', NAME]);
    assert.equal(await dpkgStatus(NAME), 'deinstall ok config-files');
    assert.ok(existsSync(CONFFILE), 'the conffile is kept on remove');
    assert.ok(!existsSync(`/usr/bin/${NAME}`), 'the program is gone on remove');
    assert.ok(!existsSync(LIB), `${LIB} is gone on remove`);

    await mustRun('apt-get', ['purge', '-y', '-q', NAME]);
    assert.equal(await dpkgStatus(NAME), null);
    const left = [
      ...owned,
      `/etc/${NAME}`,
      '/var/lib/mssante-policyd',
      '/var/lib/private/mssante-policyd',
      `/etc/systemd/system/${NAME}.service`,
      `/var/lib/systemd/deb-systemd-helper-masked/${NAME}.service`,
      `/var/lib/systemd/deb-systemd-helper-enabled/${NAME}.service.dsh-also`,
    ].filter((p) => lstatSync(p, { throwIfNoEntry: false }) !== undefined);
    assert.deepEqual(left, []);
  });
});
