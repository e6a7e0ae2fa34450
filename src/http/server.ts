/**
 * The operators' HTTP side: Prometheus metrics, liveness, readiness, the list in force and a
 * dry-run of the decision. Read-only: nothing here changes the daemon's state.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { formatAddress, listen, parseListenAddress, type BoundAddress } from '../net/listen.js';
import type { Metrics } from '../observe/metrics.js';
import type { OperatorsSnapshot } from '../trust/operators.js';
import type { PeersSnapshot } from '../trust/peers.js';
import type { DomainChange } from '../whitelist/change-journal.js';
import type { ListChange } from '../whitelist/changes.js';
import { hostAllowList, MAX_HOST_LENGTH } from './host.js';
import { registerFleetRoutes, type FleetRouteDeps } from './fleet-routes.js';

export interface HttpDeps {
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** 200 only while a usable list is in force and the event loop is healthy. */
  readonly readiness: () => { readonly ready: boolean; readonly reasons: readonly string[] };
  readonly whitelistStatus: () => WhitelistStatus;
  readonly lookupDomain: (name: string) => DomainLookup | null;
  readonly dryRun: (input: DryRunInput) => DryRunResult;
  /** Per-operator rate, share and throttled count (GET /v1/operators); absent: the route 404s. */
  readonly operators?: () => OperatorsSnapshot;
  /** Certificate fingerprints seen per listed identity (GET /v1/peers); absent: the route 404s. */
  readonly peers?: () => Promise<PeersSnapshot>;
  /** Event-loop health that /readyz adds to `readiness()`. Defaults: see EventLoopHealthOptions. */
  readonly eventLoop?: EventLoopHealthOptions;
  /** Host header values answered besides loopback names and the listen address (`name` or `name:port`). */
  readonly allowedHosts?: readonly string[];
  /** The change journal, newest first (GET /v1/whitelist/changes); absent: the route 404s. */
  readonly listChanges?: () => readonly ListChange[];
  /** A domain not in the list in force: its changes in the journal (shown in the 404 body), null for a bad name. */
  readonly unlistedDomain?: (name: string) => { readonly domain: string; readonly changes: readonly DomainChange[] } | null;
  /** GET /v1/fleet and GET /v1/whitelist/signed (fleet-routes.ts); absent: they 404. */
  readonly fleetRoutes?: FleetRouteDeps;
  /** A listening socket inherited from systemd (socket activation), served instead of binding. */
  readonly inheritedFd?: number | null;
  /** Mode of a unix: socket file (--socket-mode). */
  readonly unixMode?: number;
  /** What /healthz says is running: the package version, Node's, and when this process started. */
  readonly build?: BuildIdentity;
}

/** What runs (src/build-info.ts makes it): the package version, Node's, and when this process started (ISO 8601). */
export interface BuildIdentity {
  readonly version: string;
  readonly node: string;
  readonly startedAt: string;
}

export interface WhitelistStatus {
  usable: boolean;
  source: string | null;
  generatedAt: string | null;
  sha256: string | null;
  domains: number;
  entries: number;
  skipped: Array<{ index: number; domain: string | null; reason: string; detail: string }>;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
  lastFailureReason: string | null;
  lastFailureDetail: string | null;
  signer: { subject: string; validTo: string; fingerprint256?: string; matched?: string } | null;
}

export interface DomainLookup {
  domain: string;
  domainUnicode: string;
  entries: Array<{ dn: string; dnNormalised: string; cn: string; description: string; updatedAt: string | null }>;
  /** The list in force the answer comes from. */
  listSha256?: string | null;
  /** The certificate identities bound to the domain (normalised DNs, sorted). */
  binding?: string[];
  /** generatedAt of the list that introduced this binding (from the change journal); null when older than the journal. */
  since?: string | null;
  /** The domain's last changes in the journal, newest first. */
  changes?: readonly DomainChange[];
}

export interface DryRunInput {
  sender: string;
  ccert_subject?: string;
  ccert_issuer?: string;
  x_ccert_dn?: string;
  x_ccert_verified?: '0' | '1';
  encryption_protocol?: string;
  encryption_cipher?: string;
  protocol_state?: string;
}

