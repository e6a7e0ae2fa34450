/**
 * The HTTP listener's Host allow-list, against DNS rebinding: a page of evil.example whose name
 * now resolves to 127.0.0.1 must not read /metrics or /v1/whitelist from the operator's browser.
 */

/** Always answered: a browser can be made to send these only to the host itself. */
const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'] as const;

/** Longest Host header looked at; a longer one is refused unread. */
export const MAX_HOST_LENGTH = 300;

/**
 * Host header → [host, port or null], host lower-cased without a trailing dot, IPv6 in brackets;
 * null when it is not `name`, `name:port`, `[v6]` or `[v6]:port`.
 */
export function splitHostHeader(value: string): readonly [string, string | null] | null {
  if (value.length === 0 || value.length > MAX_HOST_LENGTH) return null;
  let host: string;
  let rest: string;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0) return null;
    host = value.slice(0, end + 1);
    rest = value.slice(end + 1);
  } else {
    const colon = value.indexOf(':');
    host = colon < 0 ? value : value.slice(0, colon);
    rest = colon < 0 ? '' : value.slice(colon);
  }
  if (host === '' || !/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$/.test(host)) return null;
  let port: string | null = null;
  if (rest !== '') {
    if (!/^:\d{1,5}$/.test(rest)) return null;
    port = rest.slice(1);
  }
  host = host.toLowerCase();
  if (host.endsWith('.') && host.length > 1) host = host.slice(0, -1);
  return [host, port];
}

/**
 * The Host allow-list (DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1
 * would otherwise read /metrics and /v1/whitelist from the operator's browser). A name allowed
 * without a port is allowed with any; `name:port` only with that port.
 */
export function hostAllowList(listenHost: string | null, extra: readonly string[]): (header: string | undefined) => boolean {
  const anyPort = new Set<string>(LOOPBACK_HOSTS);
  const exact = new Set<string>();
  const add = (value: string): void => {
    const split = splitHostHeader(value);
    if (split === null) return;
    if (split[1] === null) anyPort.add(split[0]);
    else exact.add(`${split[0]}:${split[1]}`);
  };
  if (listenHost !== null) add(listenHost.includes(':') && !listenHost.startsWith('[') ? `[${listenHost}]` : listenHost);
  for (const value of extra) add(value);
  return (header) => {
    if (header === undefined) return false;
    const split = splitHostHeader(header);
    if (split === null) return false;
    return anyPort.has(split[0]) || (split[1] !== null && exact.has(`${split[0]}:${split[1]}`));
  };
}
