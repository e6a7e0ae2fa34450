/**
 * The Postfix socketmap frontend (sending side): lookups on the list in force, no trust decision
 * (hence no decision trace: each lookup is counted in socketmap_lookups_total and logged at debug).
 */
import type { FrontendSpec } from '../spec.js';
import { SOCKETMAP_CODEC_ERROR_KINDS, type SocketmapCodecErrorKind, type SocketmapRequest } from './codec.js';
import { SocketmapTables } from './maps.js';
import { socketmapProtocol } from './server.js';

/** The socketmap frontend, as the daemon starts it (src/frontend-registry.ts). */
export const SOCKETMAP_FRONTEND = {
  name: 'socketmap',
  settings: {
    listen: 'socketmap-listen',
    idleTimeout: 'idle-timeout',
    requestTimeout: 'request-timeout',
    limits: { maxRequestBytes: 'max-socketmap-request-bytes' },
    texts: { tlsPolicy: 'tls-policy-value', transport: 'transport-value' },
  },
  protocolErrorKinds: SOCKETMAP_CODEC_ERROR_KINDS,
  answers: null,
  protocol: (values, deps) =>
    socketmapProtocol(values.limits, values.maxConnectionBytes, {
      tables: new SocketmapTables(values.texts),
      currentIndex: deps.currentIndex,
      metrics: deps.metrics,
      logger: deps.logger,
    }),
} as const satisfies FrontendSpec<SocketmapCodecErrorKind, SocketmapRequest, 'maxRequestBytes', 'tlsPolicy' | 'transport'>;
