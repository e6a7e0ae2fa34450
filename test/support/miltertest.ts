/**
 * Milter test clients: a scripted MTA side over a real socket (reads the replies it is sent, in
 * order), and a runner for Debian's `miltertest` (an independent implementation of the MTA side,
 * driven by Lua scripts).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ReplyPacket {
  /** The reply command character ('c', 'y', 'O', ...). */
  readonly command: string;
  readonly data: Buffer;
}

export class MilterTestClient {
  private buffer = Buffer.alloc(0);
  private readonly waiters: Array<() => void> = [];
  private ended = false;
  private readonly closedPromise: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    this.closedPromise = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      });
    });
    socket.on('error', () => {
      // Reported through close: a reset is an expected outcome in some tests.
    });
  }

  /** `host:port`, `[v6]:port` or `unix:/path`, as MilterServer.address gives it. */
  static connect(address: string): Promise<MilterTestClient> {
    return new Promise((resolve, reject) => {
      const options: net.NetConnectOpts = address.startsWith('unix:')
        ? { path: address.slice(5) }
        : (() => {
            const colon = address.lastIndexOf(':');
            return { host: address.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(address.slice(colon + 1)) };
          })();
      const socket = net.connect(options);
      socket.once('connect', () => resolve(new MilterTestClient(socket)));
      socket.once('error', reject);
    });
  }

  send(...packets: Buffer[]): void {
    this.socket.write(Buffer.concat(packets));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The next reply packet; rejects if the server closes first or nothing comes within timeoutMs. */
  async readPacket(timeoutMs = 30_000): Promise<ReplyPacket> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.buffer.length >= 4) {
        const length = this.buffer.readUInt32BE(0);
        if (length >= 1 && this.buffer.length >= 4 + length) {
          const packet = this.buffer.subarray(4, 4 + length);
          this.buffer = this.buffer.subarray(4 + length);
          return { command: String.fromCharCode(packet[0]!), data: Buffer.from(packet.subarray(1)) };
        }
      }
      if (this.ended) throw new Error('connection closed before a reply');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no reply in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Bytes received and not yet read as packets. */
  get pendingBytes(): number {
    return this.buffer.length;
  }

  /** Resolves when the server has closed the connection. */
  closed(): Promise<void> {
    return this.closedPromise;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface MiltertestResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `miltertest -s script` with the Lua text given; never rejects on a non-zero exit. */
export function runMiltertest(miltertest: string, script: string, timeoutMs = 30_000): Promise<MiltertestResult> {
  const dir = mkdtempSync(join(tmpdir(), 'miltertest-'));
  const file = join(dir, 'script.lua');
  writeFileSync(file, script);
  return new Promise((resolve) => {
    execFile(miltertest, ['-s', file], { timeout: timeoutMs }, (err, stdout, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      const status =
        err === null
          ? 0
          : typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number'
            ? (err as unknown as { code: number }).code
            : null;
      resolve({ status, stdout, stderr });
    });
  });
}

/** A Lua string literal (miltertest scripts are Lua). */
export function luaString(s: string): string {
  return `"${s.replace(/[\\"\n\r\0]/g, (c) => `\\${c.charCodeAt(0).toString().padStart(3, '0')}`)}"`;
}
