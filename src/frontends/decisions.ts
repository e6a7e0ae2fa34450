/**
 * What a frontend asks of the shared decision service (src/decision-service.ts's DecisionService):
 * declared here so that frontends never import the wiring layer (src/'s own files) that starts them.
 */
import type { TraceContext } from '../observe/trace.js';
import type { Decision } from '../trust/decide.js';
import type { Facts, Frontend } from '../trust/facts.js';

export interface Decisions {
  /** decide() on the list in force, counted, traced and accounted; `startedAt` from process.hrtime.bigint(). */
  answer(frontend: Frontend, facts: Facts, context: TraceContext, startedAt: bigint): Decision;
}