export interface DryRunResult {
  result: 'pass' | 'reject' | 'tempfail';
  reason: string;
  /** The exact Postfix policy action. */
  action: string;
}

/**
 * p99 rather than max: a saturated loop (every tick late) makes the daemon unready, a single
 * isolated stall does not — it already shows in the event-loop metrics.
 */
export interface EventLoopHealthOptions {
  /** Not ready while the p99 event-loop delay of the current or last window exceeds this. Default 1000. */
  readonly maxDelayMs?: number;
  /** Length of a measurement window. Default 5000. */
  readonly windowMs?: number;
  /** Sampling resolution of the delay monitor. Default 20. */
  readonly resolutionMs?: number;
}

export const READY_REASON_EVENT_LOOP = 'event_loop_delay';

const CLOSE_GRACE_MS = 1000;

export interface EventLoopHealth {
  /** Worst p99 delay (seconds) of the current and the last completed window. */
  p99Seconds(): number;
  healthy(): boolean;
  close(): void;
}

/**
 * Delay of the event loop, as @fastify/under-pressure measures it: a sampling histogram reset
 * every window. The previous window is kept so that a reset never hides a stall just seen.
 */
export function createEventLoopHealth(options: EventLoopHealthOptions = {}): EventLoopHealth {
  const maxDelayNs = (options.maxDelayMs ?? 1000) * 1e6;
  const histogram = monitorEventLoopDelay({ resolution: options.resolutionMs ?? 20 });
  histogram.enable();
  let lastWindowP99 = 0;
  const timer = setInterval(() => {
    lastWindowP99 = currentP99();
    histogram.reset();
  }, options.windowMs ?? 5000);
  timer.unref();
  function currentP99(): number {
    // An empty histogram reports NaN or 0 depending on the Node version.
    return histogram.count > 0 ? histogram.percentile(99) : 0;
  }
  const worst = (): number => Math.max(lastWindowP99, currentP99());
  return {
    p99Seconds: () => worst() / 1e9,
    healthy: () => worst() <= maxDelayNs,
    close() {
      clearInterval(timer);
      histogram.disable();
    },
  };
}

/** Fastify's per-request lines go to debug: the HTTP side is for scrapers and operators. */
class DebugLogController extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const fields = { method: request.method, url: request.url, statusCode: reply.statusCode, responseTime: reply.elapsedTime };
    if (error) reply.log.warn({ ...fields, err: error }, 'http request errored');
    else reply.log.debug(fields, 'http request');
  }

  override defaultErrorLog(error: Error, request: FastifyRequest, reply: FastifyReply): void {
    const fields = { method: request.method, url: request.url, statusCode: reply.statusCode };
    if (reply.statusCode >= 500) reply.log.error({ ...fields, err: error }, 'http handler failed');
    else reply.log.debug({ ...fields, error: error.message }, 'http client error');
  }

  override routeNotFound(request: FastifyRequest): void {
    request.log.debug({ method: request.method, url: request.url }, 'http route not found');
  }
}

// ---- JSON schemas: they validate input, document the output and make serialisation fast.

const nullableString = { type: ['string', 'null'] } as const;

const errorSchema = {
  type: 'object',
  properties: {
    statusCode: { type: 'integer' },
    code: { type: 'string' },
    error: { type: 'string' },
    message: { type: 'string' },
  },
} as const;

