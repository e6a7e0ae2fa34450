/**
 * Where the whitelist bytes come from: a local file or an https:// URL. Every failure comes back
 * as a value with a stable reason id (the caller keeps the previous list and logs); fetch() never
 * rejects. Nothing here logs.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import { resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGunzip, type Gunzip } from 'node:zlib';
import type { LoadFailureAt } from './failures.js';
import { bypassesProxy, NO_PROXY_SETTINGS, parseProxyUrl, tunnelConnector, type ProxySettings } from './proxy.js';
import { redactLocation } from './shown-location.js';

export type SourceFailure = LoadFailureAt<'source'>;

export interface SourceValidators {
  readonly etag: string | null;
  readonly lastModified: string | null;
  readonly mtimeMs: number | null;
  readonly size: number | null;
}

export type FetchOutcome =
  | { readonly kind: 'fetched'; readonly body: Buffer; readonly validators: SourceValidators; readonly attempts: number }
  | { readonly kind: 'not_modified'; readonly validators: SourceValidators; readonly attempts: number }
  | { readonly kind: 'failed'; readonly reason: SourceFailure; readonly detail: string; readonly attempts: number };

export interface SourceOptions {
  /** Largest accepted body, after gzip decoding. */
  readonly maxBytes: number;
  /** Bounds the TCP+TLS connection, and any silence of the server afterwards (a stalled server). */
  readonly connectTimeoutMs: number;
  /** Bounds one whole fetch, retries and backoff included, so a 1 byte/s server cannot hold a refresh. */
  readonly totalTimeoutMs: number;
  /** Extra attempts after network errors, timeouts and 5xx; never after 4xx, TLS or size refusals. */
  readonly retries: number;
  /** First backoff delay; doubles per attempt, with jitter, capped at MAX_RETRY_DELAY_MS. */
  readonly retryBaseDelayMs: number;
  /** PEM bundle that replaces the default roots for https (the ANS endpoint chains to IGC-Santé). */
  readonly caFile: string | null;
  readonly userAgent: string;
  /** HTTPS_PROXY / NO_PROXY (proxyFromEnv); absent: direct. */
  readonly proxy?: ProxySettings;
}

export const DEFAULT_SOURCE_OPTIONS: SourceOptions = Object.freeze({
  maxBytes: 64 * 1024 * 1024,
  connectTimeoutMs: 10_000,
  totalTimeoutMs: 120_000,
  retries: 3,
  retryBaseDelayMs: 2_000,
  caFile: null,
  userAgent: 'mssante-policyd',
  proxy: NO_PROXY_SETTINGS,
});

const MAX_RETRY_DELAY_MS = 30_000;
export const MAX_REDIRECTS = 3;

