/**
 * A real Prometheus for tests: temp config and storage, loopback port, 1 s scrape and rule
 * evaluation, and a small client for its HTTP API.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './daemon.js';

const READY_TIMEOUT_MS = 30_000;

export interface PrometheusOptions {
  /** Path of the prometheus binary (from toolOrSkip). */
  readonly binary: string;
  readonly job: string;
  /** host:port targets of the job. */
  readonly targets: readonly string[];
  readonly ruleFiles?: readonly string[];
}

/** One series of an instant vector. */
export interface Sample {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

export type QueryData =
  | { readonly resultType: 'vector'; readonly result: Sample[] }
  | { readonly resultType: 'scalar' | 'string'; readonly result: [number, string] }
  | {
      readonly resultType: 'matrix';
      readonly result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }>;
    };

export interface PrometheusHandle {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly logs: string[];
  /** GET /api/v1/<path>; throws unless status is "success". */
  api<T>(path: string, params?: Record<string, string>): Promise<T>;
  /** Instant query; throws with Prometheus' error (e.g. a parse error) unless it succeeds. */
  query(expr: string): Promise<QueryData>;
  /** Polls an instant query until it returns a non-empty vector; the vector. */
  waitFor(expr: string, timeoutMs?: number): Promise<Sample[]>;
  stop(): Promise<void>;
}

export async function startPrometheus(options: PrometheusOptions): Promise<PrometheusHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'mssante-prometheus-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // JSON is YAML: no YAML writer needed.
  const config = {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: options.ruleFiles ?? [],
    scrape_configs: [{ job_name: options.job, metrics_path: '/metrics', static_configs: [{ targets: options.targets }] }],
  };
  writeFileSync(join(dir, 'prometheus.yml'), JSON.stringify(config, null, 2));
  const child = spawn(
    options.binary,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => logs.push(...chunk.split('\n').filter((l) => l !== '')));
  }
  let exited = false;
  const exit = new Promise<void>((ok) => child.once('exit', () => ok()));
  void exit.then(() => (exited = true));
  const killOnExit = (): void => {
    if (!exited) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  async function api<T>(path: string, params: Record<string, string> = {}): Promise<T> {
    const res = await fetch(`${url}/api/v1/${path}?${new URLSearchParams(params).toString()}`, {
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await res.json()) as { status: string; data: T; errorType?: string; error?: string };
    if (body.status !== 'success')
      throw new Error(`prometheus ${path} ${JSON.stringify(params)}: ${body.errorType}: ${body.error}`);
    return body.data;
  }
  async function query(expr: string): Promise<QueryData> {
    return api<QueryData>('query', { query: expr });
  }
  const handle: PrometheusHandle = {
    url,
    logs,
    api,
    query,
    async waitFor(expr, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const data = await query(expr);
        if (data.resultType === 'vector' && data.result.length > 0) return data.result;
        if (Date.now() > deadline) throw new Error(`prometheus: no data for ${expr} within ${timeoutMs / 1000} s`);
        await new Promise((r) => setTimeout(r, 500));
      }
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exit;
        clearTimeout(timer);
      }
      process.removeListener('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) throw new Error(`prometheus exited before it was ready:\n${logs.join('\n')}`);
    try {
      const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return handle;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await handle.stop();
      throw new Error(`prometheus not ready within ${READY_TIMEOUT_MS / 1000} s:\n${logs.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
