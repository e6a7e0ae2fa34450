/**
 * `serve`: wires the parts together — list life cycle, decision service, frontends, HTTP — and owns
 * the process life cycle (SIGHUP reloads, SIGTERM drains). No protocol and no rule lives here.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import type { Config } from './config.js';
import { DecisionService } from './decision-service.js';
import { policyDryRun, startPolicyFrontend, type PolicyFrontend } from './frontends/policy/frontend.js';
import { startMilterFrontend, type MilterFrontend } from './frontends/milter/frontend.js';
import { SocketmapTables } from './frontends/socketmap/maps.js';
import { startSocketmapServer } from './frontends/socketmap/server.js';
import { startHttpServer, type DomainLookup, type WhitelistStatus } from './http/server.js';
import { resolveUsers } from './net/peer-user.js';
import { createMetrics, type Metrics } from './observe/metrics.js';
import { effectiveLogFormat, journalPrefix, type LogFormat } from './observe/journal.js';
import { DecisionTracer } from './observe/trace.js';
import { TraceFileSink } from './observe/trace-sink.js';
import { normaliseCn } from './trust/dn.js';
import { normaliseDomain } from './trust/domain.js';
import { OperatorLedger } from './trust/operators.js';
import { ListLifecycle } from './whitelist/lifecycle.js';
import { proxyFromEnv, redactProxy } from './whitelist/proxy.js';
import { createSource, DEFAULT_SOURCE_OPTIONS } from './whitelist/source.js';
import { hasSignerTrust, loadSignerTrust, type SignerTrustConfig } from './whitelist/signature.js';
import { ensureStateDir } from './whitelist/state.js';
import { assertStateDirPrivate } from './whitelist/state-access.js';

export interface Logging {
  readonly logger: Logger;
  /** Raw line writer on the same asynchronous destination, for the hand-serialised trace lines. */
  readonly writeLine: (line: string) => void;
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
  const logger = pino(
    {
      level,
      base: { service: 'mssante-policyd' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
  return { logger, writeLine };
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
  readonly addresses: { policy: string | null; milter: string | null; http: string | null; socketmap: string | null };
  /** SIGUSR1: reopen --trace-file at its path (after logrotate renamed it); no-op without it. */
  reopenTrace(): void;
  /** Writes the buffered trace lines synchronously and closes --trace-file (on a fatal error). */
  closeTraceSync(): void;
  shutdown(reason: string): Promise<void>;
}

export async function startDaemon(config: Config, logging: Logging): Promise<RunningDaemon> {
  const { logger } = logging;
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
  const metrics = createMetrics();
  const traceSink = config.traceFile === null ? null : openTraceSink(config.traceFile, metrics, logger);
  const { lifecycle, sourceDescription } = createListLifecycle(config, trust, metrics, logger);
  const operators = createOperatorLedger(config, metrics, logger.child({ component: 'operators' }));
  lifecycle.onSwap((index) => operators.setList(index));
  const service = new DecisionService({
    currentIndex: () => lifecycle.current(),
    policy: { tlsProfile: config.tlsProfile, trustedIssuerCns: new Set(config.trustedIssuerCns.map(normaliseCn)) },
    metrics,
    tracer: new DecisionTracer(logger, pseudonymizeKey(config), traceSink?.write ?? logging.writeLine),
    logger,
    operators,
  });

  await lifecycle.start();

  const closers: Array<(deadlineMs: number) => Promise<void>> = [];
  const addresses: RunningDaemon['addresses'] = { policy: null, milter: null, http: null, socketmap: null };
  try {
    await startListeners(config, { lifecycle, service, operators, metrics, logger }, addresses, closers);
  } catch (error) {
    await Promise.allSettled(closers.map((close) => close(0)));
    await lifecycle.stop();
    traceSink?.closeSync();
    throw error;
  }
  logger.info(
    { event: 'listening', ...addresses, whitelist: sourceDescription, state_dir: config.stateDir },
    'mssante-policyd ready to answer',
  );

  let stopping: Promise<void> | null = null;
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
        await Promise.allSettled(closers.map((close) => close(config.shutdownGraceSeconds * 1000)));
        await lifecycle.stop();
        if (traceSink !== null) {
          await traceSink.drain();
          traceSink.closeSync();
        }
        logger.info({ event: 'stopped' }, 'stopped');
      })();
      return stopping;
    },
  };
}

