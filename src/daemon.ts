/**
 * `serve`: wires the parts together — list life cycle, decision service, frontends, HTTP — and owns
 * the process life cycle (SIGHUP reloads, SIGTERM drains). No protocol and no rule lives here.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { buildIdentity } from './build-info.js';
import { acceptCommand } from './accept-command.js';
import type { ListenerFrontend } from './trust/facts.js';
import type { Config } from './config.js';
import { ConfigReloader, type ConfigSources } from './config-reload.js';
import { DecisionService } from './decision-service.js';
import type { DecisionPolicy } from './trust/decide.js';
import { policyDryRun } from './frontends/policy/frontend.js';
import { startFrontend } from './frontends/spec.js';
import { ACTIVATION_NAMES, FRONTENDS, frontendListen, frontendValues } from './frontend-registry.js';
import { startHttpServer, type DomainLookup, type WhitelistStatus } from './http/server.js';
import { resolveUsers } from './net/peer-user.js';
import { createMetrics, type Metrics } from './observe/metrics.js';
import { LogLevelControl } from './observe/log-level.js';
import { createNotifier, type Notifier } from './observe/sd-notify.js';
import { forgetActivationEnv, inheritedSockets, unservedSockets, type InheritedSockets } from './net/socket-activation.js';
import { effectiveLogFormat, journalPrefix, type LogFormat } from './observe/journal.js';
import { DecisionTracer } from './observe/trace.js';
import { TraceFileSink } from './observe/trace-sink.js';
import { normaliseCn } from './trust/dn.js';
import { normaliseDomain } from './trust/domain.js';
import { OperatorLedger, type OperatorBucketFactory } from './trust/operators.js';
import type { PeerLedger } from './trust/peers.js';
import { createPeerLedger } from './peers-state.js';
import type { DomainHistory } from './whitelist/change-journal.js';
import { openStore, type OpenedStore } from './store/open.js';
import type { InstanceState } from './store/fleet.js';
import { ListLifecycle } from './whitelist/lifecycle.js';
import { proxyFromEnv, redactProxy } from './whitelist/proxy.js';
import { DEFAULT_SOURCE_OPTIONS } from './whitelist/source.js';
import { createSources } from './whitelist/sources.js';
import { hasSignerTrust, loadSignerTrust, type SignerTrustConfig } from './whitelist/signature.js';
import { ensureStateDir } from './whitelist/state.js';
import { assertStateDirPrivate } from './whitelist/state-access.js';
import { redactLocation } from './whitelist/shown-location.js';

export interface Logging {
  readonly logger: Logger;
  /** Raw line writer on the same asynchronous destination, for the hand-serialised trace lines. */
  readonly writeLine: (line: string) => void;
  /** Sets the level of the logger and of every child made from it (SIGHUP, live `log-level`). */
  readonly setLevel?: (level: string) => void;
}

/** Log lines buffered while stdout is slow (journald, a full pipe): bounded, drops counted. */
export const LOG_BUFFER_MAX_BYTES = 32 * 1024 * 1024;

