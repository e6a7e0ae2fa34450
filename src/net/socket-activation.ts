/**
 * systemd socket activation, read the way sd_listen_fds(3) reads it but without libsystemd: the
 * sockets start at fd 3, `LISTEN_FDS` says how many, `LISTEN_PID` must be this process (else they
 * were meant for another one, e.g. our parent), `LISTEN_FDNAMES` names them (`FileDescriptorName=`
 * in the .socket unit). Each name is the listener that serves it: policy, milter, socketmap, http.
 *
 * Why it matters: systemd (or any holder) keeps the listening socket across a restart, so the kernel
 * queues the MTA's connections while no daemon runs, and the next daemon answers them once it can.
 */
import type net from 'node:net';
import type { ListenAddress } from './listen.js';

/** The first inherited descriptor (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;

export class SocketActivationError extends Error {
  override readonly name = 'SocketActivationError';
}

/** Listener name → inherited descriptor. Empty when the process was not socket-activated. */
export type InheritedSockets = ReadonlyMap<string, number>;

/**
 * The sockets handed to process `pid` by `env`, each named after one of `listeners` (the daemon's:
 * every frontend of frontend-registry.ts, and http). Pure: the caller removes the variables afterwards
 * (forgetActivationEnv) so that the processes we spawn do not take our sockets for theirs.
 */
export function inheritedSockets(env: NodeJS.ProcessEnv, pid: number, listeners: readonly string[]): InheritedSockets {
  // More than one socket per listener is refused, so this bounds LISTEN_FDS.
  const maxFds = listeners.length;
  const fdsText = env['LISTEN_FDS'];
  const pidText = env['LISTEN_PID'];
  if (fdsText === undefined || pidText === undefined) return new Map();
  if (!/^[0-9]+$/.test(pidText.trim()) || Number(pidText) !== pid) return new Map();
  if (!/^[0-9]+$/.test(fdsText.trim())) throw new SocketActivationError(`LISTEN_FDS=${JSON.stringify(fdsText)} is not a number`);
  const count = Number(fdsText);
  if (count === 0) return new Map();
  if (count > maxFds)
    throw new SocketActivationError(`LISTEN_FDS=${count}: at most ${maxFds} sockets (one per listener: ${listeners.join(', ')})`);
  const namesText = env['LISTEN_FDNAMES'];
  const names = namesText === undefined ? [] : namesText.split(':');
  if (names.length !== count) {
    throw new SocketActivationError(
      `LISTEN_FDS=${count} but LISTEN_FDNAMES=${JSON.stringify(namesText ?? '')}: name each socket with FileDescriptorName= (${listeners.join(', ')}) in the .socket unit`,
    );
  }
  const sockets = new Map<string, number>();
  names.forEach((name, i) => {
    if (!listeners.includes(name)) {
      throw new SocketActivationError(
        `inherited socket ${i + 1} is named ${JSON.stringify(name)}: FileDescriptorName= must be one of ${listeners.join(', ')}`,
      );
    }
    if (sockets.has(name))
      throw new SocketActivationError(`two inherited sockets are named ${JSON.stringify(name)}: one per listener`);
    sockets.set(name, LISTEN_FDS_START + i);
  });
  return sockets;
}

/** Removes the activation variables (sd_listen_fds' unset_environment). */
export function forgetActivationEnv(env: NodeJS.ProcessEnv): void {
  delete env['LISTEN_FDS'];
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDNAMES'];
}

/**
 * The listeners an inherited socket names but the configuration turns off: a start-up error, since
 * connections would queue on that socket and never be answered.
 */
export function unservedSockets(sockets: InheritedSockets, enabled: Readonly<Record<string, boolean>>): string[] {
  return [...sockets.keys()].filter((name) => enabled[name] !== true);
}

/**
 * Serves `server` on the inherited listening socket `fd` (TCP or unix; it must be listening already,
 * as systemd's Accept=no sockets are). Nothing is bound and nothing is removed at close: the socket
 * and its file belong to the holder, which keeps them (and the connections queued on them) for the
 * next daemon.
 */
export function listenInherited(server: net.Server, fd: number, configured: ListenAddress): Promise<ListenAddress> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void =>
      reject(new SocketActivationError(`cannot serve on inherited socket fd ${fd}: ${err.message}`));
    server.once('error', onError);
    server.listen({ fd }, () => {
      server.off('error', onError);
      const info = server.address();
      if (info !== null && typeof info === 'object') resolve({ kind: 'tcp', host: info.address, port: info.port });
      // Node cannot tell a unix socket's path when it did not bind it: the configured one, if unix, is the documented one.
      else resolve(configured.kind === 'unix' ? configured : { kind: 'unix', path: `(inherited fd ${fd})` });
    });
  });
}
