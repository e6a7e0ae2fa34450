/**
 * Every metric of the daemon, defined once. Labels are bounded sets (frontend, result, reason id,
 * error kind): never a domain, a DN or an address.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { REASONS, REASON_IDS, type ReasonId, type Result } from '../trust/reasons.js';
import { OPERATOR_RESULTS } from '../trust/operators.js';
import { UNDECIDED_STAGES, type Frontend, type UndecidedStage } from '../trust/facts.js';

export const METRIC_PREFIX = 'mssante_policyd_';

const SOCKETMAP_MAP_LABELS = [
  'mssante-domain',
  'mssante-tls-policy',
  'mssante-transport',
  'mssante-recipient-access',
  'unknown',
] as const;
const SOCKETMAP_RESULT_LABELS = ['ok', 'notfound', 'temp', 'perm'] as const;
export type SocketmapMapLabel = (typeof SOCKETMAP_MAP_LABELS)[number];
export type SocketmapResultLabel = (typeof SOCKETMAP_RESULT_LABELS)[number];

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
  readonly whitelistSignerNotAfter: Gauge;
  readonly connectionsActive: Gauge<'frontend'>;
  readonly connectionsRejected: Counter<'frontend' | 'reason'>;
  readonly connectionsRejectedMemory: Counter<'frontend'>;
  readonly protocolErrors: Counter<'frontend' | 'kind'>;
  readonly logLinesDropped: Counter;
  readonly socketmapLookups: Counter<'map' | 'result'>;
  countSocketmapLookup(map: SocketmapMapLabel, result: SocketmapResultLabel): void;
  readonly operatorTransactions: Counter<'operator' | 'result'>;
  /** Policy requests asked at a stage that cannot be decided (a check in the wrong restriction list). */
  readonly misplacedChecks: Counter<'stage'>;
  /** Pre-bound children: the hot path does no label lookup. */
  countDecision(frontend: Frontend, result: Result, reason: ReasonId, seconds: number): void;
  /**
   * Where operator_transactions_total reads its values at each scrape: the messages counted so far
   * by (operator, result), totals that only grow while an operator stays listed.
   */
  readOperatorCounts(source: () => Iterable<readonly [string, string, number]>): void;
  /** Operators that left the list in force: their series go, so label values stay bounded by the list. */
  forgetOperators(operators: readonly string[]): void;
}

function createRegistry(defaultMetrics: boolean): Registry {
  const registry = new Registry();
  if (defaultMetrics) {
    collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX, eventLoopMonitoringPrecision: 10 });
    // Gauges named *_total break `promtool check metrics`; each is the sum of its by-type twin.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      registry.removeSingleMetric(METRIC_PREFIX + name);
    }
  }
  return registry;
}

/** socketmap_lookups_total with every (map, result) child pre-bound (and born at 0). */
function createSocketmapLookups(registry: Registry): Pick<Metrics, 'socketmapLookups' | 'countSocketmapLookup'> {
  const socketmapLookups = new Counter({
    name: `${METRIC_PREFIX}socketmap_lookups_total`,
    help: 'Socketmap table lookups (sending side), by map and answer (ok, notfound, temp, perm)',
    labelNames: ['map', 'result'] as const,
    registers: [registry],
  });
  const socketmapChildren = new Map<string, Counter.Internal>();
  for (const map of SOCKETMAP_MAP_LABELS) {
    for (const result of SOCKETMAP_RESULT_LABELS) {
      const child = socketmapLookups.labels({ map, result });
      child.inc(0);
      socketmapChildren.set(`${map}|${result}`, child);
    }
  }
  return {
    socketmapLookups,
    countSocketmapLookup(map, result) {
      socketmapChildren.get(`${map}|${result}`)?.inc();
    },
  };
}

