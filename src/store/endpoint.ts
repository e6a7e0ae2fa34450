/**
 * The --store URL: where the store is and how to reach it, without its password (kept out of argv,
 * logs and /v1). No client library here: config.ts checks the URL with it at start-up.
 */

export interface StoreEndpoint {
  readonly tls: boolean;
  readonly host: string;
  readonly port: number;
  readonly username: string | null;
  readonly db: number;
}

/**
 * redis://[user@]host[:port][/db] or rediss://... A password in the URL is refused: it would sit in
 * argv (ps), the config file and --print-config; it comes from a file or the environment instead.
 */
export function parseStoreUrl(text: string): StoreEndpoint {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`--store ${JSON.stringify(text)}: not a URL (redis://host:port or rediss://host:port)`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error('--store: only redis:// and rediss:// URLs');
  if (url.password !== '')
    throw new Error(
      '--store: a password in the URL is refused (it would show in ps and logs); use --store-password-file or MSSANTE_POLICYD_STORE_PASSWORD',
    );
  if (url.hostname === '') throw new Error('--store: no host');
  if (url.search !== '' || url.hash !== '') throw new Error('--store: no query or fragment');
  const path = url.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d{1,2}$/.test(path))
    throw new Error(`--store: the path is a database number, got ${JSON.stringify(path)}`);
  return {
    tls: url.protocol === 'rediss:',
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? 6379 : Number(url.port),
    username: url.username === '' ? null : decodeURIComponent(url.username),
    db: path === '' ? 0 : Number(path),
  };
}

/** The URL as logs and /v1 may show it: no credentials at all. */
export function describeStore(endpoint: StoreEndpoint): string {
  const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
  return `${endpoint.tls ? 'rediss' : 'redis'}://${host}:${endpoint.port}/${endpoint.db}`;
}
