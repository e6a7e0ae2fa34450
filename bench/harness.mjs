/**
 * What the whole-daemon benchmarks share (bench/run.js, bench/fleet.mjs, bench/store.mjs): the daemon
 * spawned as deployed (the systemd unit's environment, pinned), the load generator run against it
 * with the daemon's CPU read from /proc at the edges of the measured window, and a private
 * redis-server on a free loopback port. Linux only (/proc); everything stays on 127.0.0.1.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, freePorts, killAllChildren, scrape, sleep, spawnPinned, stopChild, waitReady } from './procs.mjs';

export const BENCH = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(BENCH, '..');

/**
 * The environment of the systemd unit (V8 heap sizing and malloc arenas for a long-running daemon),
 * as deployed; BENCH_NODE_OPTIONS overrides NODE_OPTIONS ('' for Node's defaults), BENCH_UNIT_ENV=0
 * drops the unit's environment altogether (to A/B).
 */
export function unitEnv() {
  if (process.env.BENCH_UNIT_ENV === '0') return {};
  const text = readFileSync(join(REPO, 'deploy', 'systemd', 'mssante-policyd.service'), 'utf8');
  const env = {};
  for (const m of text.matchAll(/^Environment=([A-Z_]+)=(.*)$/gm)) env[m[1]] = m[2].replace(/^"|"$/g, '');
  if (process.env.BENCH_NODE_OPTIONS !== undefined) env.NODE_OPTIONS = process.env.BENCH_NODE_OPTIONS;
  return env;
}

/**
 * `cli serve` on free loopback ports (policy, milter, socketmap, http), pinned to `cpu`, ready
 * (/readyz) before it returns. `trace`: 'file' (--trace-file, or stdout to a file with
 * BENCH_TRACE=stdout / BENCH_CLI), anything else: stdout ignored.
 */
export async function startDaemon({ cli, tmp, env, cpu, listPath, signer, stateDir, trace, extraArgs = [], nodeArgs = [] }) {
  const [policyPort, milterPort, httpPort, socketmapPort] = await freePorts(4);
  const traceFile = join(tmp, `trace-${Date.now()}-${policyPort}.log`);
  const viaStdout = trace === 'file' && (process.env.BENCH_TRACE === 'stdout' || process.env.BENCH_CLI !== undefined);
  const stdout = viaStdout ? openSync(traceFile, 'w') : 'ignore';
  const stderrFile = join(tmp, `daemon-stderr-${Date.now()}-${policyPort}.log`);
  const stderr = openSync(stderrFile, 'w');
  const http = `127.0.0.1:${httpPort}`;
  const argv = [
    ...nodeArgs,
    cli,
    'serve',
    '--whitelist',
    listPath,
    ...(signer !== null ? ['--signer', signer] : ['--allow-unsigned']),
    // The real list dates from 2025: the age limit would refuse it at a first start.
    '--max-list-age',
    '0',
    '--state-dir',
    stateDir,
    '--policy-listen',
    `127.0.0.1:${policyPort}`,
    '--milter-listen',
    `127.0.0.1:${milterPort}`,
    '--socketmap-listen',
    `127.0.0.1:${socketmapPort}`,
    '--http-listen',
    http,
    '--log-level',
    'info',
    ...(trace === 'file' && !viaStdout ? ['--trace-file', traceFile] : []),
    ...extraArgs,
  ];
  const t0 = performance.now();
  const child = spawnPinned(cpu, process.execPath, argv, {
    stdio: ['ignore', stdout, stderr],
    cwd: REPO,
    env: { ...process.env, ...env },
  });
  if (typeof stdout === 'number') closeSync(stdout);
  closeSync(stderr);
  let readyMs;
  try {
    // Generous: on a busy machine the list worker (nice 19) may wait long for a CPU.
    readyMs = await waitReady(http, 300_000, child, t0);
  } catch (error) {
    throw new Error(`${error.message}\n${readFileSync(stderrFile, 'utf8').slice(0, 2000)}`, { cause: error });
  }
  return { child, pid: child.pid, policyPort, milterPort, socketmapPort, http, readyMs, traceFile, stateDir, stderrFile };
}

