/**
 * Shared helpers of the fault-injection suite (test/system/faults/): signed test lists, the daemon's HTTP
 * side read as data (list in force, metrics, logs), a witness that keeps asking valid questions on
 * both frontends while something else goes wrong, raw sockets for protocol abuse, and ways to make
 * a state directory unwritable without root-only mounts.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  encodeConnect,
  encodeHelo,
  encodeMacro,
  encodeMail,
  encodeOptneg,
  encodeRaw,
  SMFIC,
} from '../../src/frontends/milter/codec.js';
import type { WhitelistStatus } from '../../src/http/server.js';
import { freePort, startDaemon, type DaemonHandle, type DaemonOptions } from './daemon.js';
import { MilterTestClient } from './miltertest.js';
import { PolicyClient, postfixRequest } from './policy-client.js';
import { operatorSubject, subjectRfc2253, TestPki, type Issued, type IssueOptions } from './pki.js';
import { buildListXml, signList } from './xmlsec.js';

export const OP1_CN = 'mx.op1.test';
export const OP2_CN = 'smtp.op2.test';
export const OP1_DN = subjectRfc2253(operatorSubject(OP1_CN, 'GIP OP1'));
export const OP2_DN = subjectRfc2253(operatorSubject(OP2_CN, 'GIP OP2', '1750048886'));

export type ListEntry = { readonly nom: string; readonly dn: string };

/** Two operators and 20 filler domains: enough that the shrink guard has something to guard. */
export const BASE_ENTRIES: readonly ListEntry[] = [
  { nom: 'op1.mssante.test', dn: OP1_DN },
  { nom: 'op2.mssante.test', dn: OP2_DN },
  ...Array.from({ length: 20 }, (_, i) => ({ nom: `filler${i}.mssante.test`, dn: OP2_DN })),
];

/** A valid mail: OP1's certificate sending from OP1's domain. */
export const VALID = { cn: OP1_CN, sender: 'dr.x@op1.mssante.test' } as const;

/** `YYYY-MM-DDTHH:MM:SSZ`, `days` from now. */
export function isoDays(days: number): string {
  return new Date(Date.now() + days * 86_400_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** openssl -startdate/-enddate form, `days` from now. */
export function opensslDays(days: number): string {
  return new Date(Date.now() + days * 86_400_000).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
}

export interface ListSigner {
  readonly pki: TestPki;
  /** The IGC-Santé-like CA that issues every signer here (all with CN `SIGNER_CN`, as the ANS keeps alb.mssante.fr). */
  readonly ca: Issued;
  /** `--signer-ca <ca> --signer-cn <SIGNER_CN>`: trusts every signer issueSigner() makes, and nothing else of the CA. */
  readonly trustArgs: readonly string[];
  /** The default signer, valid from 400 days ago to a year from now. */
  readonly signer: Issued;
  /** A list in the ANS layout, signed by xmlsec1 with the ANS profile (by `by`, default the signer). */
  sign(entries: readonly ListEntry[], generatedAt: string, by?: Issued): string;
  /** Another signer from the same CA, e.g. one valid only in the future. */
  issueSigner(name: string, validity: Pick<IssueOptions, 'notBefore' | 'notAfter'>): Issued;
  cleanup(): void;
}

/** The CN of every list signer createListSigner() issues. */
export const SIGNER_CN = 'liste.test';

export function createListSigner(): ListSigner {
  const pki = new TestPki();
  const ca = pki.createCa(
    'list-ca',
    [
      ['C', 'FR'],
      ['O', 'TEST-SANTE'],
      ['CN', 'AC TEST ELEMENTAIRE ORGANISATIONS'],
    ],
    {
      notBefore: opensslDays(-800),
      notAfter: opensslDays(3650),
    },
  );
  const issueSigner = (name: string, validity: Pick<IssueOptions, 'notBefore' | 'notAfter'>): Issued =>
    pki.issue(
      name,
      [
        ['C', 'FR'],
        ['O', 'TEST ANS'],
        ['CN', SIGNER_CN],
      ],
      ca,
      { usage: 'signing', ...validity },
    );
  const signer = issueSigner('signer', { notBefore: opensslDays(-400), notAfter: opensslDays(365) });
  return {
    pki,
    ca,
    trustArgs: ['--signer-ca', ca.certPath, '--signer-cn', SIGNER_CN],
    signer,
    issueSigner,
    sign: (entries, generatedAt, by = signer) =>
      signList(buildListXml(entries, generatedAt), { keyPath: by.keyPath, certPath: by.certPath }),
    cleanup: () => rmSync(pki.dir, { recursive: true, force: true }),
  };
}

/** A fresh temporary directory (removed by the caller, or left in /tmp for post-mortems). */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `mssante-faults-${prefix}-`));
}