export interface ListSource {
  /** For logs, HTTP and the state dir: the path, or the URL without userinfo, query or fragment (redactLocation). */
  readonly description: string;
  fetch(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome>;
  /**
   * Several sources (sources.ts): the list the last answering source served was refused as that
   * copy's fault (stale, unverifiable: failures.ts TRY_NEXT_SOURCE); fetch from the sources after it,
   * in order. null: none is left. Absent: one source.
   */
  fetchAfterRefused?(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome | null>;
}

/**
 * A file path, a file: URL or an https: URL. Throws on a location the daemon must not start with:
 * empty, http:, another scheme, or an unreadable CA bundle.
 */
export function createSource(location: string, options: SourceOptions): ListSource {
  checkOptions(options);
  const loc = location.trim();
  if (loc === '') throw new Error('whitelist source is empty: give a file path or an https:// URL');
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(loc)?.[1]?.toLowerCase();
  // "C:\..." style paths have a one-letter "scheme"; a real scheme here has at least two letters.
  if (scheme === undefined || scheme.length < 2) return new FileSource(resolvePath(loc), options);
  if (scheme === 'file') return new FileSource(fileURLToPath(loc), options);
  if (scheme === 'http') {
    throw new Error(
      `whitelist source ${redactLocation(loc)} refused: plain http:// lets anyone on the path withhold updates or replay an older ` +
        'signed list (the signature does not prevent a rollback); use the https:// URL, or a file path',
    );
  }
  if (scheme !== 'https')
    throw new Error(`whitelist source ${redactLocation(loc)}: unsupported scheme "${scheme}:" (use a file path or https://)`);
  let url: URL;
  try {
    url = new URL(loc);
  } catch {
    throw new Error(`whitelist source ${redactLocation(loc)}: not a valid URL`);
  }
  if (url.hostname === '') throw new Error(`whitelist source ${redactLocation(loc)}: no host in the URL`);
  if (options.proxy?.url != null) parseProxyUrl(options.proxy.url);
  if (options.caFile !== null) {
    let pem: string;
    try {
      pem = readFileSync(options.caFile, 'utf8');
    } catch (e) {
      throw new Error(`CA bundle ${options.caFile} cannot be read: ${errorText(e)}`, { cause: e });
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`CA bundle ${options.caFile} holds no PEM certificate`);
  }
  return new HttpsSource(url, options);
}

function checkOptions(o: SourceOptions): void {
  const positive: Array<keyof SourceOptions> = ['maxBytes', 'connectTimeoutMs', 'totalTimeoutMs'];
  for (const k of positive) {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      throw new RangeError(`source option ${k} must be a positive number`);
  }
  if (!Number.isInteger(o.retries) || o.retries < 0) throw new RangeError('source option retries must be an integer >= 0');
  if (!Number.isFinite(o.retryBaseDelayMs) || o.retryBaseDelayMs < 0)
    throw new RangeError('source option retryBaseDelayMs must be >= 0');
}

function failed(reason: SourceFailure, detail: string, attempts: number): FetchOutcome {
  return { kind: 'failed', reason, detail, attempts };
}

function errorCode(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

function errorText(e: unknown): string {
  const code = errorCode(e);
  const message = e instanceof Error ? e.message : String(e);
  return code !== '' && !message.includes(code) ? `${code}: ${message}` : message;
}

function tooLarge(what: string, maxBytes: number): string {
  return `${what} exceeds the limit of ${maxBytes} bytes`;
}

// ---------------------------------------------------------------------------------------------
// File

const READ_CHUNK = 1024 * 1024;

class FileSource implements ListSource {
  readonly description: string;

  constructor(
    private readonly path: string,
    private readonly options: SourceOptions,
  ) {
    this.description = path;
  }

  async fetch(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome> {
    try {
      return await this.read(previous, signal);
    } catch (e) {
      return failed('source_io', `${this.path}: ${errorText(e)}`, 1);
    }
  }

  private async read(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome> {
    const { maxBytes } = this.options;
    if (signal?.aborted) return failed('source_timeout', `${this.path}: aborted by the caller`, 0);
    let st;
    try {
      st = await stat(this.path);
    } catch (e) {
      const code = errorCode(e);
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : errorText(e);
      return failed('source_io', `${this.path}: ${why}`, 1);
    }
    if (!st.isFile()) return failed('source_io', `${this.path}: not a regular file`, 1);
    if (previous !== null && previous.mtimeMs === st.mtimeMs && previous.size === st.size) {
      return { kind: 'not_modified', validators: previous, attempts: 1 };
    }
    if (st.size > maxBytes) return failed('source_too_large', `${this.path}: ${tooLarge(`size ${st.size}`, maxBytes)}`, 1);

    const fh = await open(this.path, 'r');
    try {
      // The validators describe the file actually read: an updater may have renamed a new one in.
      const opened = await fh.stat();
      if (opened.size > maxBytes)
        return failed('source_too_large', `${this.path}: ${tooLarge(`size ${opened.size}`, maxBytes)}`, 1);
      const chunks: Buffer[] = [];
      let total = 0;
      // Read to EOF but never past maxBytes + 1: the file may grow while being read.
      for (;;) {
        if (signal?.aborted) return failed('source_timeout', `${this.path}: aborted by the caller`, 1);
        const want = Math.min(READ_CHUNK, maxBytes + 1 - total);
        const { bytesRead, buffer } = await fh.read(Buffer.allocUnsafe(want), 0, want, total);
        if (bytesRead === 0) break;
        chunks.push(buffer.subarray(0, bytesRead));
        total += bytesRead;
        if (total > maxBytes) return failed('source_too_large', `${this.path}: ${tooLarge('content', maxBytes)}`, 1);
      }
      if (total === 0) return failed('source_empty', `${this.path}: the file is empty`, 1);
      return {
        kind: 'fetched',
        body: Buffer.concat(chunks, total),
        validators: { etag: null, lastModified: null, mtimeMs: opened.mtimeMs, size: opened.size },
        attempts: 1,
      };
    } finally {
      await fh.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// HTTPS

interface AttemptFailure {
  readonly kind: 'failed';
  readonly reason: SourceFailure;
  readonly detail: string;
  readonly retryable: boolean;
}

type Exchange =
  | { readonly kind: 'fetched'; readonly body: Buffer; readonly validators: SourceValidators }
  | { readonly kind: 'not_modified'; readonly validators: SourceValidators }
  | { readonly kind: 'redirect'; readonly status: number; readonly location: string }
  | AttemptFailure;

function attemptFailure(reason: SourceFailure, detail: string, retryable: boolean): AttemptFailure {
  return { kind: 'failed', reason, detail, retryable };
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

// OpenSSL verification codes as node reports them; a configuration problem, so never retried.
const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_CHAIN_TOO_LONG',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'EPROTO',
]);

function classifyError(e: unknown): AttemptFailure {
  const code = errorCode(e);
  if (TLS_VERIFY_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
    return attemptFailure('source_tls', errorText(e), false);
  }
  if (code.startsWith('HPE_')) return attemptFailure('source_http_status', `malformed HTTP response: ${errorText(e)}`, true);
  return attemptFailure('source_unreachable', errorText(e), true);
}

function header(res: IncomingMessage, name: string): string | null {
  const v = res.headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined || s === '' ? null : s;
}

class HttpsSource implements ListSource {
  readonly description: string;

  constructor(
    private readonly url: URL,
    private readonly options: SourceOptions,
  ) {
    this.description = redactLocation(url.href);
  }

  /** A CONNECT tunnel through HTTPS_PROXY, unless NO_PROXY names the host; null: direct. */
  private tunnelFor(url: URL): Agent | null {
    const proxy = this.options.proxy;
    if (proxy?.url == null) return null;
    if (bypassesProxy(url.hostname, Number(url.port === '' ? 443 : url.port), proxy.noProxy)) return null;
    // One agent per request, like agent: false: no socket is kept between downloads.
    const agent = new Agent({ keepAlive: false, maxSockets: 1 });
    agent.createConnection = tunnelConnector(
      parseProxyUrl(proxy.url),
      this.options.connectTimeoutMs,
    ) as unknown as Agent['createConnection'];
    return agent;
  }

  async fetch(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome> {
    try {
      return await this.fetchWithRetries(previous, signal);
    } catch (e) {
      // Not expected: every known path returns a value. Still never reject.
      return failed('source_unreachable', `unexpected: ${errorText(e)}`, 0);
    }
  }

  private async fetchWithRetries(previous: SourceValidators | null, callerSignal?: AbortSignal): Promise<FetchOutcome> {
    const { totalTimeoutMs, retries, caFile } = this.options;
    const started = Date.now();
    const deadline = AbortSignal.timeout(totalTimeoutMs);
    const signal = callerSignal === undefined ? deadline : AbortSignal.any([callerSignal, deadline]);
    const whyAborted = (): string =>
      callerSignal?.aborted === true ? 'aborted by the caller' : `the total deadline of ${totalTimeoutMs} ms was reached`;
    if (signal.aborted) return failed('source_timeout', whyAborted(), 0);

    // Read on every fetch so that a rotated bundle is picked up without a restart.
    let ca: Buffer | undefined;
    if (caFile !== null) {
      try {
        ca = await readFile(caFile);
      } catch (e) {
        return failed('source_tls', `CA bundle ${caFile} cannot be read: ${errorText(e)}`, 0);
      }
    }

    let attempts = 0;
    for (;;) {
      attempts += 1;
      const r = await this.attempt(previous, signal, whyAborted, ca);
      if (r.kind !== 'failed') return { ...r, attempts };
      if (!r.retryable || attempts > retries || signal.aborted) {
        return failed(r.reason, attempts > 1 ? `${r.detail} (after ${attempts} attempts)` : r.detail, attempts);
      }
      const delay = backoffDelay(this.options.retryBaseDelayMs, attempts);
      if (Date.now() - started + delay >= totalTimeoutMs) {
        return failed(
          r.reason,
          `${r.detail} (after ${attempts} attempts; no time left for another before the deadline)`,
          attempts,
        );
      }
      if (!(await sleep(delay, signal))) {
        return failed(r.reason, `${r.detail} (after ${attempts} attempts; ${whyAborted()})`, attempts);
      }
    }
  }

  /** One attempt: a request and the redirects it leads to (at most MAX_REDIRECTS, https only). */
  private async attempt(
    previous: SourceValidators | null,
    signal: AbortSignal,
    whyAborted: () => string,
    ca: Buffer | undefined,
  ): Promise<Exclude<Exchange, { kind: 'redirect' }>> {
    let url = this.url;
    for (let redirects = 0; ; redirects++) {
      const r = await this.exchange(url, previous, signal, whyAborted, ca);
      if (r.kind !== 'redirect') return r;
      if (redirects >= MAX_REDIRECTS) return attemptFailure('source_http_status', `more than ${MAX_REDIRECTS} redirects`, false);
      let next: URL;
      try {
        next = new URL(r.location, url);
      } catch {
        return attemptFailure('source_http_status', `HTTP ${r.status} with an invalid Location`, false);
      }
      if (next.protocol !== 'https:') {
        return attemptFailure('source_http_status', `HTTP ${r.status} redirect to ${next.protocol}// refused: https only`, false);
      }
      url = next;
    }
  }

  private exchange(
    url: URL,
    previous: SourceValidators | null,
    signal: AbortSignal,
    whyAborted: () => string,
    ca: Buffer | undefined,
  ): Promise<Exchange> {
    const { connectTimeoutMs, userAgent } = this.options;
    return new Promise<Exchange>((resolve) => {
      const headers: Record<string, string> = {
        'user-agent': userAgent,
        accept: 'application/xml, text/xml;q=0.9, */*;q=0.1',
        'accept-encoding': 'gzip',
      };
      if (previous?.etag != null) headers['if-none-match'] = previous.etag;
      if (previous?.lastModified != null) headers['if-modified-since'] = previous.lastModified;

      if (signal.aborted) {
        resolve(attemptFailure('source_timeout', whyAborted(), false));
        return;
      }
      let req: ClientRequest;
      try {
        const tunnel = this.tunnelFor(url);
        req = request(url, { method: 'GET', headers, agent: tunnel ?? false, ...(ca === undefined ? {} : { ca }) });
      } catch (e) {
        // E.g. a stored validator that is not a legal header value.
        resolve(attemptFailure('source_unreachable', `request not sent: ${errorText(e)}`, false));
        return;
      }

      let settled = false;
      let gunzip: Gunzip | null = null;
      let res: IncomingMessage | null = null;
      // The connect timer bounds TCP + TLS handshake; after it, socket silence bounds a stalled server.
      const connectTimer = setTimeout(
        () => finish(attemptFailure('source_timeout', `no TLS connection to ${url.host} within ${connectTimeoutMs} ms`, true)),
        connectTimeoutMs,
      );
      const onAbort = (): void => finish(attemptFailure('source_timeout', whyAborted(), false));
      const finish = (r: Exchange): void => {
        if (settled) return;
        settled = true;
        clearTimeout(connectTimer);
        signal.removeEventListener('abort', onAbort);
        gunzip?.destroy();
        res?.destroy();
        req.destroy();
        resolve(r);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      // Error listeners stay attached after settling: a late error must never go unhandled.
      req.on('error', (e) => finish(classifyError(e)));
      req.on('socket', (socket) => {
        socket.once('secureConnect', () => {
          clearTimeout(connectTimer);
          socket.setTimeout(connectTimeoutMs, () =>
            finish(attemptFailure('source_timeout', `the server sent nothing for ${connectTimeoutMs} ms`, true)),
          );
        });
      });

      req.on('response', (response) => {
        res = response;
        const status = response.statusCode ?? 0;
        if (status === 200) {
          this.readBody(response, url, finish, (g) => (gunzip = g));
          return;
        }
        response.on('error', (e) => finish(classifyError(e)));
        if (REDIRECT_STATUSES.has(status)) {
          const location = header(response, 'location');
          finish(
            location === null
              ? attemptFailure('source_http_status', `HTTP ${status} without a Location`, false)
              : { kind: 'redirect', status, location },
          );
          return;
        }
        if (status === 304) {
          // A 304 to a request that was not conditional is a server fault, not "unchanged".
          if (previous === null || (previous.etag === null && previous.lastModified === null)) {
            finish(attemptFailure('source_http_status', 'HTTP 304 to an unconditional request', false));
            return;
          }
          finish({
            kind: 'not_modified',
            validators: {
              etag: header(response, 'etag') ?? previous.etag,
              lastModified: header(response, 'last-modified') ?? previous.lastModified,
              mtimeMs: null,
              size: previous.size,
            },
          });
          return;
        }
        finish(attemptFailure('source_http_status', `HTTP ${status}`, status >= 500));
      });
      req.end();
    });
  }

  /** Streams a 200 body; the byte limit applies to the wire and to the decoded bytes. */
  private readBody(res: IncomingMessage, url: URL, done: (r: Exchange) => void, setGunzip: (g: Gunzip) => void): void {
    const { maxBytes } = this.options;
    let wire = 0;
    let decoded = 0;
    // The connection closed before the declared length or the last chunk: never use a truncated body.
    const truncated = (): AttemptFailure =>
      attemptFailure('source_unreachable', `connection closed after ${wire} body bytes, before the body was complete`, true);
    res.on('error', (e) => done(res.complete ? classifyError(e) : truncated()));
    res.on('close', () => {
      if (!res.complete) done(truncated());
    });
    const declaredText = header(res, 'content-length');
    const declared = declaredText !== null && /^\d+$/.test(declaredText) ? Number(declaredText) : null;
    if (declared !== null && declared > maxBytes) {
      done(attemptFailure('source_too_large', tooLarge(`Content-Length ${declared}`, maxBytes), false));
      return;
    }
    const encoding = (header(res, 'content-encoding') ?? 'identity').trim().toLowerCase();
    if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip') {
      done(attemptFailure('source_io', `unsupported Content-Encoding "${encoding}"`, false));
      return;
    }
    const chunks: Buffer[] = [];
    const take = (chunk: Buffer): boolean => {
      decoded += chunk.length;
      if (decoded > maxBytes) {
        done(attemptFailure('source_too_large', tooLarge(encoding === 'identity' ? 'body' : 'decoded body', maxBytes), false));
        return false;
      }
      chunks.push(chunk);
      return true;
    };
    const complete = (): void => {
      if (decoded === 0) {
        done(attemptFailure('source_empty', `${url.host} answered 200 with an empty body`, false));
        return;
      }
      done({
        kind: 'fetched',
        body: Buffer.concat(chunks, decoded),
        validators: { etag: header(res, 'etag'), lastModified: header(res, 'last-modified'), mtimeMs: null, size: decoded },
      });
    };

    let gunzip: Gunzip | null = null;
    if (encoding !== 'identity') {
      gunzip = createGunzip();
      setGunzip(gunzip);
      gunzip.on('data', (c: Buffer) => {
        if (!take(c)) gunzip?.destroy();
      });
      gunzip.on('error', (e) => done(attemptFailure('source_io', `gzip decoding failed: ${errorText(e)}`, false)));
      gunzip.on('end', complete);
    }
    res.on('data', (c: Buffer) => {
      wire += c.length;
      if (wire > maxBytes) {
        done(attemptFailure('source_too_large', tooLarge('body', maxBytes), false));
        return;
      }
      if (gunzip === null) take(c);
      else gunzip.write(c);
    });
    res.on('end', () => {
      if (!res.complete) return;
      if (gunzip === null) complete();
      else gunzip.end();
    });
  }
}

/** Exponential, capped, with "equal jitter": half fixed, half random, so retries of many daemons spread. */
function backoffDelay(baseMs: number, attempt: number): number {
  const ceiling = Math.min(MAX_RETRY_DELAY_MS, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/** Resolves true after ms, false as soon as the signal aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(false);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
