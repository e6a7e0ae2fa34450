/**
 * Every metric of the daemon, defined once. Labels are bounded sets (frontend, result, reason id,
 * error kind): never a domain, a DN or an address.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { REASONS, REASON_IDS, type ReasonId, type Result } from '../trust/reasons.js';
import { UNDECIDED_STAGES, type UndecidedStage } from '../trust/facts.js';

export const METRIC_PREFIX = 'mssante_policyd_';

export type Frontend = 'policy' | 'milter';

export interface Metrics {
  readonly registry: Registry;
  readonly decisions: Counter<'frontend' | 'result' | 'reason'>;
  readonly decisionDuration: Histogram<'frontend'>;
  readonly whitelistDomains: Gauge;
  readonly whitelistEntriesRejected: Gauge;
  readonly whitelistGeneratedTimestamp: Gauge;
  readonly whitelistLastSuccessTimestamp: Gauge;
  readonly whitelistLastFailureTimestamp: Gauge;
  readonly whitelistLoadFailures: Counter<'reason'>;
  readonly whitelistLoadDuration: Histogram;
  readonly whitelistUsable: Gauge;
  readonly connectionsActive: Gauge<'frontend'>;
  readonly connectionsRejected: Counter<'frontend'>;
  readonly protocolErrors: Counter<'frontend' | 'kind'>;
  readonly logLinesDropped: Counter;
  /** Policy requests asked at a stage that cannot be decided (a check in the wrong restriction list). */
  readonly misplacedChecks: Counter<'stage'>;
  /** Pre-bound children: the hot path does no label lookup. */
  countDecision(frontend: Frontend, result: Result, reason: ReasonId, seconds: number): void;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX, eventLoopMonitoringPrecision: 10 });
    // Gauges named *_total break `promtool check metrics`; each is the sum of its by-type twin.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      registry.removeSingleMetric(METRIC_PREFIX + name);
    }
  }
  const p = METRIC_PREFIX;
  const decisions = new Counter({
    name: `${p}decisions_total`,
    help: 'Decisions answered, by frontend, result and reason id',
    labelNames: ['frontend', 'result', 'reason'] as const,
    registers: [registry],
  });
  const decisionDuration = new Histogram({
    name: `${p}decision_duration_seconds`,
    help: 'Time from a complete request to its answer being written',
    labelNames: ['frontend'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5],
    registers: [registry],
  });
  const whitelistDomains = new Gauge({ name: `${p}whitelist_domains`, help: 'Distinct domains in the list in force', registers: [registry] });
  const whitelistEntriesRejected = new Gauge({ name: `${p}whitelist_entries_rejected`, help: 'Entries skipped as invalid in the list in force', registers: [registry] });
  const whitelistGeneratedTimestamp = new Gauge({ name: `${p}whitelist_generated_timestamp_seconds`, help: 'DateDeGeneration of the list in force (unix seconds)', registers: [registry] });
  const whitelistLastSuccessTimestamp = new Gauge({ name: `${p}whitelist_last_success_timestamp_seconds`, help: 'When a list was last loaded or confirmed unchanged (unix seconds)', registers: [registry] });
  const whitelistLastFailureTimestamp = new Gauge({ name: `${p}whitelist_last_failure_timestamp_seconds`, help: 'When a list load last failed (unix seconds, 0 if never)', registers: [registry] });
  const whitelistLoadFailures = new Counter({ name: `${p}whitelist_load_failures_total`, help: 'List loads that failed, by reason id', labelNames: ['reason'] as const, registers: [registry] });
  const whitelistLoadDuration = new Histogram({ name: `${p}whitelist_load_duration_seconds`, help: 'Wall time of a list load (fetch, verify, parse, index)', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60], registers: [registry] });
  const whitelistUsable = new Gauge({ name: `${p}whitelist_usable`, help: '1 while a usable list is in force, else 0', registers: [registry] });
  const connectionsActive = new Gauge({ name: `${p}connections_active`, help: 'Open client connections by frontend', labelNames: ['frontend'] as const, registers: [registry] });
  const connectionsRejected = new Counter({ name: `${p}connections_rejected_total`, help: 'Connections refused because the connection limit was reached', labelNames: ['frontend'] as const, registers: [registry] });
  const protocolErrors = new Counter({ name: `${p}protocol_errors_total`, help: 'Connections closed for a protocol error, by frontend and kind', labelNames: ['frontend', 'kind'] as const, registers: [registry] });

  const logLinesDropped = new Counter({ name: `${p}log_lines_dropped_total`, help: 'Log writes dropped because the output stayed slower than the log rate (buffer full)', registers: [registry] });

  const misplacedChecks = new Counter({
    name: `${p}misplaced_checks_total`,
    help: 'Policy requests at a stage that cannot be decided (CONNECT, EHLO/HELO, VRFY, ETRN, other), answered DUNNO',
    labelNames: ['stage'] as const,
    registers: [registry],
  });
  for (const stage of UNDECIDED_STAGES) misplacedChecks.inc({ stage } satisfies { stage: UndecidedStage }, 0);

  for (const frontend of ['policy', 'milter'] as const) {
    connectionsActive.set({ frontend }, 0);
  }
  // Every (frontend, reason) series exists from the start at 0, so that increase() sees the first
  // tempfail or refusal (a series born at 1 shows no increase) and dashboards show 0, not "no data".
  for (const frontend of ['policy', 'milter'] as const) {
    for (const reason of REASON_IDS) decisions.inc({ frontend, result: REASONS[reason].result, reason }, 0);
  }
  whitelistUsable.set(0);
  whitelistLastFailureTimestamp.set(0);

  const decisionChildren = new Map<string, Counter.Internal>();
  const durationChildren = {
    policy: decisionDuration.labels({ frontend: 'policy' }),
    milter: decisionDuration.labels({ frontend: 'milter' }),
  };
  return {
    registry,
    decisions,
    decisionDuration,
    whitelistDomains,
    whitelistEntriesRejected,
    whitelistGeneratedTimestamp,
    whitelistLastSuccessTimestamp,
    whitelistLastFailureTimestamp,
    whitelistLoadFailures,
    whitelistLoadDuration,
    whitelistUsable,
    connectionsActive,
    connectionsRejected,
    protocolErrors,
    logLinesDropped,
    misplacedChecks,
    countDecision(frontend, result, reason, seconds) {
      const key = `${frontend}|${reason}`;
      let child = decisionChildren.get(key);
      if (child === undefined) {
        child = decisions.labels({ frontend, result, reason });
        decisionChildren.set(key, child);
      }
      child.inc();
      durationChildren[frontend].observe(seconds);
    },
  };
}
