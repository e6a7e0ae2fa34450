/**
 * Process plumbing for the benchmark: pinned spawns, /proc CPU and memory readings, free loopback
 * ports, /readyz and /metrics. Linux only (/proc); everything stays on 127.0.0.1.
 */
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';

export const HAS_TASKSET = spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0;
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

const children = new Set();
/** Daemons that detach (postfwd2): followed by pid, killed with the rest at exit. */
const detached = new Set();

export function trackPid(pid) {
  detached.add(pid);
}

export function untrackPid(pid) {
  detached.delete(pid);
}

/** Spawns a command pinned to `cpu` (when taskset exists); every spawn is killed when we exit. */
export function spawnPinned(cpu, command, args, options = {}) {
  const [cmd, argv] = HAS_TASKSET && cpu !== null ? ['taskset', ['-c', String(cpu), command, ...args]] : [command, args];
  const child = spawn(cmd, argv, options);
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Stops one child we started (SIGTERM, SIGKILL after `graceMs`) and waits for its exit. */
export async function stopChild(child, graceMs = 12_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export function killAllChildren() {
  for (const child of children) child.kill('SIGKILL');
  for (const pid of detached) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
}

/** utime + stime of a process (all its threads) and, optionally, of its descendants, in seconds. */
export function cpuSeconds(pid, withDescendants = false) {
  const pids = withDescendants ? [pid, ...descendants(pid)] : [pid];
  let ticks = 0;
  for (const p of pids) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // After "pid (comm) ": state is field 3, so utime (14) and stime (15) are at 11 and 12.
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited meanwhile
    }
  }
  return ticks / CLK_TCK;
}

function descendants(pid) {
  const byParent = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!byParent.has(ppid)) byParent.set(ppid, []);
      byParent.get(ppid).push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  const out = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of byParent.get(queue.shift()) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** VmRSS and VmHWM (peak) in MiB, summed over descendants when asked. */
export function memoryMiB(pid, withDescendants = false) {
  const pids = withDescendants ? [pid, ...descendants(pid)] : [pid];
  let rss = 0;
  let hwm = 0;
  for (const p of pids) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      rss += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
      hwm += Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
    } catch {
      // exited meanwhile
    }
  }
  return { rss, hwm };
}

/** n distinct loopback ports that were free a moment ago (held together so none repeats). */
export async function freePorts(n) {
  const servers = [];
  const ports = [];
  try {
    for (let i = 0; i < n; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(
        await new Promise((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server.address().port));
        }),
      );
    }
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
  return ports;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls GET /readyz until 200; milliseconds waited, or throws after `timeoutMs`. */
export async function waitReady(httpAddress, timeoutMs, child, startedAt = performance.now()) {
  const deadline = startedAt + timeoutMs;
  while (performance.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`daemon exited (${child.exitCode}) before ready`);
    try {
      const res = await fetch(`http://${httpAddress}/readyz`, { signal: AbortSignal.timeout(500) });
      await res.arrayBuffer();
      if (res.status === 200) return performance.now() - startedAt;
    } catch {
      // not listening yet
    }
    await sleep(10);
  }
  throw new Error(`daemon not ready within ${timeoutMs} ms`);
}

/** GET /metrics → Map of series (`name{labels}`) → number. */
export async function scrape(httpAddress) {
  const res = await fetch(`http://${httpAddress}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  const out = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}
