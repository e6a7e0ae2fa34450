/**
 * Sends one whole mail with swaks (an independent SMTP client) and reads back what the server
 * answered at each stage, from swaks' own transcript.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';

export interface SendOptions {
  readonly port: number;
  readonly server?: string;
  /** Envelope sender; '' sends MAIL FROM:<>. */
  readonly from: string;
  readonly to: string;
  /** Client certificate presented after STARTTLS. */
  readonly cert?: { readonly certPath: string; readonly keyPath: string };
  /** Require STARTTLS (swaks --tls); false sends in clear. */
  readonly tls: boolean;
  /** swaks --tls-protocol, e.g. 'tlsv1_2'. */
  readonly tlsProtocol?: string;
  /** swaks --tls-cipher (OpenSSL cipher string, TLS <= 1.2 suites). */
  readonly tlsCipher?: string;
  readonly ehlo?: string;
  readonly timeoutSeconds?: number;
}

export interface Stage {
  /** First word of the client line the reply answers, upper case: EHLO, MAIL, RCPT, DATA, '.', QUIT...; BANNER for the greeting. */
  readonly command: string;
  readonly code: number;
  readonly enhanced: string | null;
  /** The reply's lines joined by '\n', codes included. */
  readonly text: string;
}

export interface SendResult {
  readonly exitCode: number | null;
  /** swaks' stdout then stderr. */
  readonly transcript: string;
  /** Code of the last reply before QUIT: what decided the transaction (0 when no reply came). */
  readonly lastCode: number;
  readonly enhanced: string | null;
  /** Text of that reply. */
  readonly lastText: string;
  readonly stages: Stage[];
  /** Value of the X-Mssante-Test-Id header put in the message, to find it in a mailbox. */
  readonly testId: string;
  /** "TLSv1.3:TLS_AES_256_GCM_SHA384:256" as swaks reports it, null without TLS. */
  readonly tlsSession: string | null;
}

export function sendMail(options: SendOptions): Promise<SendResult> {
  const testId = randomUUID();
  const args = [
    '--server',
    options.server ?? '127.0.0.1',
    '--port',
    String(options.port),
    '--from',
    options.from === '' ? '<>' : options.from,
    '--to',
    options.to,
    '--ehlo',
    options.ehlo ?? 'client.mssante.test',
    '--timeout',
    String(options.timeoutSeconds ?? 20),
    '--add-header',
    `X-Mssante-Test-Id: ${testId}`,
    '--header',
    `Subject: mssante-policyd e2e ${testId}`,
  ];
  if (options.tls) args.push('--tls');
  if (options.cert) args.push('--tls-cert', options.cert.certPath, '--tls-key', options.cert.keyPath);
  if (options.tlsProtocol !== undefined) args.push('--tls-protocol', options.tlsProtocol);
  if (options.tlsCipher !== undefined) args.push('--tls-cipher', options.tlsCipher);

  return new Promise((ok, fail) => {
    const child = spawn('swaks', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    child.once('error', fail);
    child.once('close', (exitCode) => {
      const stages = parseStages(out);
      const decisive = [...stages].reverse().find((s) => s.command !== 'QUIT');
      const tls = /^=== TLS started with cipher (\S+)/m.exec(out);
      ok({
        exitCode,
        transcript: err === '' ? out : `${out}\n${err}`,
        lastCode: decisive?.code ?? 0,
        enhanced: decisive?.enhanced ?? null,
        lastText: decisive?.text ?? '',
        stages,
        testId,
        tlsSession: tls?.[1] ?? null,
      });
    });
  });
}

/**
 * swaks marks client lines " -> " (" ~> " inside TLS) and server lines "<-  " ("<~  "); an
 * unexpected reply is "<** 530 ..." in clear and "<~* 550 ..." inside TLS. Its own errors
 * ("<** Timeout ...") carry no reply code and are left out.
 */
export function parseStages(transcript: string): Stage[] {
  const stages: Stage[] = [];
  let lastClient = 'BANNER';
  let reply: string[] = [];
  for (const line of transcript.split(/\r?\n/)) {
    const client = /^ [-~]> (.*)$/.exec(line);
    if (client) {
      lastClient = (client[1]!.split(' ')[0] ?? '').toUpperCase();
      continue;
    }
    const server = /^<[-~*][ *] (\d{3})([ -])(.*)$/.exec(line);
    if (!server) continue;
    reply.push(`${server[1]}${server[2]}${server[3]}`);
    if (server[2] === ' ') {
      const code = Number(server[1]);
      const enhanced = /^([245]\.\d{1,3}\.\d{1,3})\b/.exec(server[3]!.trimStart());
      stages.push({ command: lastClient, code, enhanced: enhanced?.[1] ?? null, text: reply.join('\n') });
      reply = [];
    }
  }
  return stages;
}