/** An unsigned list file (for daemons started with --allow-unsigned) in a fresh directory. */
export function unsignedListFile(entries: readonly ListEntry[] = BASE_ENTRIES, generatedAt: string = isoDays(-1)): string {
  const file = join(tempDir('list'), 'list.xml');
  writeFileSync(file, buildListXml(entries, generatedAt));
  return file;
}

/** Writes `body` to `path` through a rename, so that the file source never sees half of it. */
export function replaceFile(path: string, body: string | Buffer): void {
  writeFileSync(`${path}.tmp`, body);
  renameSync(`${path}.tmp`, path);
}

// ---------------------------------------------------------------------------------------------
// The daemon's HTTP side, read as data.

export async function httpGet(
  daemon: Pick<DaemonHandle, 'httpAddress'>,
  path: string,
): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://${daemon.httpAddress}${path}`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, text: await res.text() };
}

/** GET /v1/whitelist: the list in force and the last load outcome. */
export async function listInForce(daemon: Pick<DaemonHandle, 'httpAddress'>): Promise<WhitelistStatus> {
  const { status, text } = await httpGet(daemon, '/v1/whitelist');
  if (status !== 200) throw new Error(`/v1/whitelist answered ${status}: ${text.slice(0, 200)}`);
  return JSON.parse(text) as WhitelistStatus;
}

export type Samples = ReadonlyArray<{
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}>;

