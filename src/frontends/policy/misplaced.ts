/**
 * A policy check asked at a stage that cannot be decided (CONNECT, EHLO/HELO, VRFY, ETRN or an
 * unknown `protocol_state`) answers DUNNO: nothing is known yet to refuse on. That is a
 * configuration mistake (the check sits in the wrong restriction list) which would otherwise let
 * every mail through silently, so each one is counted and logged — rate-limited per stage, as a
 * misplaced check fires on every connection.
 */
import type { Logger } from 'pino';
import type { Metrics } from '../../observe/metrics.js';
import { UNDECIDED_STAGES, type Stage, type UndecidedStage } from '../../trust/facts.js';

/** At most one warning per stage per this many milliseconds (the suppressed count goes in the next one). */
const MISPLACED_WARNING_INTERVAL_MS = 60_000;

const UNDECIDED: ReadonlySet<string> = new Set(UNDECIDED_STAGES);

export class MisplacedCheckReporter {
  private readonly lastWarnedAt = new Map<UndecidedStage, number>();
  private readonly suppressed = new Map<UndecidedStage, number>();

  constructor(
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly intervalMs: number = MISPLACED_WARNING_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts and (rate-limited) logs a request at `stage` when that stage is never decided; `protocolState` as sent. */
  note(stage: Stage, protocolState: string | undefined): void {
    if (!UNDECIDED.has(stage)) return;
    const s = stage as UndecidedStage;
    this.metrics.misplacedChecks.inc({ stage: s });
    const t = this.now();
    const last = this.lastWarnedAt.get(s);
    if (last !== undefined && t - last < this.intervalMs) {
      this.suppressed.set(s, (this.suppressed.get(s) ?? 0) + 1);
      return;
    }
    this.lastWarnedAt.set(s, t);
    const suppressed = this.suppressed.get(s) ?? 0;
    this.suppressed.set(s, 0);
    this.logger.warn(
      // protocol_state is attacker-free (Postfix writes it) but bounded and escaped by pino anyway.
      { event: 'misplaced_check', stage: s, protocolState: (protocolState ?? '').slice(0, 32), suppressed },
      'policy check asked at a stage that cannot be decided: answered DUNNO; put check_policy_service in smtpd_recipient_restrictions (or smtpd_data_restrictions)',
    );
  }
}
