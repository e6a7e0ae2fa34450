/**
 * Drives test/support/socket-holder.py: a process that keeps listening sockets like systemd does
 * for a .socket unit and (re)starts the daemon on them with LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID.
 */
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './faults.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
// Deadlines, not speed claims: a daemon start on a loaded machine can take many seconds.
const WAIT_MS = 180_000;

export interface SocketHolder {
  /** The bound addresses by socket name (`host:port` or `unix:/path`). */
  readonly addresses: Readonly<Record<string, string>>;
  /** Every stdout line of the holder and of the daemons it started, in order; stderr prefixed "stderr: ". */
  readonly lines: string[];
  /** Spawns `argv` (node's arguments) on the held sockets; resolves with its pid once spawned. */
  start(argv: readonly string[], env?: Record<string, string>): Promise<number>;
  /** SIGTERM to the daemon; resolves with its exit code once it has exited. */
  term(): Promise<number>;
  /** Resolves with the first log record of `event` written after line `from` (by a daemon). */
  waitForEvent(event: string, from: number): Promise<Record<string, unknown>>;
  /** Stops the daemon if one runs, then the holder (the sockets close with it). */
  close(): Promise<void>;
}

function records(lines: readonly string[], from: number): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of lines.slice(from)) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a partial or foreign line
    }
  }
  return out;
}

/** Polls with the suite's waitFor; the holder's last lines go into the error, for post-mortems. */
async function until<T>(what: string, lines: readonly string[], probe: () => T | undefined): Promise<T> {
  try {
    return await waitFor(what, probe, WAIT_MS);
  } catch (error) {
    throw new Error(`socket holder: ${(error as Error).message}\n${lines.slice(-40).join('\n')}`, { cause: error });
  }
}

/** `sockets`: name → `tcp:127.0.0.1:0` or `unix:/path`, in fd order (3, 4, ...). */
export async function startSocketHolder(python: string, sockets: Readonly<Record<string, string>>): Promise<SocketHolder> {
  const child = spawn(python, [join(HERE, 'socket-holder.py'), ...Object.entries(sockets).map(([n, s]) => `${n}=${s}`)], {
    cwd: REPO,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const collect = (stream: NodeJS.ReadableStream, prefix: string): void => {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        lines.push(prefix + rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    });
  };
  collect(child.stdout, '');
  collect(child.stderr, 'stderr: ');
  let holderExited = false;
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  void exited.then(() => (holderExited = true));
  const killOnExit = (): void => {
    if (!holderExited) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const holderMessage = (kind: string, from: number): Record<string, unknown> | undefined =>
    records(lines, from).find((r) => r['holder'] === kind);
  const ready = await until('ready line', lines, () => holderMessage('ready', 0));
  const send = (command: object): void => void child.stdin.write(`${JSON.stringify(command)}\n`);
  let pid: number | null = null;

  return {
    addresses: ready['addresses'] as Record<string, string>,
    lines,
    async start(argv, env = {}) {
      const from = lines.length;
      send({ cmd: 'start', argv: [process.execPath, ...argv], env, cwd: REPO });
      const started = await until('started line', lines, () => holderMessage('started', from));
      pid = started['pid'] as number;
      return pid;
    },
    async term() {
      const from = lines.length;
      const mine = pid;
      send({ cmd: 'term' });
      const done = await until('exit of the daemon', lines, () =>
        records(lines, 0).find((r) => r['holder'] === 'exited' && r['pid'] === mine && lines.length >= from),
      );
      return done['code'] as number;
    },
    waitForEvent(event, from) {
      return until(`"${event}" log record`, lines, () => records(lines, from).find((r) => r['event'] === event));
    },
    async close() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
      process.removeListener('exit', killOnExit);
    },
  };
}