/** GET /metrics, parsed (text format: `name{a="b",...} value`). */
export async function scrape(daemon: Pick<DaemonHandle, 'httpAddress'>): Promise<Samples> {
  const { status, text } = await httpGet(daemon, '/metrics');
  if (status !== 200) throw new Error(`/metrics answered ${status}`);
  const samples: Array<Samples[number]> = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Sum of the samples of `name` (prefix added) whose labels include `labels`. */
export function metric(samples: Samples, name: string, labels: Readonly<Record<string, string>> = {}): number {
  const full = name.startsWith('mssante_policyd_') ? name : `mssante_policyd_${name}`;
  let sum = 0;
  for (const s of samples) {
    if (s.name !== full) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/** One metric, scraped now. */
export async function metricNow(
  daemon: Pick<DaemonHandle, 'httpAddress'>,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  return metric(await scrape(daemon), name, labels);
}

/** The daemon's JSON log records whose `event` is `event` (or every record with a msg matching a RegExp). */
export function logRecords(daemon: Pick<DaemonHandle, 'logs'>, event: string | RegExp): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of daemon.logs) {
    if (!line.startsWith('{')) continue;
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (typeof event === 'string' ? record.event === event : event.test(String(record.msg))) out.push(record);
  }
  return out;
}

/** Polls `probe` until it returns something other than null/undefined/false; throws with `what` after timeoutMs. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  timeoutMs = 20_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const value = await probe();
      if (value !== null && value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline)
      throw new Error(
        `timed out waiting for ${what}${lastError === null ? '' : ` (last error: ${(lastError as Error).message})`}`,
      );
    await sleep(everyMs);
  }
}

/** SIGHUP, then the outcome of that load (a new success or failure time on /v1/whitelist). */
export async function reloadAndWait(daemon: DaemonHandle, timeoutMs = 180_000): Promise<WhitelistStatus> {
  const before = await listInForce(daemon);
  daemon.signal('SIGHUP');
  return waitFor(
    'the reload to finish',
    async () => {
      const now = await listInForce(daemon);
      return now.lastSuccessAt !== before.lastSuccessAt || now.lastFailureAt !== before.lastFailureAt ? now : null;
    },
    timeoutMs,
  );
}

/**
 * SIGHUP, then asks a valid question on `client` again and again until the load's outcome shows on
 * /v1/whitelist: proves that answers keep flowing while the list is fetched, verified and parsed.
 */
export async function reloadWhileAsking(
  daemon: DaemonHandle,
  client: PolicyClient,
  timeoutMs = 180_000,
): Promise<{ status: WhitelistStatus; answersDuringLoad: number; wrong: string[] }> {
  const before = await listInForce(daemon);
  daemon.signal('SIGHUP');
  const deadline = Date.now() + timeoutMs;
  let answersDuringLoad = 0;
  const wrong: string[] = [];
  for (;;) {
    const now = await listInForce(daemon);
    if (now.lastSuccessAt !== before.lastSuccessAt || now.lastFailureAt !== before.lastFailureAt)
      return { status: now, answersDuringLoad, wrong };
    if (Date.now() > deadline) throw new Error(`the reload did not finish within ${timeoutMs} ms`);
    const action = await client.ask(postfixRequest(VALID.cn, VALID.sender)).catch((e: Error) => `error: ${e.message}`);
    answersDuringLoad++;
    if (action !== 'DUNNO') wrong.push(action);
    await sleep(20);
  }
}

/** True while the process exists (signal 0 probes without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Valid questions on both frontends.

/** A verified Postfix-style TLS session as Milter macros (Postfix gives the CN only). */
export function milterTlsMacros(cn: string): Array<[string, string]> {
  return [
    ['{tls_version}', 'TLSv1.3'],
    ['{cipher}', 'TLS_AES_256_GCM_SHA384'],
    ['{cipher_bits}', '256'],
    ['{cert_subject}', cn],
    ['{cert_issuer}', 'AC TEST ELEMENTAIRE ORGANISATIONS'],
  ];
}

/** Every event a v6 MTA can send, every protocol step it can skip. */
const ALL_ACTIONS = 0x1ff;
const ALL_PROTOCOL_V6 = 0x1fffff;

/** A negotiated Milter connection through CONNECT and HELO, as Postfix opens one. */
export async function milterSession(address: string, cn: string): Promise<MilterTestClient> {
  const client = await MilterTestClient.connect(address);
  client.send(encodeOptneg(6, ALL_ACTIONS, ALL_PROTOCOL_V6));
  const optneg = await client.readPacket();
  if (optneg.command !== 'O') throw new Error(`milter negotiation answered ${optneg.command}`);
  client.send(
    encodeMacro('C', [['j', 'mx.receiver.test']]),
    encodeConnect('mx.sender.test', 'inet', 41822, '192.0.2.25'),
    encodeMacro('H', milterTlsMacros(cn)),
    encodeHelo('mx.sender.test'),
  );
  return client;
}

/** MAIL FROM on a negotiated session: 'CONTINUE' (pass) or the SMTP reply line; ABORT after it, like Postfix. */
export async function milterMail(client: MilterTestClient, sender: string): Promise<string> {
  client.send(
    encodeMacro('M', [
      ['i', 'FAULTS'],
      ['{mail_addr}', sender],
    ]),
    encodeMail([`<${sender}>`]),
  );
  const reply = await client.readPacket();
  client.send(encodeRaw(SMFIC.ABORT));
  if (reply.command === 'c') return 'CONTINUE';
  if (reply.command === 'y') return reply.data.toString('ascii').replace(/\0$/, '');
  return `command ${reply.command}`;
}

/** One whole Milter session on a fresh connection: the MAIL FROM answer. */
export async function milterAskOnce(address: string, cn: string, sender: string): Promise<string> {
  const client = await milterSession(address, cn);
  try {
    return await milterMail(client, sender);
  } finally {
    client.send(encodeRaw(SMFIC.QUIT));
    client.destroy();
  }
}

export interface WitnessReport {
  readonly policyAnswers: number;
  readonly milterAnswers: number;
  /** Every answer that was not the expected pass, with where it came from. */
  readonly wrong: readonly string[];
}

/**
 * Asks a valid question every `everyMs` on one persistent policy connection (and one Milter
 * session when `milter` is given), opened before the trouble starts, and records every answer that
 * is not a pass — the "answered throughout" half of each fault test.
 */
export async function startWitness(
  daemon: Pick<DaemonHandle, 'policyAddress' | 'milterAddress'>,
  everyMs = 20,
): Promise<{ snapshot(): WitnessReport; stop(): Promise<WitnessReport> }> {
  const policy = await PolicyClient.connect(daemon.policyAddress);
  const milter = daemon.milterAddress === null ? null : await milterSession(daemon.milterAddress, VALID.cn);
  let running = true;
  let policyAnswers = 0;
  let milterAnswers = 0;
  const wrong: string[] = [];
  const policyLoop = (async () => {
    while (running) {
      const action = await policy.ask(postfixRequest(VALID.cn, VALID.sender)).catch((e: Error) => `error: ${e.message}`);
      policyAnswers++;
      if (action !== 'DUNNO') wrong.push(`policy: ${action}`);
      if (action.startsWith('error:')) return;
      await sleep(everyMs);
    }
  })();
  const milterLoop = (async () => {
    while (running && milter !== null) {
      const answer = await milterMail(milter, VALID.sender).catch((e: Error) => `error: ${e.message}`);
      milterAnswers++;
      if (answer !== 'CONTINUE') wrong.push(`milter: ${answer}`);
      if (answer.startsWith('error:')) return;
      await sleep(everyMs);
    }
  })();
  return {
    snapshot: () => ({ policyAnswers, milterAnswers, wrong: [...wrong] }),
    async stop() {
      running = false;
      await Promise.all([policyLoop, milterLoop]);
      policy.close();
      milter?.destroy();
      return { policyAnswers, milterAnswers, wrong };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Raw sockets for protocol abuse.

export interface RawConnection {
  readonly socket: net.Socket;
  /** Every byte the server sent. */
  received(): Buffer;
  /** Resolves when the socket is fully closed: `serverEnded` when the server sent FIN, `error` (e.g. ECONNRESET) on a reset. */
  readonly closed: Promise<CloseOutcome>;
  isClosed(): boolean;
}

export interface CloseOutcome {
  readonly serverEnded: boolean;
  readonly error: string | null;
}

/** A plain TCP connection. `socket.end()` half-closes our side and still reads until the server closes. */
export function connectRaw(address: string): Promise<RawConnection> {
  const colon = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)) });
    const chunks: Buffer[] = [];
    let isClosed = false;
    let serverEnded = false;
    let error: string | null = null;
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      serverEnded = true;
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    const closed = new Promise<CloseOutcome>((ok) => {
      socket.on('close', () => {
        isClosed = true;
        ok({ serverEnded, error });
      });
    });
    socket.once('connect', () => resolve({ socket, received: () => Buffer.concat(chunks), closed, isClosed: () => isClosed }));
    socket.once('error', reject);
  });
}

