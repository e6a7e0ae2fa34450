/**
 * Every metric of the daemon, defined once. Labels are bounded sets (frontend, result, reason id,
 * error kind): never a domain, a DN or an address.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { REASONS, REASON_IDS, type ReasonId, type Result } from '../trust/reasons.js';
import { OPERATOR_RESULTS } from '../trust/operators.js';
import { STORE_OPS } from '../store/store.js';
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
  /** Domains added, removed and moved onto other certificates by the lists put in force (the change journal). */
  readonly whitelistChanges: Counter<'kind'>;
  /** Pre-bound children: the hot path does no label lookup. */
  countDecision(frontend: Frontend, result: Result, reason: ReasonId, seconds: number): void;
  /**
   * Where operator_transactions_total reads its values at each scrape: the messages counted so far
   * by (operator, result), totals that only grow while an operator stays listed.
   */
  readOperatorCounts(source: () => Iterable<readonly [string, string, number]>): void;
  /** Operators that left the list in force: their series go, so label values stay bounded by the list. */
  forgetOperators(operators: readonly string[]): void;
  /** A listed identity presented a certificate not seen before for it (trust/peers.ts). */
  readonly peerCertificateChanges: Counter<'frontend'>;
  /** Fingerprint values from the MTA that were not digests (ignored). */
  readonly peerFingerprintsMalformed: Counter<'frontend'>;
  /** build_info{version,node} = 1: which code answers (set once at start). */
  readonly buildInfo: Gauge<'version' | 'node'>;
  /** When the config file was last read and applied (start-up, then each SIGHUP that read it). */
  readonly configLastReloadTimestamp: Gauge;
  /** SIGHUP re-reads whose file was unreadable or invalid: the running settings stayed. */
  readonly configReloadFailures: Counter;
  /** Store calls that failed or passed --store-timeout (the instance went on alone), by operation. */
  readonly storeErrors: Counter<'op'>;
  /** Instances registered in the store, by the sha256 of the list each enforces (bounded: src/store/fleet.ts). */
  setFleetLists(lists: Readonly<Record<string, number>>): void;
  /** Which --whitelist source the list in force came from: 1 = the first, 2 = the next...; 0 = the state dir's copy. */
  readonly whitelistSourcePosition: Gauge;
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

/**
 * decisions_total and decision_duration_seconds. countDecision adds to plain per-(frontend, reason)
 * tallies, handed to prom-client when the counter is read (its collect): a prom-client child still
 * hashes and validates its labels at every inc(), a cost paid per decision otherwise.
 */
