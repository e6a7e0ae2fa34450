/**
 * A minimal SMTP client that keeps one STARTTLS session (with a client certificate) open and sends
 * many messages through it, the way a sending MTA reuses a connection. For floods: swaks opens one
 * process and one TLS handshake per message, far too slow to send hundreds on a loaded machine.
 * It only speaks SMTP (RFC 5321 replies, RFC 3207 STARTTLS); it knows nothing of the daemon.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  readonly code: number;
  readonly enhanced: string | null;
  /** Lines joined by '\n', codes included. */
  readonly text: string;
}

export interface MessageOutcome {
  readonly testId: string;
  /** 'accepted': end of data got 250; 'deferred' / 'refused': a RCPT got a 4xx / 5xx (then RSET). */
  readonly outcome: 'accepted' | 'deferred' | 'refused';
  /** The reply to each RCPT TO, in order. */
  readonly rcpt: readonly Reply[];
  /** The reply that decided: end of data (accepted) or the first refused RCPT. */
  readonly decisive: Reply;
}

class LineReader {
  private buffer = '';
  private lines: string[] = [];
  private waiting: ((line: string | null) => void) | null = null;
  private ended = false;

  attach(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        this.lines.push(this.buffer.slice(0, nl).replace(/\r$/, ''));
        this.buffer = this.buffer.slice(nl + 1);
      }
      this.wake();
    });
    const end = (): void => {
      this.ended = true;
      this.wake();
    };
    socket.once('close', end);
    socket.once('end', end);
  }

  detach(socket: net.Socket): void {
    socket.removeAllListeners('data');
    socket.removeAllListeners('close');
    socket.removeAllListeners('end');
  }

  private wake(): void {
    if (this.waiting === null) return;
    const next = this.lines.shift();
    if (next !== undefined) {
      const w = this.waiting;
      this.waiting = null;
      w(next);
    } else if (this.ended) {
      const w = this.waiting;
      this.waiting = null;
      w(null);
    }
  }

  line(): Promise<string | null> {
    const next = this.lines.shift();
    if (next !== undefined) return Promise.resolve(next);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }
}

export class SmtpSession {
  /** 4xx and 5xx replies in this session: Postfix disconnects past smtpd_hard_error_limit (20). */
  errors = 0;
  private constructor(
    private socket: net.Socket,
    private readonly reader: LineReader,
  ) {}

  /** Connects, EHLO, STARTTLS with the client certificate, EHLO again. */
  static async open(
    port: number,
    cert: { readonly certPath: string; readonly keyPath: string },
    ehlo = 'client.mssante.test',
  ): Promise<SmtpSession> {
    const plain = net.connect(port, '127.0.0.1');
    await new Promise<void>((ok, fail) => {
      plain.once('connect', ok);
      plain.once('error', fail);
    });
    const reader = new LineReader();
    reader.attach(plain);
    const session = new SmtpSession(plain, reader);
    session.expect(await session.reply(), 220, 'banner');
    session.expect(await session.command(`EHLO ${ehlo}`), 250, 'EHLO');
    session.expect(await session.command('STARTTLS'), 220, 'STARTTLS');
    reader.detach(plain);
    const secure = tls.connect({
      socket: plain,
      cert: readFileSync(cert.certPath),
      key: readFileSync(cert.keyPath),
      rejectUnauthorized: false,
      servername: 'mx.destinataire.mssante.test',
    });
    await new Promise<void>((ok, fail) => {
      secure.once('secureConnect', ok);
      secure.once('error', fail);
    });
    secure.on('error', () => undefined);
    reader.attach(secure);
    session.socket = secure;
    session.expect(await session.command(`EHLO ${ehlo}`), 250, 'EHLO after STARTTLS');
    return session;
  }

  private expect(reply: Reply, code: number, what: string): void {
    if (reply.code !== code) throw new Error(`${what}: expected ${code}, got ${reply.text}`);
  }

  private async reply(): Promise<Reply> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.reader.line();
      if (line === null) throw new Error(`connection closed while waiting for a reply (got ${JSON.stringify(lines)})`);
      lines.push(line);
      const m = /^(\d{3})([ -])(.*)$/.exec(line);
      if (m === null) throw new Error(`not an SMTP reply line: ${JSON.stringify(line)}`);
      if (m[2] === ' ') {
        const code = Number(m[1]);
        if (code >= 400) this.errors++;
        return { code, enhanced: /^([245]\.\d{1,3}\.\d{1,3})\b/.exec(m[3]!.trimStart())?.[1] ?? null, text: lines.join('\n') };
      }
    }
  }

  private command(line: string): Promise<Reply> {
    this.socket.write(`${line}\r\n`);
    return this.reply();
  }

  /**
   * One message: MAIL, each RCPT, then DATA when every RCPT was accepted, RSET when none was.
   * A mix of accepted and deferred recipients is reported as it is (the caller asserts).
   */
  async send(from: string, recipients: readonly string[], testId: string = randomUUID()): Promise<MessageOutcome> {
    const mail = await this.command(`MAIL FROM:<${from}>`);
    if (mail.code !== 250) throw new Error(`MAIL FROM refused: ${mail.text}`);
    const rcpt: Reply[] = [];
    for (const to of recipients) rcpt.push(await this.command(`RCPT TO:<${to}>`));
    const refused = rcpt.find((r) => r.code !== 250);
    if (refused !== undefined) {
      this.expect(await this.command('RSET'), 250, 'RSET');
      return { testId, outcome: refused.code >= 500 ? 'refused' : 'deferred', rcpt, decisive: refused };
    }
    this.expect(await this.command('DATA'), 354, 'DATA');
    const body = [
      `From: <${from}>`,
      `To: ${recipients.map((r) => `<${r}>`).join(', ')}`,
      `Subject: mssante-policyd flood ${testId}`,
      `X-Mssante-Test-Id: ${testId}`,
      '',
      'Alerte sanitaire (test).',
      '.',
      '',
    ].join('\r\n');
    this.socket.write(body);
    const end = await this.reply();
    if (end.code !== 250) throw new Error(`end of data not accepted: ${end.text}`);
    return { testId, outcome: 'accepted', rcpt, decisive: end };
  }

  async quit(): Promise<void> {
    try {
      await this.command('QUIT');
    } catch {
      // already closed
    }
    this.socket.destroy();
  }
}

/** Postfix disconnects a client after smtpd_hard_error_limit (20) errors: sendMessages reconnects well before. */
export const MAX_SESSION_ERRORS = 8;

/**
 * Sends `count` messages once each through sessions presenting `cert`, reconnecting before Postfix's
 * error limit; `pauseMs` after each answer (0: as fast as the machine lets it).
 */
export async function sendMessages(
  port: number,
  cert: { readonly certPath: string; readonly keyPath: string },
  from: string,
  recipients: readonly string[],
  count: number,
  pauseMs = 0,
): Promise<MessageOutcome[]> {
  const outcomes: MessageOutcome[] = [];
  let session = await SmtpSession.open(port, cert);
  for (let i = 0; i < count; i++) {
    if (session.errors >= MAX_SESSION_ERRORS) {
      await session.quit();
      session = await SmtpSession.open(port, cert);
    }
    outcomes.push(await session.send(from, recipients));
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  await session.quit();
  return outcomes;
}