export function createLogging(level: string, onDrop: () => void = () => undefined, format: LogFormat = 'json'): Logging {
  // Asynchronous writes: a trace line per decision must not block answers; flushed on exit.
  const destination = pino.destination({ dest: 1, sync: false, maxLength: LOG_BUFFER_MAX_BYTES });
  destination.on('drop', onDrop);
  // journal: each line starts with its syslog priority <N>, which journald strips and files as PRIORITY.
  const journal = effectiveLogFormat(format, process.env) === 'journal';
  const writeLine = journal
    ? (line: string): void => void destination.write(journalPrefix(line) + line)
    : (line: string): void => void destination.write(line);
  const stream = journal ? { write: writeLine, flush: (cb: (err?: Error) => void) => destination.flush(cb) } : destination;
  const levels = new LogLevelControl();
  const logger = pino(
    {
      level,
      onChild: levels.onChild,
      base: { service: 'mssante-policyd' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
  return { logger, writeLine, setLevel: (next) => levels.set(logger, next) };
}

function pseudonymizeKey(config: Config): Buffer | null {
  if (!config.logPseudonymize) return null;
  const path = join(config.stateDir, 'pseudonymize.key');
  let key: Buffer | null = null;
  try {
    key = Buffer.from(readFileSync(path, 'utf8').trim(), 'hex');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  // An empty or damaged key would make pseudonyms a plain hash anyone can recompute: make a new one.
  if (key === null || key.length < 16) {
    key = randomBytes(32);
    writeFileSync(path, `${key.toString('hex')}\n`, { mode: 0o600 });
  }
  return key;
}

/** The --trace-file sink: drops counted like the stdout log buffer's; write errors logged once a minute. */
function openTraceSink(path: string, metrics: Metrics, logger: Logger): TraceFileSink {
  let lastErrorLog = 0;
  return new TraceFileSink({
    path,
    onDrop: (lines) => metrics.logLinesDropped.inc(lines),
    onError: (error) => {
      const now = Date.now();
      if (now - lastErrorLog < 60_000) return;
      lastErrorLog = now;
      logger.error({ event: 'trace_file_error', trace_file: path, err: error.message }, 'cannot write the trace file');
    },
  });
}

export interface RunningDaemon {
  readonly lifecycle: ListLifecycle;
  readonly metrics: Metrics;
  /** Each listener's address (null: off): every frontend of frontend-registry.ts, and http. */
  readonly addresses: Record<ListenerFrontend | 'http', string | null>;
  /** SIGUSR1: reopen --trace-file at its path (after logrotate renamed it); no-op without it. */
  reopenTrace(): void;
  /** Writes the buffered trace lines synchronously and closes --trace-file (on a fatal error). */
  closeTraceSync(): void;
  shutdown(reason: string): Promise<void>;
  /** SIGHUP re-read the config: its live settings apply to the next decision (config-reload.ts). */
  applyLiveSettings(config: Config): void;
}

/** What must hold before anything starts: signer files that load, a private state dir, inherited sockets that are ours. */
function checkStartPrerequisites(config: Config): { trust: SignerTrustConfig; inherited: InheritedSockets } {
  // An unreadable or invalid signer file is a start-up error, not a 451 for every mail later.
  const trust = {
    signer: config.signer,
    signerCa: config.signerCa,
    signerCn: config.signerCn,
    signerSubject: config.signerSubject,
  };
  if (hasSignerTrust(trust)) loadSignerTrust(trust);
  ensureStateDir(config.stateDir);
  assertStateDirPrivate(config.stateDir);
  // Socket activation: read once, then hidden from the processes we spawn.
  const inherited = inheritedSockets(process.env, process.pid, ACTIVATION_NAMES);
  forgetActivationEnv(process.env);
  checkInheritedSockets(inherited, config);
  return { trust, inherited };
}

export async function startDaemon(config: Config, logging: Logging): Promise<RunningDaemon> {
  const { logger } = logging;
  const { trust, inherited } = checkStartPrerequisites(config);
  const metrics = createMetrics();
  const build = buildIdentity();
  metrics.buildInfo.set({ version: build.version, node: build.node }, 1);
  const traceSink = config.traceFile === null ? null : openTraceSink(config.traceFile, metrics, logger);
  const { lifecycle, sourceDescription } = createListLifecycle(config, trust, metrics, logger);
  const shared = await openStore(config, process.env, metrics, logger.child({ component: 'store' }), build.version, () =>
    instanceState(lifecycle),
  );
  // policy and operators are replaced whole when SIGHUP changes a live setting: read at each decision.
  let policy = decisionPolicy(config);
  let operators = createOperatorLedger(config, metrics, logger.child({ component: 'operators' }), shared.buckets);
  lifecycle.onSwap((index) => operators.setList(index));
  // The fleet learns of a new list at once, not at the next registration (after the swap has finished: a microtask later).
  lifecycle.onSwap(() => void Promise.resolve().then(() => shared.fleet.tick()));
  const peers = createPeerLedger(config.stateDir, metrics, logger.child({ component: 'peers' }), Date.now, shared.peerHistory);
  lifecycle.onSwap((index) => peers.ledger.setList(index));
  const service = new DecisionService({
    currentIndex: () => lifecycle.current(),
    get policy() {
      return policy;
    },
    metrics,
    tracer: new DecisionTracer(logger, pseudonymizeKey(config), traceSink?.write ?? logging.writeLine),
    logger,
    get operators() {
      return operators;
    },
    peers: peers.ledger,
  });

  await lifecycle.start();
  shared.fleet.start();

  const closers: Array<(deadlineMs: number) => Promise<void>> = [];
  const addresses: RunningDaemon['addresses'] = { policy: null, milter: null, socketmap: null, http: null };
  try {
    await startListeners(
      config,
      { lifecycle, service, operators: () => operators, peers: peers.ledger, metrics, logger, inherited, build, shared },
      addresses,
      closers,
    );
  } catch (error) {
    await Promise.allSettled(closers.map((close) => close(0)));
    await lifecycle.stop();
    await peers.close();
    await shared.close();
    traceSink?.closeSync();
    throw error;
  }
  logger.info(
    {
      event: 'listening',
      ...addresses,
      inherited: [...inherited.keys()],
      whitelist: sourceDescription,
      state_dir: config.stateDir,
      version: build.version,
    },
    'mssante-policyd ready to answer',
  );
  // Listening, and the list decided (loaded from the state dir, or known to be absent): ready.
  const notifier: Notifier = createNotifier(process.env, logger.child({ component: 'sd_notify' }));
  void notifier.notify(
    'READY=1',
    `STATUS=answering (${lifecycle.current() === null ? 'no list in force yet' : 'list in force'})`,
  );

  let stopping: Promise<void> | null = null;
  let running = config;
  return {
    lifecycle,
    metrics,
    addresses,
    reopenTrace(): void {
      if (traceSink === null) return;
      logger.info({ event: 'trace_reopen', trace_file: traceSink.path }, 'SIGUSR1: reopening the trace file');
      traceSink.reopen();
    },
    closeTraceSync(): void {
      traceSink?.closeSync();
    },
    shutdown(reason: string): Promise<void> {
      stopping ??= (async () => {
        logger.info({ event: 'shutdown', reason, grace_s: config.shutdownGraceSeconds }, 'stopping: finishing answers in flight');
        void notifier.notify('STOPPING=1', 'STATUS=stopping: finishing answers in flight');
        await Promise.allSettled(closers.map((close) => close(config.shutdownGraceSeconds * 1000)));
        await lifecycle.stop();
        await peers.close();
        await shared.close();
        if (traceSink !== null) {
          await traceSink.drain();
          traceSink.closeSync();
        }
        logger.info({ event: 'stopped' }, 'stopped');
      })();
      return stopping;
    },
    applyLiveSettings(next: Config): void {
      policy = decisionPolicy(next);
      if (JSON.stringify(operatorSettings(next)) !== JSON.stringify(operatorSettings(running))) {
        // A new ledger counts from zero: the old series go (a counter reset, which rate() handles).
        metrics.forgetOperators([...new Set([...operators.counts()].map(([operator]) => operator))]);
        operators = createOperatorLedger(next, metrics, logger.child({ component: 'operators' }), shared.buckets);
        operators.setList(lifecycle.current());
      }
      logging.setLevel?.(next.logLevel);
      running = next;
    },
  };
}

function decisionPolicy(config: Config): DecisionPolicy {
  return { tlsProfile: config.tlsProfile, trustedIssuerCns: new Set(config.trustedIssuerCns.map(normaliseCn)) };
}

/** An inherited socket whose listener is off would queue the MTA's connections forever: refuse to start. */
function checkInheritedSockets(inherited: InheritedSockets, config: Config): void {
  const enabled: Record<string, boolean> = { http: config.httpListen !== null };
  for (const spec of FRONTENDS) enabled[spec.name] = frontendListen(spec, config.settings) !== null;
  const unserved = unservedSockets(inherited, enabled);
  if (unserved.length > 0) {
    throw new Error(
      `systemd passed socket(s) named ${unserved.join(', ')} but the matching --${unserved[0]}-listen is off: turn it on or remove the socket from the .socket unit`,
    );
  }
}

interface ListenerDeps {
  readonly lifecycle: ListLifecycle;
  readonly service: DecisionService;
  /** The ledger in force (SIGHUP may replace it). */
  readonly operators: () => OperatorLedger;
  readonly peers: PeerLedger;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Listening sockets inherited from systemd, by listener name: served instead of binding. */
  readonly inherited: InheritedSockets;
  readonly build: ReturnType<typeof buildIdentity>;
  readonly shared: OpenedStore;
}

/** Starts the configured listeners, recording each address and closer as it comes up (the caller closes them on a failure). */
async function startListeners(
  config: Config,
  deps: ListenerDeps,
  addresses: RunningDaemon['addresses'],
  closers: Array<(deadlineMs: number) => Promise<void>>,
): Promise<void> {
  const { lifecycle, service, operators, peers, metrics, logger, inherited, shared } = deps;
  // What every listener shares: admission, the socket file's access, who may connect.
  const allowedPeerUsers = await resolveUsers(config.allowedPeerUsers);
  const unixSocket = { unixMode: config.socketMode, unixOwner: config.socketOwner, unixGroup: config.socketGroup };
  for (const spec of FRONTENDS) {
    const listen = frontendListen(spec, config.settings);
    if (listen === null) continue;
    const frontend = await startFrontend(
      spec,
      listen,
      frontendValues(spec, config.settings),
      {
        maxConnections: config.maxConnections,
        heapWatermarkPercent: config.heapWatermarkPercent,
        // On the socket systemd passed for that listener when there is one.
        unixSocket: { ...unixSocket, inheritedFd: inherited.get(spec.name) ?? null },
        allowedPeerUsers,
      },
      { service, currentIndex: () => lifecycle.current(), metrics, logger: logger.child({ component: spec.name }) },
    );
    addresses[spec.name] = frontend.address;
    closers.push((ms) => frontend.close(ms));
  }
  if (config.httpListen !== null) {
    const http = await startHttp(
      config.httpListen,
      config,
      lifecycle,
      service,
      operators,
      metrics,
      logger,
      { inheritedFd: inherited.get('http') ?? null, unixMode: config.socketMode, build: deps.build },
      shared,
      peers,
    );
    addresses.http = http.address;
    closers.push(() => http.close());
  }
}

/** Flushes the asynchronous log destination, then exits (after 2 s at most). */
function exitAfterFlush(logger: Logger, code: number): void {
  const timer = setTimeout(() => process.exit(code), 2000);
  timer.unref();
  logger.flush(() => process.exit(code));
}

/** Runs until SIGTERM/SIGINT; SIGHUP reloads the list at once. */
export async function serve(config: Config, sources: ConfigSources | null = null): Promise<void> {
  let countDrop = (): void => undefined;
  const logging = createLogging(config.logLevel, () => countDrop(), config.logFormat);
  const { logger } = logging;
  // Installed first: without a listener, SIGUSR1 would open Node's inspector (a debugger port).
  let reopenTrace = (): void => undefined;
  process.on('SIGUSR1', () => reopenTrace());
  let daemon: RunningDaemon;
  try {
    daemon = await startDaemon(config, logging);
  } catch (error) {
    logger.fatal({ event: 'start_failed', err: (error as Error).message }, 'cannot start');
    exitAfterFlush(logger, 1);
    return;
  }
  countDrop = () => daemon.metrics.logLinesDropped.inc();
  // SIGHUP also re-reads the config file, when serve was started with one (config-reload.ts).
  const reloader = sources === null ? null : new ConfigReloader(sources, config, daemon.metrics, logger);
  process.on('SIGHUP', () => {
    logger.info({ event: 'sighup' }, 'SIGHUP: reloading the whitelist');
    const outcome = reloader?.reload();
    if (outcome?.kind === 'applied') daemon.applyLiveSettings(outcome.config);
    void daemon.lifecycle.reload('sighup');
  });
  reopenTrace = () => daemon.reopenTrace();
  const stop = (signal: string): void => {
    void daemon.shutdown(signal).then(() => exitAfterFlush(logger, 0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // A fault nobody caught: say so, and let the supervisor restart us; Postfix defers meanwhile (451).
  process.on('uncaughtException', (error) => {
    logger.fatal({ event: 'internal_error', err: error }, 'uncaught exception: exiting');
    daemon.closeTraceSync();
    exitAfterFlush(logger, 70);
  });
}

/** The list life cycle: source (file or https, through HTTPS_PROXY), verification settings, guard, state dir. */
function createListLifecycle(
  config: Config,
  trust: SignerTrustConfig,
  metrics: Metrics,
  logger: Logger,
): { lifecycle: ListLifecycle; sourceDescription: string } {
  const proxy = proxyFromEnv(process.env);
  if (proxy.url !== null && /^https:/i.test(config.whitelist)) {
    logger.info(
      { event: 'https_proxy', proxy: redactProxy(proxy.url), no_proxy: proxy.noProxy },
      'the list is downloaded through HTTPS_PROXY (CONNECT) unless NO_PROXY names its host',
    );
  }
  const source = createSources(config.whitelistSources, {
    ...DEFAULT_SOURCE_OPTIONS,
    maxBytes: config.maxListBytes,
    totalTimeoutMs: config.fetchTimeoutSeconds * 1000,
    caFile: config.caFile,
    proxy,
  });
  warnPlainHttpSources(config.whitelistSources, logger);
  const lifecycle = new ListLifecycle(
    {
      sourceDescription: source.description,
      stateDir: config.stateDir,
      trust,
      maxListAgeDays: config.maxListAgeDays,
      allowUnsigned: config.allowUnsigned,
      maxEntries: config.maxListEntries,
      maxShrinkPercent: config.maxShrinkPercent,
      maxRebindPercent: config.maxRebindPercent,
      changeJournalSize: config.changeJournalSize,
      refreshMs: config.refreshSeconds * 1000,
      prepareTimeoutMs: config.prepareTimeoutSeconds * 1000,
      acceptCommand: (file) =>
        acceptCommand({
          file,
          configFile: null,
          trust,
          allowUnsigned: config.allowUnsigned,
          maxListEntries: config.maxListEntries,
          stateDir: config.stateDir,
        }),
      sourceUsed: () => source.lastUsed?.description ?? source.description,
    },
    source,
    metrics,
    logger.child({ component: 'whitelist' }),
  );
  if (config.allowUnsigned) {
    logger.warn(
      { event: 'allow_unsigned' },
      '--allow-unsigned: a list without a valid signature may be put in force (demo and tests only)',
    );
  }
  // Which source the list in force came from: 1 = the first --whitelist, 0 = the state dir's copy.
  lifecycle.onSwap(() =>
    metrics.whitelistSourcePosition.set(lifecycle.state().inForce?.source === 'state' ? 0 : (source.lastUsed?.position ?? 0)),
  );
  return { lifecycle, sourceDescription: source.description };
}

/** http:// is accepted (a peer's mirror on a private network), and said at start-up: the transport authenticates nothing. */
function warnPlainHttpSources(sources: readonly string[], logger: Logger): void {
  for (const source of sources) {
    if (!/^http:\/\//i.test(source)) continue;
    logger.warn(
      { event: 'plain_http_source', source: redactLocation(source) },
      'plain http:// list source: the transport is not authenticated; the signature, the rollback guard and --max-list-age carry the trust (SECURITY.md)',
    );
  }
}

function operatorSettings(config: Config): ConstructorParameters<typeof OperatorLedger>[0] {
  return {
    rate: config.operatorRate,
    burst: config.operatorBurst,
    mode: config.operatorRateMode,
    exempt: config.operatorRateExempt,
  };
}

function createOperatorLedger(
  config: Config,
  metrics: Metrics,
  logger: Logger,
  buckets: OperatorBucketFactory | undefined,
): OperatorLedger {
  const settings = operatorSettings(config);
  if (settings.rate > 0) logger.info({ event: 'operator_rate', ...settings }, 'per-operator throttle on');
  const ledger = new OperatorLedger(
    settings,
    {
      forget: (labels) => metrics.forgetOperators(labels),
      overRate: (operator, messages) =>
        logger.warn(
          { event: 'operator_over_rate', operator, messages, mode: 'observe' },
          'operator over --operator-rate (observe mode: let through)',
        ),
    },
    undefined,
    undefined,
    buckets,
  );
  metrics.readOperatorCounts(() => ledger.counts());
  return ledger;
}

/** The HTTP endpoints: metrics, health and readiness, the list in force, lookups and dry runs. */
function startHttp(
  listen: string,
  config: Config,
  lifecycle: ListLifecycle,
  service: DecisionService,
  operators: () => OperatorLedger,
  metrics: Metrics,
  logger: Logger,
  ops: Pick<Parameters<typeof startHttpServer>[1], 'inheritedFd' | 'unixMode' | 'build'>,
  shared: OpenedStore,
  peers?: PeerLedger,
): ReturnType<typeof startHttpServer> {
  return startHttpServer(listen, {
    ...ops,
    allowedHosts: config.httpAllowedHosts,
    metrics,
    logger: logger.child({ component: 'http' }),
    readiness: () =>
      lifecycle.current() === null ? { ready: false, reasons: ['whitelist_unavailable'] } : { ready: true, reasons: [] },
    whitelistStatus: () => whitelistStatus(lifecycle),
    lookupDomain: (name) => lookupDomain(lifecycle, name),
    dryRun: (input) => policyDryRun((facts) => service.evaluate(facts), input),
    operators: () => operators().snapshot(),
    ...(peers === undefined ? {} : { peers: () => peers.snapshot() }),
    listChanges: () => lifecycle.changes(),
    unlistedDomain: (name) => unlistedDomain(lifecycle, name),
    fleetRoutes: {
      fleet: () => shared.fleet.refresh(),
      signedList: () => {
        const inForce = lifecycle.state().inForce;
        return inForce === null ? null : { bytes: inForce.bytes, sha256: inForce.sha256 };
      },
    },
  });
}

/** What this instance tells the fleet registry about its list. */
function instanceState(lifecycle: ListLifecycle): InstanceState {
  const { inForce, lastSuccessAt } = lifecycle.state();
  return {
    listSha256: inForce?.sha256 ?? null,
    listGeneratedAt: inForce?.index.generatedAt ?? null,
    lastListSuccessAt: lastSuccessAt,
  };
}

function whitelistStatus(lifecycle: ListLifecycle): WhitelistStatus {
  const { inForce, lastSuccessAt, lastFailure } = lifecycle.state();
  return {
    usable: inForce !== null,
    source: inForce?.source ?? null,
    generatedAt: inForce?.index.generatedAt ?? null,
    sha256: inForce?.sha256 ?? null,
    domains: inForce?.index.domainCount ?? 0,
    entries: inForce?.index.entries.length ?? 0,
    skipped:
      inForce === null
        ? []
        : inForce.index.rejected.map((r) => ({ index: r.index, domain: r.domain, reason: r.reason, detail: r.detail })),
    lastSuccessAt,
    lastFailureAt: lastFailure?.at ?? null,
    lastFailureReason: lastFailure?.reason ?? null,
    lastFailureDetail: lastFailure?.detail ?? null,
    signer: inForce?.signer ?? null,
  };
}

function lookupDomain(lifecycle: ListLifecycle, name: string): DomainLookup | null {
  const index = lifecycle.current();
  const domain = normaliseDomain(name);
  if (index === null || domain === null) return null;
  const entries = index.entriesForDomain(domain);
  if (entries.length === 0) return null;
  const history = lifecycle.domainHistory(domain);
  return {
    domain,
    domainUnicode: entries[0]?.domainUnicode ?? domain,
    entries: entries.map((e) => ({
      dn: e.dnRaw,
      dnNormalised: e.dnDisplay,
      cn: e.cn,
      description: e.description,
      updatedAt: e.updatedAt,
    })),
    listSha256: index.sha256,
    binding: [...new Set(entries.map((e) => e.dnDisplay))].sort(),
    since: history.since,
    changes: history.changes,
  };
}

/** A domain not in the list in force: what the change journal says of it (removed when, by which list). */
function unlistedDomain(lifecycle: ListLifecycle, name: string): { domain: string; changes: DomainHistory['changes'] } | null {
  const domain = normaliseDomain(name);
  return domain === null ? null : { domain, changes: lifecycle.domainHistory(domain).changes };
}
