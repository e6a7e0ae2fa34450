/**
 * The edge between frontends and decide(): takes Facts, gets the list in force, decides, and turns the
 * Decision into a metric and a trace line — the same reason id in the answer, the metric and the log.
 * A fault here never becomes a 5xx: it is an internal_error tempfail.
 */
import type { Logger } from 'pino';
import { decide, type Decision, type DecisionPolicy } from './trust/decide.js';
import type { Facts, Frontend } from './trust/facts.js';
import { REASONS } from './trust/reasons.js';
import type { AnswerTexts } from './frontends/decisions.js';
import type { Metrics } from './observe/metrics.js';
import type { DecisionTracer, TraceContext } from './observe/trace.js';
import type { OperatorLedger } from './trust/operators.js';
import type { PeerLedger } from './trust/peers.js';
import type { WhitelistIndex } from './whitelist/whitelist-index.js';

const INTERNAL_ERROR: Decision = Object.freeze({ reason: REASONS.internal_error, senderDomain: null, operator: null });

export interface DecisionServiceDeps {
  readonly currentIndex: () => WhitelistIndex | null;
  readonly policy: DecisionPolicy;
  readonly metrics: Metrics;
  readonly tracer: DecisionTracer;
  readonly logger: Logger;
  /** Per-operator accounting and throttle; absent: neither. */
  readonly operators?: OperatorLedger;
  /** Certificates seen per listed identity; absent: not recorded. Told after the answer, never awaited. */
  readonly peers?: PeerLedger;
}

export class DecisionService {
  constructor(private readonly deps: DecisionServiceDeps) {}

  /** Decides without side effects: the dry run of /v1/decide. */
  evaluate(facts: Facts): Decision {
    return this.decideWith(facts, this.deps.currentIndex());
  }

  private decideWith(facts: Facts, index: WhitelistIndex | null): Decision {
    try {
      return decide(facts, index, this.deps.policy);
    } catch (error) {
      this.deps.logger.error({ event: 'internal_error', err: error }, 'decide() failed');
      return INTERNAL_ERROR;
    }
  }

  /**
   * Decides, counts and traces. `startedAt` is process.hrtime.bigint() when the request was complete;
   * `answers` is the calling frontend's answer to each reason, as the trace records it.
   */
  answer(frontend: Frontend, facts: Facts, context: TraceContext, startedAt: bigint, answers: AnswerTexts): Decision {
    // One read of the list in force: the decision and its trace name the same list.
    const index = this.deps.currentIndex();
    let decision = this.decideWith(facts, index);
    // Counted once per message (Postfix: per `instance`); the throttle only ever turns a pass into a 451.
    if (this.deps.operators?.admit(decision, context.instance) === true) {
      decision = {
        reason: REASONS.operator_rate_limited,
        senderDomain: decision.senderDomain,
        operator: decision.operator ?? null,
      };
    }
    const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
    const reason = decision.reason;
    this.deps.metrics.countDecision(frontend, reason.result, reason.id, seconds);
    this.deps.tracer.record(frontend, context, decision, answers[reason.id], seconds, index?.sha256 ?? null);
    this.notePeer(frontend, facts, decision);
    return decision;
  }

  /** The fingerprint behind the listed identity decide() matched: recorded, never part of the answer. */
  private notePeer(frontend: Frontend, facts: Facts, decision: Decision): void {
    if (this.deps.peers === undefined) return;
    try {
      this.deps.peers.observe(frontend, decision.operator, facts.certFingerprints);
    } catch (error) {
      this.deps.logger.error({ event: 'internal_error', err: error }, 'peer ledger failed');
    }
  }
}