/** operator_transactions_total: read from the ledger's counts at each scrape; series of operators gone are removed. */
function createOperatorTransactions(
  registry: Registry,
): Pick<Metrics, 'operatorTransactions' | 'readOperatorCounts' | 'forgetOperators'> {
  let operatorSource: (() => Iterable<readonly [string, string, number]>) | null = null;
  /** `operator\nresult` → the total already added to the counter. */
  const operatorReported = new Map<string, number>();
  const operatorTransactions = new Counter({
    name: `${METRIC_PREFIX}operator_transactions_total`,
    help: 'Messages by sending operator (listed certificate identity, or unlisted) and result (pass, reject, tempfail, throttled), counted once per message',
    labelNames: ['operator', 'result'] as const,
    registers: [registry],
    collect(this: Counter<'operator' | 'result'>) {
      if (operatorSource === null) return;
      for (const [operator, result, count] of operatorSource()) {
        const key = `${operator}\n${result}`;
        const before = operatorReported.get(key) ?? 0;
        if (count > before) {
          this.inc({ operator, result }, count - before);
          operatorReported.set(key, count);
        }
      }
    },
  });
  return {
    operatorTransactions,
    readOperatorCounts(source) {
      operatorSource = source;
    },
    forgetOperators(operators) {
      for (const operator of operators) {
        for (const result of OPERATOR_RESULTS) {
          operatorTransactions.remove({ operator, result });
          operatorReported.delete(`${operator}\n${result}`);
        }
      }
    },
  };
}