function createDecisionMetrics(registry: Registry): Pick<Metrics, 'decisions' | 'decisionDuration' | 'countDecision'> {
  const tallies = { policy: new Map<ReasonId, number>(), milter: new Map<ReasonId, number>() };
  const decisions: Counter<'frontend' | 'result' | 'reason'> = new Counter({
    name: `${METRIC_PREFIX}decisions_total`,
    help: 'Decisions answered, by frontend, result and reason id',
    labelNames: ['frontend', 'result', 'reason'] as const,
    registers: [registry],
    collect() {
      for (const frontend of ['policy', 'milter'] as const) {
        const tally = tallies[frontend];
        for (const [reason, n] of tally) if (n > 0) decisions.inc({ frontend, result: REASONS[reason].result, reason }, n);
        tally.clear();
      }
    },
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
  const durationChildren = {
    policy: decisionDuration.labels({ frontend: 'policy' }),
    milter: decisionDuration.labels({ frontend: 'milter' }),
  };
  return {
    decisions,
    decisionDuration,
    countDecision(frontend, _result, reason, seconds) {
      const tally = tallies[frontend];
      tally.set(reason, (tally.get(reason) ?? 0) + 1);
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

/** peer_certificate_changes_total and peer_fingerprints_malformed_total, both frontends born at 0. */
function createPeerMetrics(registry: Registry): Pick<Metrics, 'peerCertificateChanges' | 'peerFingerprintsMalformed'> {
  const peerCertificateChanges = new Counter({
    name: `${METRIC_PREFIX}peer_certificate_changes_total`,
    help: 'A listed certificate identity presented a certificate (fingerprint) not seen before for it: a renewal, or another holder of that name',
    labelNames: ['frontend'] as const,
    registers: [registry],
  });
  const peerFingerprintsMalformed = new Counter({
    name: `${METRIC_PREFIX}peer_fingerprints_malformed_total`,
    help: 'Certificate fingerprint values from the MTA that were not a digest (ignored)',
    labelNames: ['frontend'] as const,
    registers: [registry],
  });
  for (const frontend of ['policy', 'milter'] as const satisfies readonly Frontend[]) {
    peerCertificateChanges.inc({ frontend }, 0);
    peerFingerprintsMalformed.inc({ frontend }, 0);
  }
  return { peerCertificateChanges, peerFingerprintsMalformed };
}

/** The kinds of whitelist/changes.ts (observe/ does not import whitelist/: folders depend one way). */
const WHITELIST_CHANGE_KINDS = ['added', 'removed', 'rebound'] as const;

/** whitelist_changes_total, every kind born at 0. */
function createWhitelistChanges(registry: Registry): Metrics['whitelistChanges'] {
  const whitelistChanges = new Counter({
    name: `${METRIC_PREFIX}whitelist_changes_total`,
    help: 'Domains changed by the lists put in force, by kind: added, removed, rebound (moved onto other certificates)',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  for (const kind of WHITELIST_CHANGE_KINDS) whitelistChanges.inc({ kind }, 0);
  return whitelistChanges;
}

/** What runs and how it was configured: build_info, the config file's last reload and its failures. */
function createOperationsMetrics(
  registry: Registry,
): Pick<Metrics, 'buildInfo' | 'configLastReloadTimestamp' | 'configReloadFailures'> {
  const buildInfo = new Gauge({
    name: `${METRIC_PREFIX}build_info`,
    help: 'Always 1; the labels say which version of the daemon and of Node.js is running',
    labelNames: ['version', 'node'] as const,
    registers: [registry],
  });
  const configLastReloadTimestamp = new Gauge({
    name: `${METRIC_PREFIX}config_last_reload_timestamp_seconds`,
    help: 'When the configuration was last read and applied (start-up, then each SIGHUP that read it)',
    registers: [registry],
  });
  const configReloadFailures = new Counter({
    name: `${METRIC_PREFIX}config_reload_failures_total`,
    help: 'SIGHUP re-reads of the config file that failed (unreadable or invalid file): the running settings stayed',
    registers: [registry],
  });
  return { buildInfo, configLastReloadTimestamp, configReloadFailures };
}

/** store_errors_total (every op born at 0) and fleet_instances, replaced whole at each read of the fleet. */
function createStoreMetrics(registry: Registry): Pick<Metrics, 'storeErrors' | 'setFleetLists' | 'whitelistSourcePosition'> {
  const storeErrors = new Counter({
    name: `${METRIC_PREFIX}store_errors_total`,
    help: 'Calls to the shared store (--store) that failed or passed --store-timeout, by operation; decisions went on with this instance alone',
    labelNames: ['op'] as const,
    registers: [registry],
  });
  for (const op of STORE_OPS) storeErrors.inc({ op }, 0);
  const fleetInstances = new Gauge({
    name: `${METRIC_PREFIX}fleet_instances`,
    help: 'Instances sharing the store, by the sha256 of the list each enforces (none: no list; other: beyond the 8 biggest groups)',
    labelNames: ['list_sha256'] as const,
    registers: [registry],
  });
  const whitelistSourcePosition = new Gauge({
    name: `${METRIC_PREFIX}whitelist_source_position`,
    help: 'Which --whitelist source the list in force came from: 1 = the first, 2 = the next (failover)...; 0 = the stored copy',
    registers: [registry],
  });
  return {
    storeErrors,
    whitelistSourcePosition,
    setFleetLists(lists) {
      fleetInstances.reset();
      for (const [sha, count] of Object.entries(lists)) fleetInstances.set({ list_sha256: sha }, count);
    },
  };
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
  const peers = createPeerMetrics(registry);
  const whitelistChanges = createWhitelistChanges(registry);
  const operations = createOperationsMetrics(registry);
  const store = createStoreMetrics(registry);
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
    whitelistChanges,
    countDecision,
    ...peers,
    ...operations,
    ...store,
  };
}
