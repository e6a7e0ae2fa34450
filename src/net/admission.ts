/**
 * What every listener does with a new connection before speaking its protocol: refuse it past the
 * connection limit, or while the V8 heap is above its watermark (each counted, and warned about at
 * most every 10 s so a flood cannot flood the log), and name its peer for logs.
 *
 * The watermark sheds load well before the heap limit: connections already open keep their budget
 * (--max-connection-bytes each), and the answers on them go on; only new ones are refused until
 * the heap is back under the watermark.
 */
import type { Socket } from 'node:net';
import { getHeapStatistics } from 'node:v8';
import type { Logger } from 'pino';
import type { Metrics } from '../observe/metrics.js';
import type { ListenerFrontend } from '../trust/facts.js';

const REJECT_WARN_INTERVAL_MS = 10_000;

export interface Admission {
  /** False (and the socket destroyed) when `open` connections already reach the limit. */
  admit(socket: Socket, open: number): boolean;
  /** `ip:port`, `[v6]:port`, or `unix`. */
  remoteOf(socket: Socket): string;
}

export interface MemoryWatermark {
  /** Percentage of the V8 heap limit above which new connections are refused. */
  readonly heapWatermarkPercent: number;
  /** Heap used as a fraction of its limit; v8.getHeapStatistics() by default (tests inject their own). */
  readonly heapUsedRatio?: () => number;
}

/** used_heap_size / heap_size_limit: a cheap call (no /proc read), made once per accepted connection. */
export function heapUsedRatio(): number {
  const heap = getHeapStatistics();
  return heap.used_heap_size / heap.heap_size_limit;
}

export function createAdmission(
  frontend: ListenerFrontend,
  maxConnections: number,
  unix: boolean,
  metrics: Metrics,
  log: Logger,
  memory?: MemoryWatermark,
): Admission {
  const rejected = metrics.connectionsRejected.labels({ frontend, reason: 'limit' });
  const shed = metrics.connectionsRejectedMemory.labels({ frontend });
  const ratio = memory?.heapUsedRatio ?? heapUsedRatio;
  const watermark = memory === undefined ? Infinity : memory.heapWatermarkPercent / 100;
  let lastWarn = -Infinity;
  let lastMemoryWarn = -Infinity;
  return {
    admit(socket, open) {
      if (open >= maxConnections) {
        rejected.inc();
        const now = Date.now();
        if (now - lastWarn >= REJECT_WARN_INTERVAL_MS) {
          lastWarn = now;
          log.warn({ maxConnections }, `${frontend} connection limit reached, refusing connections`);
        }
        socket.destroy();
        return false;
      }
      if (watermark === Infinity) return true;
      const used = ratio();
      if (used < watermark) return true;
      shed.inc();
      const now = Date.now();
      if (now - lastMemoryWarn >= REJECT_WARN_INTERVAL_MS) {
        lastMemoryWarn = now;
        log.warn(
          { heapUsedPercent: Math.round(used * 1000) / 10, heapWatermarkPercent: memory?.heapWatermarkPercent, open },
          `${frontend} heap above its watermark, refusing connections`,
        );
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