const whitelistStatusSchema = {
  type: 'object',
  required: [
    'usable',
    'source',
    'generatedAt',
    'sha256',
    'domains',
    'entries',
    'skipped',
    'lastSuccessAt',
    'lastFailureAt',
    'lastFailureReason',
    'lastFailureDetail',
    'signer',
  ],
  properties: {
    usable: { type: 'boolean' },
    source: nullableString,
    generatedAt: nullableString,
    sha256: nullableString,
    domains: { type: 'integer' },
    entries: { type: 'integer' },
    skipped: {
      type: 'array',
      items: {
        type: 'object',
        required: ['index', 'domain', 'reason', 'detail'],
        properties: {
          index: { type: 'integer' },
          domain: nullableString,
          reason: { type: 'string' },
          detail: { type: 'string' },
        },
      },
    },
    lastSuccessAt: nullableString,
    lastFailureAt: nullableString,
    lastFailureReason: nullableString,
    lastFailureDetail: nullableString,
    signer: {
      type: ['object', 'null'],
      required: ['subject', 'validTo'],
      properties: {
        subject: { type: 'string' },
        validTo: { type: 'string' },
        fingerprint256: { type: 'string' },
        matched: { type: 'string' },
      },
    },
  },
} as const;

const listRefSchema = {
  type: 'object',
  required: ['sha256', 'generatedAt'],
  properties: { sha256: { type: 'string' }, generatedAt: { type: 'string' } },
} as const;

const stringList = { type: 'array', items: { type: 'string' } } as const;

const domainChangeSchema = {
  type: 'object',
  required: ['kind', 'appliedAt', 'from', 'to'],
  properties: {
    kind: { type: 'string', enum: ['added', 'removed', 'rebound'] },
    appliedAt: nullableString,
    from: listRefSchema,
    to: listRefSchema,
    dnsFrom: stringList,
    dnsTo: stringList,
  },
} as const;

const listChangeSchema = {
  type: 'object',
  required: ['from', 'to', 'appliedAt', 'added', 'removed', 'rebound', 'operatorsAdded', 'operatorsRemoved'],
  properties: {
    from: listRefSchema,
    to: listRefSchema,
    appliedAt: nullableString,
    added: stringList,
    removed: stringList,
    rebound: {
      type: 'array',
      items: {
        type: 'object',
        required: ['domain', 'from', 'to'],
        properties: { domain: { type: 'string' }, from: stringList, to: stringList },
      },
    },
    operatorsAdded: stringList,
    operatorsRemoved: stringList,
  },
} as const;

/** The journal itself, newest first (docs/interface.md). */
const listChangesSchema = { type: 'array', items: listChangeSchema } as const;

const unlistedDomainSchema = {
  type: 'object',
  properties: {
    ...errorSchema.properties,
    domain: { type: 'string' },
    changes: { type: 'array', items: domainChangeSchema },
  },
} as const;

const domainLookupSchema = {
  type: 'object',
  required: ['domain', 'domainUnicode', 'entries'],
  properties: {
    domain: { type: 'string' },
    domainUnicode: { type: 'string' },
    entries: {
      type: 'array',
      items: {
        type: 'object',
        required: ['dn', 'dnNormalised', 'cn', 'description', 'updatedAt'],
        properties: {
          dn: { type: 'string' },
          dnNormalised: { type: 'string' },
          cn: { type: 'string' },
          description: { type: 'string' },
          updatedAt: nullableString,
        },
      },
    },
    listSha256: nullableString,
    binding: stringList,
    since: nullableString,
    changes: { type: 'array', items: domainChangeSchema },
  },
} as const;

// Postfix's own attribute limit is 8 KiB per line (docs/mssante-rules.md §4).
const attribute = { type: 'string', maxLength: 8192 } as const;

const dryRunInputSchema = {
  type: 'object',
  required: ['sender'],
  additionalProperties: false,
  properties: {
    sender: attribute,
    ccert_subject: attribute,
    ccert_issuer: attribute,
    x_ccert_dn: attribute,
    x_ccert_verified: { type: 'string', enum: ['0', '1'] },
    encryption_protocol: attribute,
    encryption_cipher: attribute,
    protocol_state: attribute,
  },
} as const;

const dryRunResultSchema = {
  type: 'object',
  required: ['result', 'reason', 'action'],
  properties: {
    result: { type: 'string', enum: ['pass', 'reject', 'tempfail'] },
    reason: { type: 'string' },
    action: { type: 'string' },
  },
} as const;

