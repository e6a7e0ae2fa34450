/**
 * A frontend is a declared spec over the one listener skeleton (net/stream-server.ts): its name, the
 * SETTINGS keys it owns (config.ts: their defaults live there only), its protocol-error kinds (each
 * series of protocol_errors_total{frontend,kind} starts at 0), how it renders a decision for the
 * trace, and its codec + session factory. The daemon starts every enabled spec the same way
 * (src/frontend-registry.ts lists them, one line each; systemd socket names and the daemon's addresses
 * follow from it): a fourth frontend is one folder, one line there, its name in ListenerFrontend
 * (trust/facts.ts, the typed label of its metrics) and its settings rows in SETTINGS.
 */
import type { Logger } from 'pino';
import type { ListenOptions } from '../net/listen.js';
import {
  startStreamServer,
  type CodecFault,
  type ListenerHandle,
  type StreamConnection,
  type StreamSession,
} from '../net/stream-server.js';
import type { Metrics } from '../observe/metrics.js';
import type { ListenerFrontend } from '../trust/facts.js';
import type { WhitelistIndex } from '../whitelist/whitelist-index.js';
import type { AnswerTexts, Decisions } from './decisions.js';

/**
 * The SETTINGS keys a frontend owns, by role (src/frontend-registry.ts checks at compile time that
 * each names a setting of the right type). Shared settings (--max-connections, --max-connection-bytes,
 * --heap-watermark, --socket-*, --allowed-peer-users) belong to every listener and are not listed.
 */
export interface FrontendSettings<L extends string, T extends string> {
  /** Its listen address (null: off). */
  readonly listen: string;
  /** Seconds a silent connection is kept. */
  readonly idleTimeout: string;
  /** Seconds from the first byte of a request to its last. */
  readonly requestTimeout: string;
  /** The codec's limits: option name → an integer setting. */
  readonly limits: { readonly [P in L]: string };
  /** Other values it serves: option name → a string setting. */
  readonly texts: { readonly [P in T]: string };
}

/** Its settings' values, as the daemon resolved them (the keys of FrontendSettings, read from the Config). */
export interface FrontendValues<L extends string = string, T extends string = string> {
  readonly idleTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly limits: { readonly [P in L]: number };
  readonly texts: { readonly [P in T]: string };
  /** --max-connection-bytes: a codec checks it holds one request at least. */
  readonly maxConnectionBytes: number;
}

/** What the daemon gives every frontend. */
export interface FrontendDeps {
  /** The decision service (the receiving side's trust decision). */
  readonly service: Decisions;
  /** The list in force, or null (lookups on the sending side). */
  readonly currentIndex: () => WhitelistIndex | null;
  readonly metrics: Metrics;
  /** Already a child for this frontend's component. */
  readonly logger: Logger;
}

/** The protocol of one listener: how the skeleton frames, recognises a codec fault and answers. */
export interface FrontendProtocol<K extends string, R> {
  readonly codecFault: (err: unknown) => CodecFault<K, R> | null;
  readonly createSession: (connection: StreamConnection<K>) => StreamSession<R>;
  /** Keep reading after the peer's FIN (the peer shuts down its side, then reads). */
  readonly allowHalfOpen?: boolean;
  /** TCP keep-alive probe delay; off when absent. */
  readonly keepAliveMs?: number;
}

export interface FrontendSpec<K extends string = string, R = unknown, L extends string = string, T extends string = string> {
  readonly name: ListenerFrontend;
  readonly settings: FrontendSettings<L, T>;
  /** Every protocol-error kind its codec and session report, besides the skeleton's (STREAM_ERROR_KINDS). */
  readonly protocolErrorKinds: readonly K[];
  /** Its answer to each reason as the trace records it; null for a frontend that takes no decision (lookups). */
  readonly answers: AnswerTexts | null;
  /** Checks the limits (RangeError at start-up, not at the first connection), then builds the protocol. */
  protocol(values: FrontendValues<L, T>, deps: FrontendDeps): FrontendProtocol<K, R>;
}

/** What every listener takes besides its own settings: admission, the budget, the socket file, who may connect. */
export interface SharedListenerOptions {
  /** Connections beyond this are accepted then closed at once, and counted (--max-connections). */
  readonly maxConnections: number;
  /** New connections are refused while the heap is above this percentage of its limit (--heap-watermark). */
  readonly heapWatermarkPercent: number;
  /** Mode, owner and group of a unix socket file, and the socket systemd passed for this listener (socket activation). */
  readonly unixSocket?: ListenOptions;
  /** uid → name (--allowed-peer-users): a loopback TCP listener closes connections of any other local user. */
  readonly allowedPeerUsers?: ReadonlyMap<number, string>;
}

/** Starts one frontend on the skeleton: its protocol, its kinds, its limits, the shared listener options. */
export async function startFrontend<K extends string, R, L extends string, T extends string>(
  spec: FrontendSpec<K, R, L, T>,
  listenAddress: string,
  values: FrontendValues<L, T>,
  shared: SharedListenerOptions,
  deps: FrontendDeps,
): Promise<ListenerHandle> {
  return startProtocol(spec.name, spec.protocolErrorKinds, spec.protocol(values, deps), listenAddress, values, shared, deps);
}

/** The same, for a protocol already built (the servers' own entry points, which tests drive with a handler). */
export function startProtocol<K extends string, R>(
  name: ListenerFrontend,
  protocolErrorKinds: readonly K[],
  protocol: FrontendProtocol<K, R>,
  listenAddress: string,
  values: Pick<FrontendValues, 'idleTimeoutMs' | 'requestTimeoutMs' | 'maxConnectionBytes'>,
  shared: SharedListenerOptions,
  deps: Pick<FrontendDeps, 'logger' | 'metrics'>,
): Promise<ListenerHandle> {
  return startStreamServer(listenAddress, {
    frontend: name,
    protocolErrorKinds,
    codecFault: protocol.codecFault,
    createSession: protocol.createSession,
    allowHalfOpen: protocol.allowHalfOpen,
    keepAliveMs: protocol.keepAliveMs,
    limits: {
      maxConnections: shared.maxConnections,
      idleTimeoutMs: values.idleTimeoutMs,
      requestTimeoutMs: values.requestTimeoutMs,
      maxConnectionBytes: values.maxConnectionBytes,
      heapWatermarkPercent: shared.heapWatermarkPercent,
    },
    unixSocket: shared.unixSocket,
    allowedPeerUsers: shared.allowedPeerUsers,
    logger: deps.logger,
    metrics: deps.metrics,
  });
}
