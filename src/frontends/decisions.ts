/**
 * What a frontend asks of the shared decision service (src/decision-service.ts's DecisionService):
 * declared here so that frontends never import the wiring layer (src/'s own files) that starts them.
 */
import type { TraceContext } from '../observe/trace.js';
import type { Decision } from '../trust/decide.js';
import type { Facts, Frontend } from '../trust/facts.js';
import type { ReasonId } from '../trust/reasons.js';

/** A frontend's answer to each reason, as its wire says it: what the trace records (precomputed, no allocation per answer). */
export type AnswerTexts = Readonly<Record<ReasonId, string>>;

export interface Decisions {
  /**
   * decide() on the list in force, counted, traced and accounted; `startedAt` from process.hrtime.bigint().
   * The trace records `answers[reason]`: each frontend says its own answer, the service stays wire-neutral.
   */
  answer(frontend: Frontend, facts: Facts, context: TraceContext, startedAt: bigint, answers: AnswerTexts): Decision;
}
