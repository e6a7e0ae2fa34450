/**
 * Log lines for journald. systemd reads a `<N>` syslog priority at the start of each stdout line
 * (SyslogLevelPrefix=yes, its default), strips it and files the line under that PRIORITY, so that
 * `journalctl -p warning -u mssante-policyd` finds warnings and errors among the trace lines.
 * The JSON after the prefix is unchanged.
 */
import { fstatSync } from 'node:fs';

export type LogFormat = 'auto' | 'json' | 'journal';
export const LOG_FORMATS: readonly LogFormat[] = ['auto', 'json', 'journal'];

/** pino level label → syslog priority (RFC 5424): fatal crit, error err, warn warning, info info, debug/trace debug. */
const PRIORITY: Readonly<Record<string, string>> = {
  fatal: '<2>',
  error: '<3>',
  warn: '<4>',
  info: '<6>',
  debug: '<7>',
  trace: '<7>',
};
const LEVEL_AT_START = /^\{"level":"([a-z]+)"/;

/** The `<N>` prefix for one JSON log line (lines begin with their level label); `<6>` when none is found. */
export function journalPrefix(line: string): string {
  const m = LEVEL_AT_START.exec(line);
  return (m !== null ? PRIORITY[m[1]!] : undefined) ?? '<6>';
}

/**
 * Whether stdout is connected to journald: systemd sets JOURNAL_STREAM to "device:inode" of the
 * stream it gave the service (systemd.exec(5)); a redirected stdout no longer matches.
 */
export function stdoutIsJournal(env: NodeJS.ProcessEnv, fd = 1): boolean {
  const stream = env.JOURNAL_STREAM;
  if (stream === undefined) return false;
  const m = /^(\d+):(\d+)$/.exec(stream);
  if (m === null) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** `auto` resolved against the process's stdout. */
export function effectiveLogFormat(format: LogFormat, env: NodeJS.ProcessEnv): 'json' | 'journal' {
  if (format === 'auto') return stdoutIsJournal(env) ? 'journal' : 'json';
  return format;
}
