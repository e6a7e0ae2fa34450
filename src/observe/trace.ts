/**
 * The trace record of a decision, as Référentiel #1 EX_GDT_5040/5050 asks: action, certificate
 * identity, time (pino's), client characteristics, network address, request and answer, queue id,
 * sender, recipient, size. Never content, never subject. Fields are structured (JSON escapes CR/LF);
 * with pseudonymisation, addresses become keyed hashes (EX_GDT_5070).
 */
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { Decision } from '../trust/decide.js';
import type { Frontend } from './metrics.js';

/** What the frontend knows of the transaction besides the Facts. All optional: MTAs differ. */
export interface TraceContext {
  readonly instance?: string | undefined;
  readonly queueId?: string | undefined;
  readonly clientAddress?: string | undefined;
  readonly clientName?: string | undefined;
  readonly helo?: string | undefined;
  readonly certSubject?: string | undefined;
  readonly certIssuer?: string | undefined;
  readonly certFingerprint?: string | undefined;
  readonly tlsProtocol?: string | undefined;
  readonly tlsCipher?: string | undefined;
  readonly sender?: string | null | undefined;
  readonly recipient?: string | undefined;
  readonly size?: string | undefined;
  readonly stage: string;
  readonly connectionId?: number | undefined;
}

const MAX_FIELD = 512;

function clip(value: string | undefined | null): string | undefined {
  if (value === undefined || value === null) return undefined;
  return value.length > MAX_FIELD ? `${value.slice(0, MAX_FIELD)}…` : value;
}

export class DecisionTracer {
  private readonly key: Buffer | null;

  constructor(private readonly logger: Logger, pseudonymizeKey: Buffer | null) {
    this.key = pseudonymizeKey;
  }

  /** Keyed hash of the personal part; the domain stays readable (it names an organisation). */
  pseudonymizeAddress(address: string | null | undefined): string | undefined {
    if (address === undefined || address === null) return undefined;
    if (this.key === null || address === '') return clip(address);
    const at = address.lastIndexOf('@');
    const local = at < 0 ? address : address.slice(0, at);
    const hash = createHmac('sha256', this.key).update(local).digest('base64url').slice(0, 16);
    return at < 0 ? `h:${hash}` : `h:${hash}${clip(address.slice(at))}`;
  }

  private pseudonymizeHost(value: string | undefined): string | undefined {
    if (value === undefined || this.key === null) return clip(value);
    return `h:${createHmac('sha256', this.key).update(value).digest('base64url').slice(0, 16)}`;
  }

  record(frontend: Frontend, context: TraceContext, decision: Decision, action: string, latencySeconds: number): void {
    const reason = decision.reason;
    const level = reason.result === 'tempfail' ? 'warn' : 'info';
    if (!this.logger.isLevelEnabled(level)) return;
    this.logger[level](
      {
        event: 'decision',
        frontend,
        stage: context.stage,
        result: reason.result,
        reason: reason.id,
        action,
        latency_us: Math.round(latencySeconds * 1e6),
        connection: context.connectionId,
        instance: clip(context.instance),
        queue_id: clip(context.queueId),
        client_address: this.pseudonymizeHost(context.clientAddress),
        client_name: clip(context.clientName),
        helo: clip(context.helo),
        cert_subject: clip(context.certSubject),
        cert_issuer: clip(context.certIssuer),
        cert_fingerprint: clip(context.certFingerprint),
        tls_protocol: clip(context.tlsProtocol),
        tls_cipher: clip(context.tlsCipher),
        sender: this.pseudonymizeAddress(context.sender),
        sender_domain: decision.senderDomain ?? undefined,
        recipient: this.pseudonymizeAddress(context.recipient),
        size: clip(context.size),
      },
      'decision',
    );
  }
}