interface ListenerDeps {
  readonly lifecycle: ListLifecycle;
  readonly service: DecisionService;
  readonly operators: OperatorLedger;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

/** Starts the configured listeners, recording each address and closer as it comes up (the caller closes them on a failure). */
async function startListeners(
  config: Config,
  deps: ListenerDeps,
  addresses: RunningDaemon['addresses'],
  closers: Array<(deadlineMs: number) => Promise<void>>,
): Promise<void> {
  const { lifecycle, service, operators, metrics, logger } = deps;
  // What every listener shares: admission, the per-connection budget, the socket file's access.
  const listener = {
    maxConnections: config.maxConnections,
    maxConnectionBytes: config.maxConnectionBytes,
    heapWatermarkPercent: config.heapWatermarkPercent,
    unixSocket: { unixMode: config.socketMode, unixOwner: config.socketOwner, unixGroup: config.socketGroup },
    allowedPeerUsers: await resolveUsers(config.allowedPeerUsers),
    metrics,
  };
  if (config.policyListen !== null) {
    const policy: PolicyFrontend = await startPolicyFrontend(config.policyListen, {
      limits: { maxLineBytes: config.maxLineBytes, maxRequestBytes: config.maxRequestBytes, maxAttributes: config.maxAttributes },
      idleTimeoutMs: config.idleTimeoutSeconds * 1000,
      requestTimeoutMs: config.requestTimeoutSeconds * 1000,
      ...listener,
      logger: logger.child({ component: 'policy' }),
      service,
    });
    addresses.policy = policy.address;
    closers.push((ms) => policy.close(ms));
  }
  if (config.milterListen !== null) {
    const milter: MilterFrontend = await startMilterFrontend(config.milterListen, {
      maxPacketBytes: config.maxMilterPacketBytes,
      idleTimeoutMs: config.milterIdleTimeoutSeconds * 1000,
      packetTimeoutMs: config.requestTimeoutSeconds * 1000,
      ...listener,
      logger: logger.child({ component: 'milter' }),
      service,
    });
    addresses.milter = milter.address;
    closers.push((ms) => milter.close(ms));
  }
  if (config.socketmapListen !== null) {
    const socketmap = await startSocketmapServer(config.socketmapListen, {
      limits: { maxRequestBytes: config.maxSocketmapRequestBytes },
      idleTimeoutMs: config.idleTimeoutSeconds * 1000,
      requestTimeoutMs: config.requestTimeoutSeconds * 1000,
      ...listener,
      logger: logger.child({ component: 'socketmap' }),
      tables: new SocketmapTables({ tlsPolicy: config.tlsPolicyValue, transport: config.transportValue }),
      currentIndex: () => lifecycle.current(),
    });
    addresses.socketmap = socketmap.address;
    closers.push((ms) => socketmap.close(ms));
  }
  if (config.httpListen !== null) {
    const http = await startHttp(config.httpListen, config, lifecycle, service, operators, metrics, logger);
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
export async function serve(config: Config): Promise<void> {
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
  process.on('SIGHUP', () => {
    logger.info({ event: 'sighup' }, 'SIGHUP: reloading the whitelist');
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
  const source = createSource(config.whitelist, {
    ...DEFAULT_SOURCE_OPTIONS,
    maxBytes: config.maxListBytes,
    totalTimeoutMs: config.fetchTimeoutSeconds * 1000,
    caFile: config.caFile,
    proxy,
  });
  const lifecycle = new ListLifecycle(
    {
      sourceDescription: source.description,
      stateDir: config.stateDir,
      trust,
      maxListAgeDays: config.maxListAgeDays,
      allowUnsigned: config.allowUnsigned,
      maxEntries: config.maxListEntries,
      maxShrinkPercent: config.maxShrinkPercent,
      refreshMs: config.refreshSeconds * 1000,
      prepareTimeoutMs: config.prepareTimeoutSeconds * 1000,
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
  return { lifecycle, sourceDescription: source.description };
}

function createOperatorLedger(config: Config, metrics: Metrics, logger: Logger): OperatorLedger {
  const settings = {
    rate: config.operatorRate,
    burst: config.operatorBurst,
    mode: config.operatorRateMode,
    exempt: config.operatorRateExempt,
  };
  if (settings.rate > 0) logger.info({ event: 'operator_rate', ...settings }, 'per-operator throttle on');
  const ledger = new OperatorLedger(settings, {
    forget: (labels) => metrics.forgetOperators(labels),
    overRate: (operator, messages) =>
      logger.warn(
        { event: 'operator_over_rate', operator, messages, mode: 'observe' },
        'operator over --operator-rate (observe mode: let through)',
      ),
  });
  metrics.readOperatorCounts(() => ledger.counts());
  return ledger;
}

/** The HTTP endpoints: metrics, health and readiness, the list in force, lookups and dry runs. */
function startHttp(
  listen: string,
  config: Config,
  lifecycle: ListLifecycle,
  service: DecisionService,
  operators: OperatorLedger,
  metrics: Metrics,
  logger: Logger,
): ReturnType<typeof startHttpServer> {
  return startHttpServer(listen, {
    allowedHosts: config.httpAllowedHosts,
    metrics,
    logger: logger.child({ component: 'http' }),
    readiness: () =>
      lifecycle.current() === null ? { ready: false, reasons: ['whitelist_unavailable'] } : { ready: true, reasons: [] },
    whitelistStatus: () => whitelistStatus(lifecycle),
    lookupDomain: (name) => lookupDomain(lifecycle, name),
    dryRun: (input) => policyDryRun((facts) => service.evaluate(facts), input),
    operators: () => operators.snapshot(),
  });
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
  };
}
