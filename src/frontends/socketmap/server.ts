/**
 * Postfix socketmap listener (sending side): the shared stream skeleton (net/stream-server.ts) around
 * the codec and the tables, nothing else. Lookups are synchronous, so replies leave in request order
 * by construction. Postfix's socketmap client (dict_sockmap) keeps a connection 10 s idle and 100 s at
 * most, waits 100 s for a reply and sends requests of 100 000 bytes at most: our limits are those
 * plus a grace.
 *
 * Half-open: at the peer's FIN the decoder says whether a request was cut, then we end our side. A
 * codec error answers the requests completed before it, flushes them, then closes.
 */
import {
  startStreamServer,
  type ListenerOptions,
  type StreamConnection,
  type StreamServer,
  type StreamSession,
} from '../../net/stream-server.js';
import type { WhitelistIndex } from '../../whitelist/whitelist-index.js';
import {
  SOCKETMAP_CODEC_ERROR_KINDS,
  SocketmapCodecError,
  SocketmapDecoder,
  type SocketmapCodecErrorKind,
  encodeReply,
  type SocketmapLimits,
  type SocketmapRequest,
} from './codec.js';
import type { SocketmapLookup, SocketmapTables } from './maps.js';

export interface SocketmapServerOptions extends ListenerOptions {
  /** --max-socketmap-request-bytes. */
  readonly limits: SocketmapLimits;
  /** --idle-timeout (Postfix keeps a socketmap connection 10 s idle). */
  readonly idleTimeoutMs: number;
  /** Longest time from the first byte of a request to its last (--request-timeout). */
  readonly requestTimeoutMs: number;
  readonly tables: SocketmapTables;
  /** The list in force, or null (every lookup is then TEMP). */
  readonly currentIndex: () => WhitelistIndex | null;
}

/** A request being received holds its length digits (10 at most), the colon and its payload. */
const SOCKETMAP_FRAME_OVERHEAD_BYTES = 11;

export type SocketmapServer = StreamServer;

export async function startSocketmapServer(listenAddress: string, options: SocketmapServerOptions): Promise<SocketmapServer> {
  const { limits, maxConnectionBytes } = options;
  new SocketmapDecoder(limits); // validates the limits at start-up
  if (limits.maxRequestBytes + SOCKETMAP_FRAME_OVERHEAD_BYTES > maxConnectionBytes) {
    throw new RangeError(
      `maxConnectionBytes (${maxConnectionBytes}) must hold one request (maxRequestBytes + ${SOCKETMAP_FRAME_OVERHEAD_BYTES} = ${limits.maxRequestBytes + SOCKETMAP_FRAME_OVERHEAD_BYTES})`,
    );
  }
  // Every answer but mssante-domain's is one of a few shared objects: encode each once, for all connections.
  const encoded = new WeakMap<SocketmapLookup, Buffer>();
  return startStreamServer(listenAddress, {
    frontend: 'socketmap',
    protocolErrorKinds: SOCKETMAP_CODEC_ERROR_KINDS,
    limits: {
      maxConnections: options.maxConnections,
      idleTimeoutMs: options.idleTimeoutMs,
      requestTimeoutMs: options.requestTimeoutMs,
      maxConnectionBytes,
      heapWatermarkPercent: options.heapWatermarkPercent,
    },
    logger: options.logger,
    metrics: options.metrics,
    allowHalfOpen: true,
    unixSocket: options.unixSocket,
    allowedPeerUsers: options.allowedPeerUsers,
    createSession: (conn) => socketmapSession(conn, new SocketmapDecoder(limits), (requests) => answer(requests, conn.id)),
  });

  /** One write for every reply of a chunk, in request order. */
  function answer(requests: readonly SocketmapRequest[], connId: number): Buffer {
    const { tables, metrics, logger } = options;
    const index = options.currentIndex();
    const debug = logger.isLevelEnabled('debug');
    const replies: Buffer[] = [];
    for (const { name, key } of requests) {
      const found = tables.lookup(name, key, index);
      metrics.countSocketmapLookup(found.map, found.result);
      // The key is an address or a domain: traced at debug level only.
      if (debug)
        logger.debug({ frontend: 'socketmap', conn: connId, map: found.map, key, result: found.result }, 'socketmap lookup');
      let bytes = encoded.get(found);
      if (bytes === undefined) {
        bytes = encodeReply(found.reply);
        encoded.set(found, bytes);
      }
      replies.push(bytes);
    }
    return replies.length === 1 ? (replies[0] as Buffer) : Buffer.concat(replies);
  }
}

/** One connection: bytes → requests → replies (`answer`), codec errors → a flushed close. No socket here. */
function socketmapSession(
  conn: StreamConnection<SocketmapCodecErrorKind>,
  decoder: SocketmapDecoder,
  answer: (requests: readonly SocketmapRequest[]) => Buffer,
): StreamSession {
  let failed = false;

  function codecFailure(err: unknown): void {
    if (!(err instanceof SocketmapCodecError)) throw err;
    failed = true;
    // Requests completed before the fault are answered, in order, before the close.
    if (err.completed.length > 0) conn.write(answer(err.completed));
    conn.fail(err.kind, 'warn', {}, { flush: true });
  }

  return {
    onData(chunk) {
      if (failed) return false;
      let requests: SocketmapRequest[];
      try {
        requests = decoder.push(chunk);
      } catch (err) {
        codecFailure(err);
        return false;
      }
      if (requests.length === 0) return false;
      conn.write(answer(requests));
      return true;
    },
    onEnd() {
      if (failed) return;
      try {
        decoder.end();
      } catch (err) {
        codecFailure(err);
        return;
      }
      conn.end();
    },
    pendingBytes: () => decoder.pendingBytes,
    heldBytes: () => decoder.pendingBytes,
    idle: () => !decoder.midRequest,
  };
}
