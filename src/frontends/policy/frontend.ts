/**
 * The Postfix policy adapter: a request → Facts → the shared decision service → a policy action
 * (`DUNNO`, `550 5.7.1 ...`), and the count of checks asked at a stage that cannot be decided
 * (misplaced.ts). The same request → Facts mapping answers the HTTP dry run.
 */
import type { Logger } from 'pino';
import type { ListenOptions } from '../../net/listen.js';
import type { Metrics } from '../../observe/metrics.js';
import type { Decision } from '../../trust/decide.js';
import type { Facts } from '../../trust/facts.js';
import { POLICY_ACTIONS, type Result } from '../../trust/reasons.js';
import type { Decisions } from '../decisions.js';
import type { PolicyLimits } from './codec.js';
import { factsFromRequest, traceFromRequest } from './facts.js';
import { MisplacedCheckReporter } from './misplaced.js';
import { startPolicyServer, type PolicyServer } from './server.js';

export interface PolicyFrontendOptions {
  readonly limits: PolicyLimits;
  readonly idleTimeoutMs: number;
  /** A request begun must arrive whole within this (slowloris). */
  readonly requestTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxConnectionBytes: number;
  readonly heapWatermarkPercent: number;
  /** Mode, owner and group of a unix socket file. */
  readonly unixSocket?: ListenOptions;
  /** uid → name (--allowed-peer-users), for a loopback TCP listener. */
  readonly allowedPeerUsers?: ReadonlyMap<number, string>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly service: Decisions;
}

export type PolicyFrontend = PolicyServer;

export async function startPolicyFrontend(listen: string, options: PolicyFrontendOptions): Promise<PolicyFrontend> {
  const { service, logger, metrics } = options;
  const misplaced = new MisplacedCheckReporter(metrics, logger);
  return startPolicyServer(listen, {
    limits: options.limits,
    idleTimeoutMs: options.idleTimeoutMs,
    requestTimeoutMs: options.requestTimeoutMs,
    maxConnections: options.maxConnections,
    maxConnectionBytes: options.maxConnectionBytes,
    heapWatermarkPercent: options.heapWatermarkPercent,
    unixSocket: options.unixSocket,
    allowedPeerUsers: options.allowedPeerUsers,
    logger,
    metrics,
    handle: (request, connection) => {
      const started = process.hrtime.bigint();
      const facts = factsFromRequest(request);
      const decision = service.answer('policy', facts, traceFromRequest(request, facts, connection.id), started, POLICY_ACTIONS);
      misplaced.note(facts.stage, request.get('protocol_state'));
      return POLICY_ACTIONS[decision.reason.id];
    },
  });
}

/**
 * The HTTP dry run (/v1/decide): policy attributes, at RCPT unless `protocol_state` says
 * otherwise, through the same request → Facts mapping; decided, neither counted nor traced.
 */
export function policyDryRun(
  evaluate: (facts: Facts) => Decision,
  attributes: object,
): { result: Result; reason: string; action: string } {
  const request = new Map<string, string>([['protocol_state', 'RCPT']]);
  for (const [name, value] of Object.entries(attributes) as Array<[string, unknown]>)
    if (typeof value === 'string') request.set(name, value);
  const decision = evaluate(factsFromRequest(request));
  return { result: decision.reason.result, reason: decision.reason.id, action: POLICY_ACTIONS[decision.reason.id] };
}
