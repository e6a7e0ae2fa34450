/**
 * How every command of the CLI reports a bad usage, and where every command finds its config file:
 * one error type and one lookup, so that `serve`, `check`, `query` and `export` cannot drift apart.
 */
import { ConfigError } from './config.js';

/** Exit code of a bad usage or bad settings, for every command. */
export const EXIT_USAGE = 2;

/**
 * A command used wrongly. `message` goes to stderr after the command's name; `usage`, when given,
 * goes to stdout (what the command prints for --help).
 */
export class UsageError extends Error {
  constructor(
    readonly detail: string | null,
    readonly usage: string | null = null,
  ) {
    super(detail ?? 'bad usage');
  }
}

/** The config file of a command: `--config FILE`, else the environment's MSSANTE_POLICYD_CONFIG, else none. */
export function configFileOf(values: Readonly<Record<string, unknown>>, env: NodeJS.ProcessEnv = process.env): string | null {
  const flag = values['config'];
  return typeof flag === 'string' ? flag : (env['MSSANTE_POLICYD_CONFIG'] ?? null);
}

/**
 * Runs one command: a UsageError or a ConfigError (a bad setting, from any source) is reported as
 * `command: message` on stderr (and the usage on stdout) and exits EXIT_USAGE; anything else propagates.
 */
export async function runCommand(
  command: string,
  run: () => Promise<number>,
  out: { stdout: (text: string) => void; stderr: (text: string) => void } = {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
  },
): Promise<number> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof UsageError) {
      if (error.usage !== null) out.stdout(error.usage);
      if (error.detail !== null) out.stderr(`${command}: ${error.detail}\n`);
      return EXIT_USAGE;
    }
    if (error instanceof ConfigError) {
      out.stderr(`${command}: ${error.message}\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
}
