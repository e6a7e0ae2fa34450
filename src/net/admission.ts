/**
 * What every listener does with a new connection before speaking its protocol: refuse it past the
 * connection limit (counted, and warned about at most every 10 s so a flood cannot flood the log),
 * and name its peer for logs.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ListenerFrontend, Metrics } from '../observe/metrics.js';

const REJECT_WARN_INTERVAL_MS = 10_000;

export interface Admission {
  /** False (and the socket destroyed) when `open` connections already reach the limit. */
  admit(socket: Socket, open: number): boolean;
  /** `ip:port`, `[v6]:port`, or `unix`. */
  remoteOf(socket: Socket): string;
}

export function createAdmission(frontend: ListenerFrontend, maxConnections: number, unix: boolean, metrics: Metrics, log: Logger): Admission {
  const rejected = metrics.connectionsRejected.labels({ frontend });
  let lastWarn = -Infinity;
  return {
    admit(socket, open) {
      if (open < maxConnections) return true;
      rejected.inc();
      const now = Date.now();
      if (now - lastWarn >= REJECT_WARN_INTERVAL_MS) {
        lastWarn = now;
        log.warn({ maxConnections }, `${frontend} connection limit reached, refusing connections`);
      }
      socket.destroy();
      return false;
    },
    remoteOf(socket) {
      if (unix) return 'unix';
      const ip = socket.remoteAddress ?? 'unknown';
      const host = ip.includes(':') ? `[${ip}]` : ip;
      return socket.remotePort === undefined ? host : `${host}:${socket.remotePort}`;
    },
  };
}
