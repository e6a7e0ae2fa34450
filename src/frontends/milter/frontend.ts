/**
 * The Milter adapter: a MilterTransaction (macros at MAIL FROM) → Facts → the shared DecisionService
 * → a Milter verdict. Postfix gives `{cert_subject}` = CN of a verified certificate; Sendmail gives the
 * full DN and `{verify}` (macros.ts sorts that out).
 */
import type { AnswerTexts, Decisions } from '../decisions.js';
import type { FrontendSpec } from '../spec.js';
import type { MilterCommand } from './codec.js';
import type { TraceContext } from '../../observe/trace.js';
import type { Facts } from '../../trust/facts.js';
import { REASON_IDS, REASONS, replyText, type ReasonId } from '../../trust/reasons.js';
import { certIdentityFromMacros, fingerprintsFromMacros, tlsFromMacros } from './macros.js';
import {
  MILTER_PROTOCOL_ERROR_KINDS,
  milterProtocol,
  type MailFromHandler,
  type MilterProtocolErrorKind,
  type MilterTransaction,
  type MilterVerdict,
} from './server.js';

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

/** The Milter frontend, as the daemon starts it (src/frontend-registry.ts). */
export const MILTER_FRONTEND = {
  name: 'milter',
  settings: {
    listen: 'milter-listen',
    idleTimeout: 'milter-idle-timeout',
    requestTimeout: 'request-timeout',
    limits: { maxPacketBytes: 'max-milter-packet-bytes' },
    texts: {},
  },
  protocolErrorKinds: MILTER_PROTOCOL_ERROR_KINDS,
  answers: MILTER_ANSWERS,
  protocol: (values, deps) =>
    milterProtocol(values.limits.maxPacketBytes, values.maxConnectionBytes, mailFromHandler(deps.service), deps.logger),
} as const satisfies FrontendSpec<MilterProtocolErrorKind, MilterCommand, 'maxPacketBytes', never>;

/** A transaction at MAIL FROM → Facts → the decision service → a Milter verdict. */
function mailFromHandler(service: Decisions): MailFromHandler {
  return (transaction) => {
    const started = process.hrtime.bigint();
    const facts = factsFromTransaction(transaction);
    const decision = service.answer('milter', facts, traceFromTransaction(transaction, facts), started, MILTER_ANSWERS);
    const reason = decision.reason;
    return reason.result === 'pass' ? CONTINUE : { action: 'reply', smtpCode: reason.smtpCode, text: replyText(reason) };
  };
}