/** Resolves with the close outcome, or rejects after timeoutMs: every abuse must end boundedly. */
export async function closedWithin(conn: RawConnection, timeoutMs: number, what: string): Promise<CloseOutcome> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      conn.closed,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what}: the daemon did not close the connection within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Deterministic pseudo-random bytes (xorshift32), so that a failing case can be replayed. */
export function pseudoRandomBytes(seed: number, length: number): Buffer {
  let x = seed >>> 0 || 1;
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// An unwritable state directory, without root-only mounts.

export interface Unwritable {
  /** How it was done: 'chmod' (not root), 'chattr' (root: the immutable flag) or 'file' (the directory moved away, a file in its place). */
  readonly how: 'chmod' | 'chattr' | 'file';
  restore(): void;
}

/**
 * Makes `dir` refuse new files. Root ignores mode bits, so as root the immutable attribute is used
 * (chattr +i: even root gets EPERM); where the file system has no such attribute, the directory is
 * moved aside and a plain file takes its path (ENOTDIR/EEXIST on every write).
 */
export function makeUnwritable(dir: string): Unwritable {
  if (process.getuid?.() !== 0) {
    chmodSync(dir, 0o555);
    return { how: 'chmod', restore: () => chmodSync(dir, 0o750) };
  }
  try {
    execFileSync('chattr', ['+i', dir], { stdio: 'pipe' });
    return { how: 'chattr', restore: () => execFileSync('chattr', ['-i', dir], { stdio: 'pipe' }) };
  } catch {
    const aside = `${dir}.aside`;
    renameSync(dir, aside);
    writeFileSync(dir, 'not a directory\n');
    return {
      how: 'file',
      restore: () => {
        rmSync(dir, { force: true });
        renameSync(aside, dir);
      },
    };
  }
}

/** Sets a resource limit of a running process (util-linux prlimit), e.g. `fsize` for "disk full". */
export function prlimit(pid: number, resource: 'fsize', bytes: number): void {
  execFileSync('prlimit', ['--pid', String(pid), `--${resource}=${bytes}:${bytes}`], { stdio: 'pipe' });
}

// ---------------------------------------------------------------------------------------------
// A daemon watched before it is ready (no usable list yet).

export interface UnreadyDaemon {
  readonly policyAddress: string;
  readonly milterAddress: string;
  readonly httpAddress: string;
  /** Resolves once /readyz says 200 (startDaemon's own wait). */
  readonly ready: Promise<DaemonHandle>;
  /** The daemon's pid, found in /proc by its unique state directory (the handle only comes with readiness). */
  pid(): Promise<number>;
}

/** startDaemon on fixed free ports, without waiting for readiness: the 451/503 phase can be probed. */
export async function startDaemonUnready(options: DaemonOptions & { readonly stateDir: string }): Promise<UnreadyDaemon> {
  const [policy, milter, http] = [await freePort(), await freePort(), await freePort()];
  const listen = { policy: `127.0.0.1:${policy}`, milter: `127.0.0.1:${milter}`, http: `127.0.0.1:${http}` };
  const ready = startDaemon({ ...options, milter: true, listen });
  // Keeps an early failure from being an unhandled rejection; the caller awaits `ready` itself.
  ready.catch(() => undefined);
  return {
    policyAddress: listen.policy,
    milterAddress: listen.milter,
    httpAddress: listen.http,
    ready,
    pid: () => waitFor('the daemon process', () => pidByArgument(options.stateDir), 10_000),
  };
}

/** The pid of a live `serve` process whose command line holds `argument`, or null. */
export function pidByArgument(argument: string): number | null {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let args: string[];
    try {
      args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (args.includes('serve') && args.includes(argument)) return Number(entry);
  }
  return null;
}