/** bench/floor.mjs (the plain-Node responder that answers without reading) pinned to `cpu`, listening. */
export async function startFloor(cpu) {
  const [port] = await freePorts(1);
  const child = spawnPinned(cpu, process.execPath, [join(BENCH, 'floor.mjs'), String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolveReady, reject) => {
    child.once('exit', (code) => reject(new Error(`floor exited (${code})`)));
    child.stdout.once('data', () => resolveReady());
  });
  return { child, pid: child.pid, policyPort: port };
}

/** Waits until the daemon's start-up load from the source has finished, so rows do not measure it. */
export async function settle(daemon) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const m = await scrape(daemon.http);
    if ((m.get('mssante_policyd_whitelist_load_duration_seconds_count') ?? 0) >= 1) break;
    await sleep(100);
  }
  await sleep(500);
}

/**
 * Runs bench/load.mjs pinned to `cpu` against `server`; the server's CPU is read from /proc when the
 * measured window opens and closes. Returns the generator's result line plus serverCpuS and
 * cpuUsPerRequest.
 */
export async function runLoad(
  server,
  {
    connections,
    mode = 'persistent',
    protocol = 'policy',
    corpus,
    port,
    seconds,
    warmupFullPass = false,
    rate = 0,
    withDescendants = false,
    onMeasureStart,
  },
  { tmp, cpu },
) {
  const config = {
    host: '127.0.0.1',
    port: port ?? server.policyPort,
    protocol,
    mode,
    connections,
    durationMs: Math.round(seconds * 1000),
    warmupMs: 1000,
    warmupFullPass,
    rate,
    corpus,
    timelineMs: 500,
  };
  const configFile = join(tmp, `load-${Date.now()}-${Math.random().toString(16).slice(2)}.json`);
  writeFileSync(configFile, JSON.stringify(config));
  const child = spawnPinned(cpu, process.execPath, [join(BENCH, 'load.mjs'), '--config', configFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let cpuStart = 0;
  let cpuEnd = 0;
  let result = null;
  let rest = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    rest += chunk;
    let nl;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = JSON.parse(rest.slice(0, nl));
      rest = rest.slice(nl + 1);
      if (line.event === 'measure_start') {
        cpuStart = cpuSeconds(server.pid, withDescendants);
        onMeasureStart?.();
      } else if (line.event === 'measure_end') cpuEnd = cpuSeconds(server.pid, withDescendants);
      else if (line.event === 'result') result = line;
    }
  });
  const code = await new Promise((r) => child.once('exit', r));
  if (result === null) throw new Error(`load generator exited (${code}) without a result`);
  result.serverCpuS = cpuEnd - cpuStart;
  result.cpuUsPerRequest = result.requests > 0 ? (result.serverCpuS * 1e6) / result.requests : null;
  return result;
}

/**
 * A private redis-server (no persistence) on a free loopback port, pinned to `cpu` (null: not
 * pinned). `cpuSeconds()` reads its utime + stime from /proc; `stop()` ends it.
 */
export async function startRedisServer({ cpu = null } = {}) {
  const [port] = await freePorts(1);
  const dir = mkdtempSync(join(tmpdir(), 'bench-redis-'));
  writeFileSync(join(dir, 'redis.conf'), `port ${port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir ${dir}\nlogfile ""\n`);
  const child =
    cpu === null
      ? spawn('redis-server', [join(dir, 'redis.conf')], { stdio: ['ignore', 'pipe', 'inherit'] })
      : spawnPinned(cpu, 'redis-server', [join(dir, 'redis.conf')], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((ok, fail) => {
    child.once('exit', (code) => fail(new Error(`redis-server exited (${code})`)));
    child.stdout.on('data', (c) => /Ready to accept/.test(String(c)) && ok());
  });
  // taskset execs redis-server in place: the pid is redis-server's.
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    cpuSeconds: () => cpuSeconds(child.pid),
    stop: () => stopChild(child, 5000),
  };
}

/** Runs a benchmark's main(): a failure is printed and sets the exit code; children and `tmp` always go. */
export function runBench(main, log, tmp) {
  main()
    .catch((error) => {
      log(`FAILED: ${error.stack ?? error}`);
      process.exitCode = 1;
    })
    .finally(() => {
      killAllChildren();
      rmSync(tmp, { recursive: true, force: true });
    });
}
