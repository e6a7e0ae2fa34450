/**
 * Postfix socketmap listener (sending side): the shared stream skeleton (net/stream-server.ts) around
 * the codec and the tables, nothing else. Lookups are synchronous, so replies leave in request order
 * by construction. Postfix's socketmap client (dict_sockmap) keeps a connection 10 s idle and 100 s at
 * most, waits 100 s for a reply and sends requests of 100 000 bytes at most: our limits are those
 * plus a grace.
 *
 * Half-open: at the peer's FIN the decoder says whether a request was cut, then we end our side. A
 * codec error answers the requests completed before it, flushes them, then closes (the skeleton's
 * one behaviour). A lookup that throws closes that connection only (the skeleton's guard; Postfix retries).
 */
import type { Logger } from 'pino';
import type { ListenerHandle, ListenerOptions, StreamSession } from '../../net/stream-server.js';
import type { Metrics } from '../../observe/metrics.js';
import type { WhitelistIndex } from '../../whitelist/whitelist-index.js';
import { startProtocol, type FrontendProtocol } from '../spec.js';
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

/** What answering lookups needs: the tables, the list in force, where to count and log. */
export interface SocketmapAnswering {
  readonly tables: SocketmapTables;
  readonly currentIndex: () => WhitelistIndex | null;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

/** A request being received holds its length digits (10 at most), the colon and its payload. */
const SOCKETMAP_FRAME_OVERHEAD_BYTES = 11;

/** The socketmap listener with tables of its own (tests); the daemon starts SOCKETMAP_FRONTEND (frontend.ts). */
export function startSocketmapServer(listenAddress: string, options: SocketmapServerOptions): Promise<ListenerHandle> {
  const protocol = socketmapProtocol(options.limits, options.maxConnectionBytes, options);
  return startProtocol('socketmap', SOCKETMAP_CODEC_ERROR_KINDS, protocol, listenAddress, options, options, options);
}

/** The socketmap protocol on the skeleton: half-open, the codec's faults, a session per connection. Checks the limits now. */
export function socketmapProtocol(
  limits: SocketmapLimits,
  maxConnectionBytes: number,
  answering: SocketmapAnswering,
): FrontendProtocol<SocketmapCodecErrorKind, SocketmapRequest> {
  new SocketmapDecoder(limits); // validates the limits at start-up
  if (limits.maxRequestBytes + SOCKETMAP_FRAME_OVERHEAD_BYTES > maxConnectionBytes) {
    throw new RangeError(
      `maxConnectionBytes (${maxConnectionBytes}) must hold one request (maxRequestBytes + ${SOCKETMAP_FRAME_OVERHEAD_BYTES} = ${limits.maxRequestBytes + SOCKETMAP_FRAME_OVERHEAD_BYTES})`,
    );
  }
  const answer = socketmapAnswers(answering);
  return {
    allowHalfOpen: true,
    codecFault: (err) => (err instanceof SocketmapCodecError ? err : null),
    createSession: (conn) => {
      const decoder = new SocketmapDecoder(limits);
      return {
        decode: (chunk) => decoder.push(chunk),
        decodeEnd() {
          decoder.end();
          return [];
        },
        answer: (requests) => conn.write(answer(requests, conn.id)),
        pendingBytes: () => decoder.pendingBytes,
        heldBytes: () => decoder.pendingBytes,
        idle: () => !decoder.midRequest,
      } satisfies StreamSession<SocketmapRequest>;
    },
  };
}

/** Requests → one buffer of replies, in request order. */
function socketmapAnswers({
  tables,
  currentIndex,
  metrics,
  logger,
}: SocketmapAnswering): (requests: readonly SocketmapRequest[], connId: number) => Buffer {
  // Every answer but mssante-domain's is one of a few shared objects: encode each once, for all connections.
  const encoded = new WeakMap<SocketmapLookup, Buffer>();
  function reply(found: SocketmapLookup): Buffer {
    let bytes = encoded.get(found);
    if (bytes === undefined) {
      bytes = encodeReply(found.reply);
      encoded.set(found, bytes);
    }
    return bytes;
  }
  return (requests: readonly SocketmapRequest[], connId: number): Buffer => {
    const index = currentIndex();
    const debug = logger.isLevelEnabled('debug');
    const replies: Buffer[] = [];
    for (const { name, key } of requests) {
      // A lookup that throws is a bug: the skeleton's guard logs it, counts handler_failed, closes this connection.
      const found = tables.lookup(name, key, index);
      metrics.countSocketmapLookup(found.map, found.result);
      // The key is an address or a domain: traced at debug level only.
      if (debug)
        logger.debug({ frontend: 'socketmap', conn: connId, map: found.map, key, result: found.result }, 'socketmap lookup');
      replies.push(reply(found));
    }
    return replies.length === 1 ? (replies[0] as Buffer) : Buffer.concat(replies);
  };
}