/** decisions_total and decision_duration_seconds, with countDecision's pre-bound children. */
function createDecisionMetrics(registry: Registry): Pick<Metrics, 'decisions' | 'decisionDuration' | 'countDecision'> {
  const decisions = new Counter({
    name: `${METRIC_PREFIX}decisions_total`,
    help: 'Decisions answered, by frontend, result and reason id',
    labelNames: ['frontend', 'result', 'reason'] as const,
    registers: [registry],
  });
  const decisionDuration = new Histogram({
    name: `${METRIC_PREFIX}decision_duration_seconds`,
    help: 'Time from a complete request to its answer being written',
    labelNames: ['frontend'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5],
    registers: [registry],
  });
  // Every (frontend, reason) series exists from the start at 0, so that increase() sees the first
  // tempfail or refusal (a series born at 1 shows no increase) and dashboards show 0, not "no data".
  for (const frontend of ['policy', 'milter'] as const) {
    for (const reason of REASON_IDS) decisions.inc({ frontend, result: REASONS[reason].result, reason }, 0);
  }
  const decisionChildren = new Map<string, Counter.Internal>();
  const durationChildren = {
    policy: decisionDuration.labels({ frontend: 'policy' }),
    milter: decisionDuration.labels({ frontend: 'milter' }),
  };
  return {
    decisions,
    decisionDuration,
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

type WhitelistMetrics = Pick<
  Metrics,
  | 'whitelistDomains'
  | 'whitelistEntriesRejected'
  | 'whitelistGeneratedTimestamp'
  | 'whitelistLastSuccessTimestamp'
  | 'whitelistLastFailureTimestamp'
  | 'whitelistLoadFailures'
  | 'whitelistLoadDuration'
  | 'whitelistUsable'
  | 'whitelistSignerNotAfter'
>;

/** The list in force and its loads: size, dates, failures, signer expiry. */
function createWhitelistMetrics(registry: Registry): WhitelistMetrics {
  const p = METRIC_PREFIX;
  const whitelistDomains = new Gauge({
    name: `${p}whitelist_domains`,
    help: 'Distinct domains in the list in force',
    registers: [registry],
  });
  const whitelistEntriesRejected = new Gauge({
    name: `${p}whitelist_entries_rejected`,
    help: 'Entries skipped as invalid in the list in force',
    registers: [registry],
  });
  const whitelistGeneratedTimestamp = new Gauge({
    name: `${p}whitelist_generated_timestamp_seconds`,
    help: 'DateDeGeneration of the list in force (unix seconds)',
    registers: [registry],
  });
  const whitelistLastSuccessTimestamp = new Gauge({
    name: `${p}whitelist_last_success_timestamp_seconds`,
    help: 'When a list was last loaded or confirmed unchanged (unix seconds)',
    registers: [registry],
  });
  const whitelistLastFailureTimestamp = new Gauge({
    name: `${p}whitelist_last_failure_timestamp_seconds`,
    help: 'When a list load last failed (unix seconds, 0 if never)',
    registers: [registry],
  });
  const whitelistLoadFailures = new Counter({
    name: `${p}whitelist_load_failures_total`,
    help: 'List loads that failed, by reason id',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const whitelistLoadDuration = new Histogram({
    name: `${p}whitelist_load_duration_seconds`,
    help: 'Wall time of a list load (fetch, verify, parse, index)',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [registry],
  });
  const whitelistUsable = new Gauge({
    name: `${p}whitelist_usable`,
    help: '1 while a usable list is in force, else 0',
    registers: [registry],
  });
  const whitelistSignerNotAfter = new Gauge({
    name: `${p}whitelist_signer_not_after_timestamp_seconds`,
    help: 'notAfter of the certificate that signed the list in force (unix seconds; 0 while no signed list is in force)',
    registers: [registry],
  });
  whitelistUsable.set(0);
  whitelistSignerNotAfter.set(0);
  whitelistLastFailureTimestamp.set(0);
  return {
    whitelistDomains,
    whitelistEntriesRejected,
    whitelistGeneratedTimestamp,
    whitelistLastSuccessTimestamp,
    whitelistLastFailureTimestamp,
    whitelistLoadFailures,
    whitelistLoadDuration,
    whitelistUsable,
    whitelistSignerNotAfter,
  };
}

/** Client connections of the MTA frontends: open, refused (limit, memory), closed on a protocol error. */
function createConnectionMetrics(
  registry: Registry,
): Pick<Metrics, 'connectionsActive' | 'connectionsRejected' | 'connectionsRejectedMemory' | 'protocolErrors'> {
  const p = METRIC_PREFIX;
  const connectionsActive = new Gauge({
    name: `${p}connections_active`,
    help: 'Open client connections by frontend',
    labelNames: ['frontend'] as const,
    registers: [registry],
  });
  const connectionsRejected = new Counter({
    name: `${p}connections_rejected_total`,
    help: 'Connections refused by reason: limit (--max-connections reached), peer_user (a local user not in --allowed-peer-users)',
    labelNames: ['frontend', 'reason'] as const,
    registers: [registry],
  });
  const connectionsRejectedMemory = new Counter({
    name: `${p}connections_rejected_memory_total`,
    help: 'Connections refused because the heap was above --heap-watermark',
    labelNames: ['frontend'] as const,
    registers: [registry],
  });
  const protocolErrors = new Counter({
    name: `${p}protocol_errors_total`,
    help: 'Protocol errors by frontend and kind: the connection is closed, except for macro_stage_ignored (the macros are dropped)',
    labelNames: ['frontend', 'kind'] as const,
    registers: [registry],
  });
  for (const frontend of ['policy', 'milter', 'socketmap'] as const) {
    connectionsActive.set({ frontend }, 0);
  }
  return { connectionsActive, connectionsRejected, connectionsRejectedMemory, protocolErrors };
}

/** misplaced_checks_total, every stage born at 0. */
function createMisplacedChecks(registry: Registry): Metrics['misplacedChecks'] {
  const misplacedChecks = new Counter({
    name: `${METRIC_PREFIX}misplaced_checks_total`,
    help: 'Policy requests at a stage that cannot be decided (CONNECT, EHLO/HELO, VRFY, ETRN, other), answered DUNNO',
    labelNames: ['stage'] as const,
    registers: [registry],
  });
  for (const stage of UNDECIDED_STAGES) misplacedChecks.inc({ stage } satisfies { stage: UndecidedStage }, 0);
  return misplacedChecks;
}

/** Registration order is the exposition order: decisions, list, connections, logs, socketmap, operators, stages. */
export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = createRegistry(options.defaultMetrics !== false);
  const { decisions, decisionDuration, countDecision } = createDecisionMetrics(registry);
  const whitelist = createWhitelistMetrics(registry);
  const connections = createConnectionMetrics(registry);
  const logLinesDropped = new Counter({
    name: `${METRIC_PREFIX}log_lines_dropped_total`,
    help: 'Log writes dropped because the output stayed slower than the log rate (buffer full)',
    registers: [registry],
  });
  const { socketmapLookups, countSocketmapLookup } = createSocketmapLookups(registry);
  const { operatorTransactions, readOperatorCounts, forgetOperators } = createOperatorTransactions(registry);
  const misplacedChecks = createMisplacedChecks(registry);
  return {
    registry,
    decisions,
    decisionDuration,
    ...whitelist,
    ...connections,
    logLinesDropped,
    socketmapLookups,
    countSocketmapLookup,
    operatorTransactions,
    readOperatorCounts,
    forgetOperators,
    misplacedChecks,
    countDecision,
  };
}
