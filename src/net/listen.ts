/**
 * Listen addresses shared by every listener of the daemon (policy, Milter): `host:port`,
 * `[v6addr]:port`, `unix:/path`. Parsing is strict so that a typo fails at start-up with a clear
 * message instead of binding somewhere unexpected.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { listenInherited } from './socket-activation.js';

export type ListenAddress =
  { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

export class ListenAddressError extends Error {
  override readonly name = 'ListenAddressError';
}

/** Linux sun_path holds 108 bytes including the terminating NUL. */
const MAX_UNIX_PATH_BYTES = 107;

export function parseListenAddress(text: string): ListenAddress {
  const s = text.trim();
  const bad = (why: string): ListenAddressError =>
    new ListenAddressError(
      `invalid listen address ${JSON.stringify(text)}: ${why} (expected host:port, [v6addr]:port or unix:/path)`,
    );
  if (s.startsWith('unix:')) {
    const path = s.slice(5);
    if (path === '') throw bad('empty socket path');
    if (path.includes('\0')) throw bad('NUL in socket path');
    if (Buffer.byteLength(path) > MAX_UNIX_PATH_BYTES) throw bad(`socket path longer than ${MAX_UNIX_PATH_BYTES} bytes`);
    return { kind: 'unix', path };
  }
  let host: string;
  let portText: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close === -1) throw bad('missing ]');
    host = s.slice(1, close);
    if (s[close + 1] !== ':') throw bad('missing :port after ]');
    portText = s.slice(close + 2);
    if (net.isIPv6(host.replace(/%.*$/, '')) === false) throw bad('not an IPv6 address inside [ ]');
  } else {
    const colon = s.lastIndexOf(':');
    if (colon === -1) throw bad('missing :port');
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(':')) throw bad('IPv6 addresses go in brackets, e.g. [::1]:10040, and unix: is the only prefix');
    if (host === '') throw bad('empty host (use 0.0.0.0 or [::] to listen on every interface)');
    if (/[\s/@]/.test(host)) throw bad('host contains a space, / or @');
  }
  if (!/^[0-9]{1,5}$/.test(portText)) throw bad('port must be a decimal number');
  const port = Number(portText);
  if (port > 65535) throw bad('port above 65535');
  return { kind: 'tcp', host, port };
}

export function formatAddress(address: ListenAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

export interface ListenOptions {
  /** Mode of a unix socket file (--socket-mode; its default lives in SETTINGS). Absent: left as the umask made it. */
  readonly unixMode?: number;
  /** Owner of a unix socket file: a user name or a numeric uid (changing it needs root); default the daemon's. */
  readonly unixOwner?: string | null;
  /** Group of a unix socket file, e.g. postfix: a group name or a numeric gid; default the daemon's. */
  readonly unixGroup?: string | null;
  /** A listening socket inherited from systemd (socket activation): served instead of binding `address`. */
  readonly inheritedFd?: number | null;
}

export interface BoundAddress {
  /** What was actually bound: the real port when 0 was asked. */
  readonly address: ListenAddress;
  /** Removes the unix socket file if it is still ours (no-op for TCP). Call after server.close(). */
  release(): Promise<void>;
}

/**
 * Binds `server`. For a unix socket: a leftover socket file from a dead process is removed first
 * (one that still accepts connections is left alone and reported as in use; a non-socket file is
 * never removed, nor a symbolic link), then the owner/group (--socket-owner, --socket-group) and the
 * mode (--socket-mode) are set.
 */
export async function listen(server: net.Server, address: ListenAddress, options: ListenOptions = {}): Promise<BoundAddress> {
  if (options.inheritedFd != null) {
    // The holder (systemd) owns the socket and its file: nothing to chown, chmod or remove here.
    return { address: await listenInherited(server, options.inheritedFd, address), release: async () => {} };
  }
  if (address.kind === 'tcp') {
    await bind(server, { host: address.host, port: address.port });
    const info = server.address();
    const port = info !== null && typeof info === 'object' ? info.port : address.port;
    return { address: { kind: 'tcp', host: address.host, port }, release: async () => {} };
  }
  // Names are resolved before anything is bound, so that a typo leaves no socket behind.
  const uid = options.unixOwner == null ? -1 : await resolveId('passwd', options.unixOwner);
  const gid = options.unixGroup == null ? -1 : await resolveId('group', options.unixGroup);
  await removeStaleSocket(address.path);
  await bind(server, { path: address.path });
  try {
    if (uid !== -1 || gid !== -1) await chown(address.path, uid, gid);
    if (options.unixMode !== undefined) await chmod(address.path, options.unixMode);
  } catch (err) {
    // Node removes the socket file when the server closes.
    await new Promise<void>((done) => server.close(() => done()));
    throw new ListenAddressError(`cannot set owner/group/mode of ${address.path}: ${(err as Error).message}`);
  }
  // Remember the inode so that release() never removes a socket a newer instance has put in our place.
  const ino = (await lstat(address.path)).ino;
  return {
    address,
    release: async () => {
      try {
        const st = await lstat(address.path);
        if (st.isSocket() && st.ino === ino) await unlink(address.path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    },
  };
}

/**
 * A user or group name → its numeric id, through the system's name service (`getent`, so LDAP/NSS
 * users resolve as for any daemon); a decimal number is taken as the id itself.
 */
export function resolveId(database: 'passwd' | 'group', name: string): Promise<number> {
  const what = database === 'passwd' ? 'user' : 'group';
  if (/^[0-9]+$/.test(name)) return Promise.resolve(Number(name));
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(name))
    return Promise.reject(new ListenAddressError(`invalid ${what} name ${JSON.stringify(name)}`));
  return new Promise((resolve, reject) => {
    execFile('getent', [database, name], { timeout: 10_000 }, (err, stdout) => {
      const id = Number(stdout.split(':')[2]);
      if (err === null && Number.isSafeInteger(id)) resolve(id);
      else reject(new ListenAddressError(`unknown ${what} ${JSON.stringify(name)} for the unix socket`));
    });
  });
}

function bind(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new ListenAddressError(`${path} exists and is not a socket: refusing to replace it`);
  if (await socketAnswers(path)) throw new ListenAddressError(`${path} is in use by another process`);
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      probe.destroy();
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(err);
    });
  });
}
