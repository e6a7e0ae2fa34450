/**
 * Starts the real daemon (src/cli.ts through tsx, or $MSSANTE_POLICYD_CLI) as a child process on
 * free loopback ports, the way an operator runs it, and waits until /readyz says a usable list is
 * in force.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
// A deadline, not a speed claim: a signed list loaded on a machine with both cores busy can take a while.
const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 15_000;

export interface DaemonHandle {
  /** host:port of --policy-listen. */
  readonly policyAddress: string;
  /** host:port of --milter-listen, null when the Milter frontend is off. */
  readonly milterAddress: string | null;
  /** host:port of --http-listen. */
  readonly httpAddress: string;
  readonly stateDir: string;
  /** stdout (JSON lines) and stderr (prefixed "stderr: ") as they came. */
  readonly logs: string[];
  /** Sends the signal (SIGTERM by default), waits for the exit (SIGKILL after 15 s); the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Sends a signal without waiting (SIGHUP: reload the list). */
  signal(signal: NodeJS.Signals): void;
  readonly pid: number;
}

export interface DaemonOptions {
  /** --whitelist: a file path (or URL). */
  readonly whitelist: string;
  /** Appended to the command line. Unless it holds --signer, --signer-ca or --config, --allow-unsigned is added too. */
  readonly extraArgs?: string[];
  /** Also start the Milter frontend on a free port. */
  readonly milter?: boolean;
  readonly env?: NodeJS.ProcessEnv;
  /** Reuse a state dir (a restart); a fresh temp dir by default. */
  readonly stateDir?: string;
  /** How long to wait for /readyz 200 (default 20 s); longer where the test itself makes the daemon ready. */
  readonly readyTimeoutMs?: number;
  /** Fixed addresses, e.g. to restart a daemon where an MTA already points. */
  readonly listen?: { readonly policy?: string; readonly milter?: string; readonly http?: string };
}

/** A loopback TCP port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

/** n distinct free ports: all held open together so that none is handed out twice. */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((ok, fail) => {
          server.once('error', fail);
          server.listen(0, '127.0.0.1', () => {
            const a = server.address();
            if (a !== null && typeof a === 'object') ok(a.port);
            else fail(new Error('no port assigned'));
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((ok) => s.close(() => ok()))));
  }
}

/** Node's arguments that run the CLI: src/cli.ts through tsx, or $MSSANTE_POLICYD_CLI (e.g. the built dist/cli.js as shipped). */
export function cliArgv(): string[] {
  const entry = process.env.MSSANTE_POLICYD_CLI ?? join(REPO, 'src', 'cli.ts');
  return [...(entry.endsWith('.ts') ? ['--import', 'tsx'] : []), entry];
}

export async function startDaemon(options: DaemonOptions): Promise<DaemonHandle> {
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), 'mssante-state-'));
  const [p1, p2, p3] = await freePorts(3);
  const policyAddress = options.listen?.policy ?? `127.0.0.1:${p1}`;
  const httpAddress = options.listen?.http ?? `127.0.0.1:${p2}`;
  const milterAddress = options.milter === true ? (options.listen?.milter ?? `127.0.0.1:${p3}`) : null;
  const extraArgs = options.extraArgs ?? [];
  const args = [
    ...cliArgv(),
    'serve',
    '--whitelist',
    options.whitelist,
    '--state-dir',
    stateDir,
    '--policy-listen',
    policyAddress,
    '--http-listen',
    httpAddress,
    ...(milterAddress !== null ? ['--milter-listen', milterAddress] : []),
    // Most end-to-end tests use unsigned lists; the ones that pin a signer must not get this escape.
    ...(['--signer', '--signer-ca', '--allow-unsigned', '--config'].some((flag) => extraArgs.includes(flag))
      ? []
      : ['--allow-unsigned']),
    ...extraArgs,
  ];
  const child = spawn(process.execPath, args, {
    cwd: REPO,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  collectLines(child.stdout, (l) => logs.push(l));
  collectLines(child.stderr, (l) => logs.push(`stderr: ${l}`));

  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((ok) => {
    child.once('exit', (code) => {
      exitCode = code;
      ok(code);
    });
  });
  // A test that throws before stop() must not leave a daemon holding its ports.
  const killOnExit = (): void => {
    if (exitCode === undefined) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const handle: DaemonHandle = {
    policyAddress,
    milterAddress,
    httpAddress,
    stateDir,
    logs,
    pid: child.pid ?? -1,
    signal(signal: NodeJS.Signals) {
      if (exitCode === undefined) child.kill(signal);
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (exitCode !== undefined) return exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
        process.removeListener('exit', killOnExit);
      }
    },
  };

  const readyTimeoutMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS;
  const deadline = Date.now() + readyTimeoutMs;
  let lastStatus = 'no answer';
  while (Date.now() < deadline) {
    if (exitCode !== undefined) {
      throw new Error(`daemon exited with code ${exitCode} before /readyz said 200; args: ${args.join(' ')}\n${logs.join('\n')}`);
    }
    try {
      const res = await fetch(`http://${httpAddress}/readyz`, { signal: AbortSignal.timeout(1000) });
      lastStatus = String(res.status);
      await res.arrayBuffer();
      if (res.status === 200) return handle;
    } catch (e) {
      lastStatus = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await handle.stop('SIGKILL');
  throw new Error(
    `daemon not ready within ${readyTimeoutMs / 1000} s (last /readyz: ${lastStatus}); args: ${args.join(' ')}\n${logs.join('\n')}`,
  );
}

function collectLines(stream: NodeJS.ReadableStream, sink: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      sink(rest.slice(0, nl));
      rest = rest.slice(nl + 1);
    }
  });
  stream.on('end', () => {
    if (rest !== '') sink(rest);
  });
}
