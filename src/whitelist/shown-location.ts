/**
 * A list source as it may be shown anywhere outside the process (HTTP `/v1/whitelist`, logs, the
 * state dir, metric labels, command output). The userinfo, the query string and the fragment of a
 * URL are where operators put secrets (`https://user:pass@host/…`, `…/liste.xml?token=…`): each is
 * replaced by `***`, so one can still see that it was there. A file path is shown as it is.
 *
 * Text, not `new URL()`: a location that is not a valid URL (refused at start-up) is shown
 * redacted all the same.
 */

const SCHEME = /^([a-zA-Z][a-zA-Z0-9+.-]+):/;

export function redactLocation(location: string): string {
  const scheme = SCHEME.exec(location);
  // No scheme, or one letter ("C:\…"): a file path.
  if (scheme === null) return location;
  let rest = location.slice(scheme[0].length);
  let authority = '';
  if (rest.startsWith('//')) {
    const end = rest.slice(2).search(/[/?#]/);
    authority = end < 0 ? rest : rest.slice(0, end + 2);
    rest = end < 0 ? '' : rest.slice(end + 2);
    const at = authority.lastIndexOf('@');
    if (at >= 0) authority = `//***@${authority.slice(at + 1)}`;
  }
  const hash = rest.indexOf('#');
  const fragment = hash < 0 ? '' : '#***';
  if (hash >= 0) rest = rest.slice(0, hash);
  const question = rest.indexOf('?');
  const query = question < 0 ? '' : '?***';
  if (question >= 0) rest = rest.slice(0, question);
  return `${scheme[0]}${authority}${rest}${query}${fragment}`;
}

/** The `whitelist` setting as printed (`serve --print-config`): one location or several, each redacted. */
export function redactLocations(value: unknown): unknown {
  if (typeof value === 'string') return redactLocation(value);
  if (Array.isArray(value)) return (value as unknown[]).map((v) => (typeof v === 'string' ? redactLocation(v) : v));
  return value;
}
