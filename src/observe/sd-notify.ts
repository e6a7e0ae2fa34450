/**
 * Readiness for systemd's Type=notify: READY=1 once every listener accepts with the list decided,
 * STOPPING=1 when a shutdown begins, STATUS= lines on the way.
 *
 * $NOTIFY_SOCKET is a unix datagram socket and Node has no API for those. Rather than a native
 * module (a compiler at install time), the messages go through `systemd-notify`, which ships with
 * every systemd. Its known race — the helper exits before systemd reads the message, so systemd
 * cannot tell which unit sent it and drops it — is closed since systemd 246: systemd-notify then
 * waits (sd_notify_barrier) until the manager has processed the message (Debian 12 has 252). The
 * sender is the helper, not the main PID, so the unit says NotifyAccess=all.
 */
import { execFile } from 'node:child_process';
import type { Logger } from 'pino';

export interface Notifier {
  /** Sends the assignments (`READY=1`, `STATUS=…`); resolves once sent or failed (a failure is logged, never thrown). */
  notify(...assignments: string[]): Promise<void>;
}

/** What to run: systemd-notify by default (tests point it elsewhere). */
export interface NotifierOptions {
  readonly command?: string;
  /** Per message; systemd-notify waits for the manager, which answers in milliseconds. */
  readonly timeoutMs?: number;
}

const NO_NOTIFIER: Notifier = { notify: async () => {} };

/**
 * The notifier for `env`'s NOTIFY_SOCKET; a no-op when there is none (not started by systemd, or
 * Type= is not notify). NOTIFY_SOCKET is removed from `env` (sd_notify's unset_environment), so that
 * the other processes we spawn do not speak for the daemon.
 */
export function createNotifier(env: NodeJS.ProcessEnv, logger: Logger, options: NotifierOptions = {}): Notifier {
  const socket = env['NOTIFY_SOCKET'];
  delete env['NOTIFY_SOCKET'];
  if (socket === undefined || socket === '') return NO_NOTIFIER;
  const command = options.command ?? 'systemd-notify';
  const timeout = options.timeoutMs ?? 10_000;
  // Messages in the order asked: READY must never overtake nor follow a STOPPING sent after it.
  let queue: Promise<void> = Promise.resolve();
  return {
    notify(...assignments: string[]): Promise<void> {
      // A value with a newline would forge another assignment: STATUS texts are ours, but keep them on one line.
      const clean = assignments.map((a) => a.replace(/[\r\n]+/g, ' '));
      queue = queue.then(
        () =>
          new Promise<void>((done) => {
            execFile(command, clean, { env: { ...env, NOTIFY_SOCKET: socket }, timeout }, (err, _stdout, stderr) => {
              if (err !== null) {
                logger.warn(
                  { event: 'sd_notify_failed', command, assignments: clean, err: err.message, stderr: stderr.trim() },
                  'cannot notify systemd (Type=notify needs systemd-notify and NotifyAccess=all)',
                );
              }
              done();
            });
          }),
      );
      return queue;
    },
  };
}
