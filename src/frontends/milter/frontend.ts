/**
 * The Milter adapter: a MilterTransaction (macros at MAIL FROM) → Facts → the shared DecisionService
 * → a Milter verdict. Postfix gives `{cert_subject}` = CN of a verified certificate; Sendmail gives the
 * full DN and `{verify}` (macros.ts sorts that out).
 */
import type { Logger } from 'pino';
import type { Metrics } from '../../observe/metrics.js';
import type { AnswerTexts, Decisions } from '../decisions.js';
import type { TraceContext } from '../../observe/trace.js';
import type { Facts } from '../../trust/facts.js';
import { REASON_IDS, REASONS, replyText, type ReasonId } from '../../trust/reasons.js';
import { certIdentityFromMacros, fingerprintsFromMacros, tlsFromMacros } from './macros.js';
import type { ListenOptions } from '../../net/listen.js';
import { startMilterServer, type MilterTransaction, type MilterVerdict } from './server.js';

export interface MilterFrontendOptions {
  readonly maxPacketBytes: number;
  readonly idleTimeoutMs: number;
  /** A packet begun must arrive whole within this (slowloris). */
  readonly packetTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxConnectionBytes: number;
  readonly heapWatermarkPercent: number;
  /** Mode, owner and group of a unix socket file. */
  readonly unixSocket?: ListenOptions;
  /** uid → name (--allowed-peer-users), for a loopback TCP listener. */
  readonly allowedPeerUsers?: ReadonlyMap<number, string>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly service: Decisions;
}

export interface MilterFrontend {
  readonly address: string;
  close(deadlineMs: number): Promise<void>;
}

const CONTINUE: MilterVerdict = Object.freeze({ action: 'continue' });

/** The Milter answer to each reason as the trace records it: `continue`, or the reply code and text sent. */
export const MILTER_ANSWERS: AnswerTexts = Object.freeze(
  Object.fromEntries(
    REASON_IDS.map((id) => {
      const reason = REASONS[id];
      return [id, reason.result === 'pass' ? 'continue' : `${reason.smtpCode} ${replyText(reason)}`];
    }),
  ) as Record<ReasonId, string>,
);

export function factsFromTransaction(transaction: MilterTransaction): Facts {
  const tls = tlsFromMacros(transaction.macros);
  return {
    frontend: 'milter',
    stage: 'mail',
    tlsProtocol: tls.protocol,
    tlsCipher: tls.cipher,
    cert: certIdentityFromMacros(transaction.macros),
    sender: transaction.sender,
    certFingerprints: fingerprintsFromMacros(transaction.macros),
  };
}

function traceFromTransaction(transaction: MilterTransaction, facts: Facts): TraceContext {
  const cert = facts.cert;
  return {
    stage: 'mail',
    connectionId: transaction.connectionId,
    queueId: transaction.macros.get('i'),
    clientAddress: transaction.clientAddress ?? undefined,
    clientName: transaction.clientName ?? undefined,
    helo: transaction.helo ?? undefined,
    certSubject: cert === null ? undefined : cert.kind === 'dn' ? cert.dn : cert.cn,
    certIssuer: cert?.issuerCn ?? undefined,
    certFingerprint: facts.certFingerprints?.cert ?? undefined,
    tlsProtocol: facts.tlsProtocol ?? undefined,
    tlsCipher: facts.tlsCipher ?? undefined,
    sender: facts.sender,
  };
}

export async function startMilterFrontend(listen: string, options: MilterFrontendOptions): Promise<MilterFrontend> {
  const { service } = options;
  return startMilterServer(listen, {
    maxPacketBytes: options.maxPacketBytes,
    idleTimeoutMs: options.idleTimeoutMs,
    packetTimeoutMs: options.packetTimeoutMs,
    maxConnections: options.maxConnections,
    maxConnectionBytes: options.maxConnectionBytes,
    heapWatermarkPercent: options.heapWatermarkPercent,
    unixSocket: options.unixSocket,
    allowedPeerUsers: options.allowedPeerUsers,
    logger: options.logger,
    metrics: options.metrics,
    onMailFrom: (transaction) => {
      const started = process.hrtime.bigint();
      const facts = factsFromTransaction(transaction);
      const decision = service.answer('milter', facts, traceFromTransaction(transaction, facts), started, MILTER_ANSWERS);
      const reason = decision.reason;
      return reason.result === 'pass' ? CONTINUE : { action: 'reply', smtpCode: reason.smtpCode, text: replyText(reason) };
    },
  });
}
