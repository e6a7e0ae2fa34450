/**
 * HTTPS through an HTTP proxy (HTTPS_PROXY / NO_PROXY, as curl reads them): a CONNECT tunnel made
 * with node:http, then TLS to the list server inside it, so the proxy sees only the host name and
 * the certificate is still verified against --ca-file end to end. No dependency: a CONNECT is one
 * request, and the agent libraries would bring their own proxy-selection rules.
 */
import { request as httpRequest } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';

export interface ProxySettings {
  /** http://[user:password@]host:port of the proxy; null: direct. */
  readonly url: string | null;
  /** NO_PROXY: comma- or space-separated host names, domain suffixes (`.example.fr` or `example.fr`), `*`. */
  readonly noProxy: string | null;
}

export const NO_PROXY_SETTINGS: ProxySettings = Object.freeze({ url: null, noProxy: null });

/** HTTPS_PROXY (or https_proxy) and NO_PROXY (or no_proxy) from an environment. */
export function proxyFromEnv(env: NodeJS.ProcessEnv): ProxySettings {
  const pick = (name: string): string | null => {
    const v = env[name] ?? env[name.toLowerCase()];
    return v === undefined || v.trim() === '' ? null : v.trim();
  };
  return { url: pick('HTTPS_PROXY'), noProxy: pick('NO_PROXY') };
}

/** The proxy URL, checked; throws with the fix on a URL the daemon must not start with. */
export function parseProxyUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new Error(`HTTPS_PROXY ${JSON.stringify(redactProxy(text))} is not a URL (expected http://host:port)`);
  }
  if (url.protocol !== 'http:')
    throw new Error(`HTTPS_PROXY: only an http:// proxy (CONNECT) is supported, not ${url.protocol}//`);
  if (url.hostname === '') throw new Error('HTTPS_PROXY: no host in the proxy URL');
  return url;
}

/** Whether `host` (a URL hostname, lower case) bypasses the proxy under NO_PROXY. */
export function bypassesProxy(host: string, port: number, noProxy: string | null): boolean {
  if (noProxy === null) return false;
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  for (const raw of noProxy.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    const portMatch = /^(.*?)(?::(\d+))?$/.exec(entry.startsWith('[') ? entry.replace(/^\[|\](?=:|$)/g, '') : entry);
    if (portMatch?.[2] !== undefined && Number(portMatch[2]) !== port) continue;
    entry = (portMatch?.[1] ?? entry).replace(/^\*?\./, '');
    if (h === entry || h.endsWith(`.${entry}`)) return true;
  }
  return false;
}

export function redactProxy(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/@]*@/i, (_, scheme: string | undefined) => `${scheme ?? ''}***@`);
}

/**
 * A `createConnection` for https.request: CONNECT host:port through the proxy, then TLS inside
 * the tunnel. Errors come back through the callback (the request emits them); a proxy refusal
 * carries code EPROXY and the proxy's status.
 */
export function tunnelConnector(
  proxy: URL,
  timeoutMs: number,
): (
  options: ConnectionOptions & { host?: string; port?: number | string },
  done: (error: Error | null, socket?: TLSSocket) => void,
) => undefined {
  return (options, done) => {
    const host = options.servername ?? options.host ?? 'localhost';
    const port = Number(options.port ?? 443);
    const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const headers: Record<string, string> = { host: target };
    if (proxy.username !== '' || proxy.password !== '') {
      const credentials = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
      headers['proxy-authorization'] = `Basic ${Buffer.from(credentials).toString('base64')}`;
    }
    let settled = false;
    const finish = (error: Error | null, socket?: TLSSocket): void => {
      if (settled) return;
      settled = true;
      done(error, socket);
    };
    const connect = httpRequest({
      host: proxy.hostname.replace(/^\[|\]$/g, ''),
      port: Number(proxy.port === '' ? 80 : proxy.port),
      method: 'CONNECT',
      path: target,
      headers,
      agent: false,
    });
    connect.once('connect', (res, socket: Socket, head: Buffer) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        const error = Object.assign(
          new Error(
            `proxy ${proxy.host} answered ${res.statusCode ?? '?'} ${res.statusMessage ?? ''} to CONNECT ${target}`.trim(),
          ),
          { code: 'EPROXY' },
        );
        finish(error);
        return;
      }
      if (head.length > 0) {
        // The proxy may not speak before the TLS ClientHello: bytes here mean a confused proxy.
        socket.destroy();
        finish(Object.assign(new Error(`proxy ${proxy.host} sent data before the tunnel was used`), { code: 'EPROXY' }));
        return;
      }
      const { host: _h, port: _p, ...tlsOptions } = options;
      connect.setTimeout(0);
      finish(null, tlsConnect({ ...tlsOptions, socket, ...(isIP(host) === 0 ? { servername: host } : {}) }));
    });
    // The request's own timers do not see this phase's silence: a proxy that never answers is bounded here.
    connect.setTimeout(timeoutMs, () =>
      connect.destroy(
        Object.assign(new Error(`proxy ${proxy.host} did not answer CONNECT within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }),
      ),
    );
    connect.once('error', (e) =>
      finish(
        Object.assign(new Error(`proxy ${proxy.host}: ${e.message}`), { code: (e as NodeJS.ErrnoException).code ?? 'EPROXY' }),
      ),
    );
    connect.end();
    return undefined;
  };
}
