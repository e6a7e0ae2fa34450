/** A Postfix-like policy client: one persistent connection, one request at a time, replies in order. */
import { createConnection, type Socket } from 'node:net';
import { encodeRequest, PolicyDecoder } from '../../src/frontends/policy/codec.js';
import { DEFAULT_POLICY_LIMITS } from '../../src/listener-defaults.js';

export class PolicyClient {
  private readonly decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
  private readonly waiting: Array<{ resolve: (action: string) => void; reject: (e: Error) => void }> = [];
  private closedError: Error | null = null;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk) => {
      for (const reply of this.decoder.push(chunk)) this.waiting.shift()?.resolve(reply.get('action') ?? '');
    });
    const fail = (e: Error): void => {
      this.closedError = e;
      for (const w of this.waiting.splice(0)) w.reject(e);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  static connect(address: string): Promise<PolicyClient> {
    const colon = address.lastIndexOf(':');
    return new Promise((resolve, reject) => {
      const socket = createConnection(Number(address.slice(colon + 1)), address.slice(0, colon));
      socket.once('connect', () => resolve(new PolicyClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Sends one request; resolves with its `action=` value. */
  ask(attributes: Record<string, string>): Promise<string> {
    if (this.closedError !== null) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(encodeRequest(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', ...attributes })));
    });
  }

  close(): void {
    this.socket.end();
  }
}

/** A one-shot question on a fresh connection. */
export async function askOnce(address: string, attributes: Record<string, string>): Promise<string> {
  const client = await PolicyClient.connect(address);
  try {
    return await client.ask(attributes);
  } finally {
    client.close();
  }
}

/** A listed, verified Postfix identity asking for `sender`. */
export function postfixRequest(cn: string, sender: string): Record<string, string> {
  return {
    encryption_protocol: 'TLSv1.3',
    encryption_cipher: 'TLS_AES_256_GCM_SHA384',
    ccert_subject: cn,
    sender,
    recipient: 'dest@op-recv.mssante.fr',
    client_address: '127.0.0.1',
    queue_id: 'TEST',
  };
}