const readinessSchema = {
  type: 'object',
  required: ['status', 'reasons', 'eventLoopDelayP99Seconds'],
  properties: {
    status: { type: 'string', enum: ['ready', 'not_ready'] },
    reasons: { type: 'array', items: { type: 'string' } },
    eventLoopDelayP99Seconds: { type: 'number' },
  },
} as const;

const operatorsSchema = {
  type: 'object',
  required: ['mode', 'rate', 'burst', 'windowSeconds', 'totalRate', 'operators'],
  properties: {
    mode: { type: 'string', enum: ['off', 'enforce', 'observe'] },
    rate: { type: 'number' },
    burst: { type: 'number' },
    windowSeconds: { type: 'number' },
    totalRate: { type: 'number' },
    operators: {
      type: 'array',
      items: {
        type: 'object',
        required: ['operator', 'rate', 'share', 'transactions', 'throttled', 'exempt'],
        properties: {
          operator: { type: 'string' },
          rate: { type: 'number' },
          share: { type: 'number' },
          transactions: { type: 'integer' },
          throttled: { type: 'integer' },
          exempt: { type: 'boolean' },
        },
      },
    },
  },
} as const;

const peersSchema = {
  type: 'object',
  required: ['identities', 'peers'],
  properties: {
    identities: { type: 'integer' },
    peers: {
      type: 'array',
      items: {
        type: 'object',
        required: ['identity', 'fingerprints'],
        properties: {
          identity: { type: 'string' },
          fingerprints: {
            type: 'array',
            items: {
              type: 'object',
              required: ['fingerprint', 'firstSeen', 'lastSeen', 'frontend'],
              properties: {
                fingerprint: { type: 'string' },
                firstSeen: { type: 'string' },
                lastSeen: { type: 'string' },
                frontend: { type: 'string' },
              },
            },
          },
        },
      },
    },
  },
} as const;

/** Fastify for the HTTP side; per-request lines at debug (DebugLogController). */
function createApp(logger: Logger) {
  return Fastify({
    loggerInstance: logger,
    logController: new DebugLogController(),
    exposeHeadRoutes: true,
    // A scraper or a curl: nothing here needs a large body or a slow client.
    bodyLimit: 64 * 1024,
    requestTimeout: 30_000,
  });
}

type HttpApp = ReturnType<typeof createApp>;

/** Every route answers only to the allowed Host names (loopback, the listen address, --http-allowed-host). */
function refuseOtherHosts(app: HttpApp, hostAllowed: ReturnType<typeof hostAllowList>): void {
  app.addHook('onRequest', async (request, reply) => {
    if (hostAllowed(request.headers.host)) return;
    request.log.debug(
      { method: request.method, host: (request.headers.host ?? '').slice(0, MAX_HOST_LENGTH) },
      'http Host not allowed',
    );
    // 421 Misdirected Request: nothing of the daemon's state in the body, whatever the route.
    await reply
      .code(421)
      .header('connection', 'close')
      .send({ statusCode: 421, code: 'host_not_allowed', error: 'Misdirected Request', message: 'Host not allowed' });
  });
}

/** /metrics, /healthz and /readyz: what scrapers and supervisors poll. */
function registerProbeRoutes(app: HttpApp, deps: HttpDeps, loop: EventLoopHealth): void {
  const { registry } = deps.metrics;
  app.get(
    '/metrics',
    {
      schema: { response: { 200: { content: { [registry.contentType]: { schema: { type: 'string' } } } } } },
    },
    async (_request, reply) => {
      const text = await registry.metrics();
      return reply.type(registry.contentType).send(text);
    },
  );

  app.get(
    '/healthz',
    {
      schema: {
        response: {
          200: {
            type: 'object',
            required: ['status'],
            properties: {
              status: { type: 'string', enum: ['alive'] },
              version: { type: 'string' },
              node: { type: 'string' },
              startedAt: { type: 'string' },
            },
          },
        },
      },
    },
    // The running code's version: after an upgrade without a restart, the old one shows here.
    async () => ({ status: 'alive' as const, ...deps.build }),
  );

  app.get('/readyz', { schema: { response: { 200: readinessSchema, 503: readinessSchema } } }, async (_request, reply) => {
    const state = deps.readiness();
    const loopHealthy = loop.healthy();
    const reasons = loopHealthy ? [...state.reasons] : [...state.reasons, READY_REASON_EVENT_LOOP];
    const ready = state.ready && loopHealthy;
    return reply
      .code(ready ? 200 : 503)
      .send({ status: ready ? 'ready' : 'not_ready', reasons, eventLoopDelayP99Seconds: loop.p99Seconds() });
  });
}

