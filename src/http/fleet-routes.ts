/**
 * The routes of a fleet of MX: GET /v1/fleet (the instances sharing the store and the list each
 * enforces) and GET /v1/whitelist/signed (the signed bytes of the list in force, for a peer that uses
 * this instance as its list source: the peer verifies them itself, the mirror carries no trust).
 */
import type { FastifyInstance } from 'fastify';
import type { FleetSnapshot } from '../store/fleet.js';

export interface FleetRouteDeps {
  /** Reads the fleet from the store (bounded by --store-timeout); on failure the last read, marked stale. */
  readonly fleet?: () => Promise<FleetSnapshot>;
  /** The signed list in force, exactly as it was verified; null: none in force. */
  readonly signedList?: () => { readonly bytes: Uint8Array; readonly sha256: string } | null;
}

const instanceSchema = {
  type: 'object',
  required: ['id', 'host', 'version', 'listSha256', 'listGeneratedAt', 'lastListSuccessAt', 'startedAt', 'seenAt'],
  properties: {
    id: { type: 'string' },
    host: { type: 'string' },
    version: { type: 'string' },
    listSha256: { type: ['string', 'null'] },
    listGeneratedAt: { type: ['string', 'null'] },
    lastListSuccessAt: { type: ['string', 'null'] },
    startedAt: { type: 'string' },
    seenAt: { type: 'string' },
  },
} as const;

const fleetSchema = {
  type: 'object',
  required: ['store', 'self', 'readAt', 'stale', 'instances', 'lists'],
  properties: {
    store: { type: 'string' },
    self: { type: 'string' },
    readAt: { type: ['string', 'null'] },
    stale: { type: 'boolean' },
    instances: { type: 'array', items: instanceSchema },
    lists: { type: 'object', additionalProperties: { type: 'integer' } },
  },
} as const;

/** An If-None-Match list holds our ETag (or is `*`). */
function matches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header
    .split(',')
    .map((t) => t.trim().replace(/^W\//, ''))
    .some((t) => t === etag || t === '*');
}

export function registerFleetRoutes(app: FastifyInstance, deps: FleetRouteDeps): void {
  const fleet = deps.fleet;
  if (fleet !== undefined) app.get('/v1/fleet', { schema: { response: { 200: fleetSchema } } }, async () => fleet());

  const signedList = deps.signedList;
  if (signedList !== undefined) {
    app.get('/v1/whitelist/signed', async (request, reply) => {
      const list = signedList();
      if (list === null) {
        return reply
          .code(503)
          .send({ statusCode: 503, code: 'whitelist_unavailable', error: 'Service Unavailable', message: 'no list in force' });
      }
      const etag = `"${list.sha256}"`;
      reply.header('etag', etag).header('cache-control', 'no-cache');
      if (matches(request.headers['if-none-match'], etag)) return reply.code(304).send();
      return reply.type('application/xml').send(Buffer.from(list.bytes.buffer, list.bytes.byteOffset, list.bytes.byteLength));
    });
  }
}
