/** Runs the CLI as operators do (through tsx, from the repository). */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './fixtures.js';

export const CLI = join(REPO_ROOT, 'src', 'cli.ts');

export function runCli(
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...options.env },
    timeout: options.timeoutMs ?? 60_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/**
 * Runs a command line exactly as the CLI or the daemon printed it for an operator (`mssante-policyd …`,
 * shell-quoted), through `sh -c`, with `mssante-policyd` on PATH being this repository's CLI.
 */
export function runPrintedCommand(
  commandLine: string,
  options: { timeoutMs?: number } = {},
): { code: number | null; stdout: string; stderr: string } {
  const bin = mkdtempSync(join(tmpdir(), 'mssante-bin-'));
  const shim = join(bin, 'mssante-policyd');
  writeFileSync(shim, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} --import tsx ${JSON.stringify(CLI)} "$@"\n`);
  chmodSync(shim, 0o755);
  try {
    const result = spawnSync('sh', ['-c', commandLine], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` },
      timeout: options.timeoutMs ?? 60_000,
    });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
}