/** /v1/...: the list in force, a domain's entries, the dry-run decision and the operators' rates. */
function registerApiRoutes(app: HttpApp, deps: HttpDeps): void {
  app.get('/v1/whitelist', { schema: { response: { 200: whitelistStatusSchema } } }, async () => deps.whitelistStatus());

  app.get<{ Params: { name: string } }>(
    '/v1/whitelist/domains/:name',
    {
      schema: {
        params: { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 1024 } } },
        response: { 200: domainLookupSchema, 404: unlistedDomainSchema },
      },
    },
    async (request, reply) => {
      const found = deps.lookupDomain(request.params.name);
      if (found === null) {
        // What the journal knows of it: "removed yesterday" is the answer a 3 a.m. refusal needs.
        const history = deps.unlistedDomain?.(request.params.name) ?? null;
        return reply.code(404).send({
          statusCode: 404,
          code: 'domain_not_listed',
          error: 'Not Found',
          message: 'domain not in the list in force',
          ...(history === null ? {} : history),
        });
      }
      return found;
    },
  );

  const listChanges = deps.listChanges;
  if (listChanges !== undefined)
    app.get('/v1/whitelist/changes', { schema: { response: { 200: listChangesSchema } } }, async () => listChanges());

  const decideResponse = { 200: dryRunResultSchema, 400: errorSchema };
  app.post<{ Body: DryRunInput }>(
    '/v1/decide',
    { schema: { body: dryRunInputSchema, response: decideResponse } },
    async (request) => deps.dryRun(request.body),
  );
  app.get<{ Querystring: DryRunInput }>(
    '/v1/decide',
    { schema: { querystring: dryRunInputSchema, response: decideResponse } },
    async (request) => deps.dryRun(request.query),
  );

  const operators = deps.operators;
  if (operators !== undefined)
    app.get('/v1/operators', { schema: { response: { 200: operatorsSchema } } }, async () => operators());

  const peers = deps.peers;
  if (peers !== undefined) app.get('/v1/peers', { schema: { response: { 200: peersSchema } } }, async () => peers());
  if (deps.fleetRoutes !== undefined) registerFleetRoutes(app as unknown as FastifyInstance, deps.fleetRoutes);
}

export async function startHttpServer(
  listenAddress: string,
  deps: HttpDeps,
): Promise<{ address: string; close(): Promise<void> }> {
  const where = parseListenAddress(listenAddress);
  const loop = createEventLoopHealth(deps.eventLoop);
  const app = createApp(deps.logger);
  refuseOtherHosts(app, hostAllowList(where.kind === 'tcp' ? where.host : null, deps.allowedHosts ?? []));
  registerProbeRoutes(app, deps, loop);
  registerApiRoutes(app, deps);

  let bound: BoundAddress;
  try {
    await app.ready();
    // The daemon's shared binder: same address forms and stale unix socket handling as the MTA listeners.
    bound = await listen(app.server, where, { inheritedFd: deps.inheritedFd ?? null, unixMode: deps.unixMode });
  } catch (err) {
    loop.close();
    await app.close();
    throw err;
  }
  const address = formatAddress(bound.address);
  deps.logger.info({ address }, 'http listener ready');
  return {
    address,
    async close() {
      loop.close();
      // Requests in flight get a grace; a hung scraper must not hold the daemon's stop (10 s in all).
      const force = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
      force.unref();
      try {
        await app.close();
      } finally {
        clearTimeout(force);
      }
      await bound.release();
    },
  };
}
