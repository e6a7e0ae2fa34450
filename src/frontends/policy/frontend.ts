/**
 * The Postfix policy adapter: a request → Facts → the shared decision service → a policy action
 * (`DUNNO`, `550 5.7.1 ...`), and the count of checks asked at a stage that cannot be decided
 * (misplaced.ts). The same request → Facts mapping answers the HTTP dry run.
 */
import type { Decision } from '../../trust/decide.js';
import type { Facts } from '../../trust/facts.js';
import { POLICY_ACTIONS, type Result } from '../../trust/reasons.js';
import type { FrontendDeps, FrontendSpec } from '../spec.js';
import { POLICY_CODEC_ERROR_KINDS, type PolicyCodecErrorKind, type PolicyLimits, type PolicyRequest } from './codec.js';
import { factsFromRequest, traceFromRequest } from './facts.js';
import { MisplacedCheckReporter } from './misplaced.js';
import { policyProtocol, type PolicyHandler } from './server.js';

/** The Postfix policy frontend, as the daemon starts it (src/frontend-registry.ts). */
export const POLICY_FRONTEND = {
  name: 'policy',
  settings: {
    listen: 'policy-listen',
    idleTimeout: 'idle-timeout',
    requestTimeout: 'request-timeout',
    limits: { maxLineBytes: 'max-line-bytes', maxRequestBytes: 'max-request-bytes', maxAttributes: 'max-attributes' },
    texts: {},
  },
  protocolErrorKinds: POLICY_CODEC_ERROR_KINDS,
  answers: POLICY_ACTIONS,
  protocol: (values, deps) => policyProtocol(values.limits, values.maxConnectionBytes, policyHandler(deps), deps.logger),
} as const satisfies FrontendSpec<PolicyCodecErrorKind, PolicyRequest, keyof PolicyLimits, never>;

/** A request → Facts → the decision service → the policy action; counts checks asked at a stage that cannot be decided. */
function policyHandler({ service, metrics, logger }: FrontendDeps): PolicyHandler {
  const misplaced = new MisplacedCheckReporter(metrics, logger);
  return (request, connection) => {
    const started = process.hrtime.bigint();
    const facts = factsFromRequest(request);
    const decision = service.answer('policy', facts, traceFromRequest(request, facts, connection.id), started, POLICY_ACTIONS);
    misplaced.note(facts.stage, request.get('protocol_state'));
    return POLICY_ACTIONS[decision.reason.id];
  };
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
