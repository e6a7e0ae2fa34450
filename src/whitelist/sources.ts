/**
 * Several list sources in order (`--whitelist` repeated: the ANS, the DSFT, a peer MX's mirror at
 * GET /v1/whitelist/signed), and the plain http:// source a mirror on a private network is.
 *
 * Failover: a fetch tries the sources in order and takes the first that answers (a list, or
 * not-modified); a source that fails (network, HTTP status, size, file) passes the turn to the next.
 * So does a source whose list the life cycle then refuses as that copy's fault (older than the list in
 * force, too old, not well-formed, a signature that does not verify: failures.ts TRY_NEXT_SOURCE),
 * through fetchAfterRefused; a list refused for what it says (shrink, rebind) waits for a human.
 * The transport carries no trust: whatever source the bytes come from, the life cycle verifies the
 * signature, the guards (no older list than the one in force, shrink, rebinding) and --max-list-age.
 */
import { request, type IncomingMessage } from 'node:http';
import type { LoadFailureAt } from './failures.js';
import { createSource, type FetchOutcome, type ListSource, type SourceOptions, type SourceValidators } from './source.js';

/** A URL for logs and /v1/whitelist: no credentials, no query. */
function describeUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

function failed(reason: LoadFailureAt<'source'>, detail: string): FetchOutcome {
  return { kind: 'failed', reason, detail, attempts: 1 };
}

/**
 * http:// (a mirror): one GET, conditional on the ETag it gave last, bounded in size and time. No
 * redirect, no retry (the next source is the retry), no gzip.
 */
export class HttpMirrorSource implements ListSource {
  readonly description: string;

  constructor(
    private readonly url: URL,
    private readonly options: SourceOptions,
  ) {
    if (url.username !== '' || url.password !== '') throw new Error('whitelist source: no credentials in an http:// URL');
    this.description = describeUrl(url);
  }

  fetch(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome> {
    const { maxBytes, totalTimeoutMs } = this.options;
    return new Promise((resolve) => {
      let settled = false;
      const finish = (outcome: FetchOutcome): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        resolve(outcome);
      };
      const headers: Record<string, string> = { 'user-agent': this.options.userAgent, accept: 'application/xml' };
      if (previous?.etag != null) headers['if-none-match'] = previous.etag;
      const req = request(this.url, { method: 'GET', headers, signal }, (res: IncomingMessage) => {
        const validators: SourceValidators = {
          etag: typeof res.headers.etag === 'string' ? res.headers.etag : null,
          lastModified: typeof res.headers['last-modified'] === 'string' ? res.headers['last-modified'] : null,
          mtimeMs: null,
          size: null,
        };
        if (res.statusCode === 304 && previous !== null) return finish({ kind: 'not_modified', validators, attempts: 1 });
        if (res.statusCode !== 200) return finish(failed('source_http_status', `${this.description}: HTTP ${res.statusCode}`));
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxBytes)
          return finish(failed('source_too_large', `${this.description}: ${declared} bytes declared`));
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) finish(failed('source_too_large', `${this.description}: more than ${maxBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          if (size === 0) return finish(failed('source_empty', `${this.description}: empty body`));
          finish({ kind: 'fetched', body: Buffer.concat(chunks), validators, attempts: 1 });
        });
        res.on('error', (e) => finish(failed('source_unreachable', `${this.description}: ${e.message}`)));
      });
      req.on('error', (e) =>
        finish(failed(signal?.aborted === true ? 'source_timeout' : 'source_unreachable', `${this.description}: ${e.message}`)),
      );
      const timer = setTimeout(
        () => finish(failed('source_timeout', `${this.description}: no list within ${totalTimeoutMs} ms`)),
        totalTimeoutMs,
      );
      timer.unref();
      req.end();
    });
  }
}

/** One source from a --whitelist value: http:// here, anything else by source.ts. */
export function createOneSource(location: string, options: SourceOptions): ListSource {
  const loc = location.trim();
  if (/^http:\/\//i.test(loc)) {
    let url: URL;
    try {
      url = new URL(loc);
    } catch {
      throw new Error(`whitelist source ${JSON.stringify(loc.slice(0, 200))}: not a valid URL`);
    }
    return new HttpMirrorSource(url, options);
  }
  return createSource(loc, options);
}

/** The ordered sources; fetch() takes the first that answers. `lastUsed` says which one did. */
export class FailoverSource implements ListSource {
  readonly description: string;
  /** 1-based position of the source the last successful fetch came from; 0: none yet. */
  private lastPosition = 0;
  /** Position whose answer the validators came from: they are only sent back to that source. */
  private validatorsFrom = 0;

  constructor(private readonly sources: readonly ListSource[]) {
    if (sources.length === 0) throw new Error('no whitelist source');
    this.description = sources.map((s) => s.description).join(' | ');
  }

  get lastUsed(): { readonly position: number; readonly description: string } | null {
    return this.lastPosition === 0
      ? null
      : { position: this.lastPosition, description: this.sources[this.lastPosition - 1]!.description };
  }

  fetch(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome> {
    return this.fetchFrom(0, previous, signal);
  }

  /** The source after the one that answered last, and on: its list was refused (stale, unverifiable). */
  async fetchAfterRefused(previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome | null> {
    if (this.lastPosition === 0 || this.lastPosition >= this.sources.length || signal?.aborted === true) return null;
    return this.fetchFrom(this.lastPosition, previous, signal);
  }

  private async fetchFrom(start: number, previous: SourceValidators | null, signal?: AbortSignal): Promise<FetchOutcome> {
    const failures: string[] = [];
    let last: FetchOutcome | null = null;
    for (let i = start; i < this.sources.length; i++) {
      const source = this.sources[i]!;
      const position = i + 1;
      const outcome = await source.fetch(position === this.validatorsFrom ? previous : null, signal);
      if (outcome.kind !== 'failed') {
        this.lastPosition = position;
        this.validatorsFrom = position;
        return outcome;
      }
      last = outcome;
      failures.push(`${source.description}: ${outcome.reason}`);
      if (signal?.aborted === true) break;
    }
    if (last === null || last.kind !== 'failed') return failed('source_unreachable', 'no source tried');
    // The last reason (a bounded id) with every source's: /v1/whitelist says why each one failed.
    return this.sources.length - start === 1
      ? last
      : { ...last, detail: `every source failed: ${failures.join('; ')} (last: ${last.detail})` };
  }
}

/** The --whitelist values as one source: a single one as itself, several as a FailoverSource. */
export function createSources(locations: readonly string[], options: SourceOptions): FailoverSource {
  return new FailoverSource(locations.map((l) => createOneSource(l, options)));
}
