/**
 * `--allowed-peer-users`: on a loopback TCP listener, who is the local user at the other end?
 * Any local user may connect to a loopback port, ask made-up questions, and so spend the tokens of
 * an operator the throttle (`--operator-rate`) counts. Linux lists every TCP socket of the host in
 * /proc/net/tcp and /proc/net/tcp6 with the uid that created it: the peer's socket is the entry
 * whose local end is the peer's address and port and whose remote end is ours. A peer whose socket
 * is not found (gone, another network namespace) or whose uid is not allowed is refused.
 *
 * The parsing is pure (tested on captured lines); peerUidOf() and resolveUsers() read the host.
 * A unix: listener has no such check: its socket file's mode, owner and group decide who connects.
 */
import { readFile } from 'node:fs/promises';
import { isIPv4, isIPv6, type Socket } from 'node:net';
import { endianness } from 'node:os';
import type { Logger } from 'pino';
import type { Metrics } from '../observe/metrics.js';
import type { ListenerFrontend } from '../trust/facts.js';
import { resolveId } from './listen.js';

export interface Endpoint {
  /** Canonical: dotted IPv4 (also for IPv4-mapped IPv6), or eight 4-digit lowercase hex groups. */
  readonly address: string;
  readonly port: number;
}

export interface ProcTcpSocket {
  readonly local: Endpoint;
  readonly remote: Endpoint;
  /** Kernel TCP state (1 ESTABLISHED, 6 TIME_WAIT, 10 LISTEN...). */
  readonly state: number;
  readonly uid: number;
  /** 0 once no process holds the socket (TIME_WAIT, orphaned): its uid then says nothing. */
  readonly inode: number;
}

const PROC_LINE =
  /^\s*\d+:\s+([0-9A-Fa-f]+):([0-9A-Fa-f]{4})\s+([0-9A-Fa-f]+):([0-9A-Fa-f]{4})\s+([0-9A-Fa-f]{2})\s+\S+\s+\S+\s+\S+\s+(\d+)\s+\d+\s+(\d+)/;

/** /proc prints each 32-bit word of an address in host byte order. */
function procAddress(hex: string, littleEndian: boolean): string | null {
  if (hex.length !== 8 && hex.length !== 32) return null;
  const bytes = Buffer.from(hex, 'hex');
  if (littleEndian) for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  return canonicalBytes(bytes);
}

function canonicalBytes(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join('.');
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return [...bytes.subarray(12)].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16).padStart(4, '0'));
  return groups.join(':');
}

/** The lines of /proc/net/tcp or tcp6 (header and malformed lines skipped). */
export function parseProcNetTcp(text: string, littleEndian = endianness() === 'LE'): ProcTcpSocket[] {
  const sockets: ProcTcpSocket[] = [];
  for (const line of text.split('\n')) {
    const m = PROC_LINE.exec(line);
    if (m === null) continue;
    const local = procAddress(m[1]!, littleEndian);
    const remote = procAddress(m[3]!, littleEndian);
    if (local === null || remote === null) continue;
    sockets.push({
      local: { address: local, port: parseInt(m[2]!, 16) },
      remote: { address: remote, port: parseInt(m[4]!, 16) },
      state: parseInt(m[5]!, 16),
      uid: Number(m[6]),
      inode: Number(m[7]),
    });
  }
  return sockets;
}

/** Node's text form of an address (`127.0.0.1`, `::1`, `::ffff:127.0.0.1`, `fe80::1%lo`) in canonical form; null if not an IP. */
export function canonicalAddress(text: string): string | null {
  let ip = text.replace(/%.*$/, '');
  if (isIPv4(ip)) return ip;
  if (!isIPv6(ip)) return null;
  // A dotted IPv4 tail (::ffff:127.0.0.1) becomes its two hex groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    ip = `${ip.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const double = ip.indexOf('::');
  const left = parse(double < 0 ? ip : ip.slice(0, double));
  const right = double < 0 ? [] : parse(ip.slice(double + 2));
  const words = [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  if (words.length !== 8) return null;
  const bytes = Buffer.alloc(16);
  words.forEach((w, i) => bytes.writeUInt16BE(w, i * 2));
  return canonicalBytes(bytes);
}

/**
 * The uid of the peer's socket: the entry whose local end is the peer and whose remote end is us,
 * still held by a process (inode ≠ 0). Null when there is none.
 */
export function findPeerUid(sockets: readonly ProcTcpSocket[], peer: Endpoint, server: Endpoint): number | null {
  for (const s of sockets) {
    if (s.inode === 0) continue;
    if (s.local.port !== peer.port || s.remote.port !== server.port) continue;
    if (s.local.address === peer.address && s.remote.address === server.address) return s.uid;
  }
  return null;
}

/** True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: the peer can only be a process of this host. */
export function isLoopbackAddress(address: string): boolean {
  const canonical = canonicalAddress(address);
  if (canonical === null) return false;
  return canonical.startsWith('127.') || canonical === '0000:0000:0000:0000:0000:0000:0000:0001';
}

const PROC_NET_TCP = ['/proc/net/tcp', '/proc/net/tcp6'] as const;

/** Reads the host's socket tables (each file that exists) and finds the peer's uid. */
export async function peerUidOf(
  peer: { readonly address?: string; readonly port?: number },
  server: { readonly address?: string; readonly port?: number },
  files: readonly string[] = PROC_NET_TCP,
): Promise<number | null> {
  const peerAddress = canonicalAddress(peer.address ?? '');
  const serverAddress = canonicalAddress(server.address ?? '');
  if (peerAddress === null || serverAddress === null || peer.port === undefined || server.port === undefined) return null;
  // IPv4 peers are in tcp, IPv6 ones (IPv4-mapped included) in tcp6: read the likely one first.
  const order = peerAddress.includes('.') ? files : [...files].reverse();
  for (const file of order) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      continue;
    }
    const uid = findPeerUid(
      parseProcNetTcp(text),
      { address: peerAddress, port: peer.port },
      { address: serverAddress, port: server.port },
    );
    if (uid !== null) return uid;
  }
  return null;
}

/**
 * Names (or numeric uids) → uid → name, at start-up, through the system's name service (getent:
 * /etc/passwd, LDAP...): a name that does not resolve is an error (a typo must not silently refuse
 * the MTA). Each value may hold several names separated by commas.
 */
export async function resolveUsers(
  names: readonly string[],
  lookupUid: (name: string) => Promise<number> = (name) => resolveId('passwd', name),
): Promise<Map<number, string>> {
  const allowed = new Map<number, string>();
  const each = names
    .flatMap((n) => n.split(','))
    .map((n) => n.trim())
    .filter((n) => n !== '');
  for (const name of each) {
    let uid: number;
    try {
      uid = await lookupUid(name);
    } catch {
      throw new Error(`--allowed-peer-users: no local user named ${JSON.stringify(name)}`);
    }
    allowed.set(uid, name);
  }
  return allowed;
}

const REJECT_WARN_INTERVAL_MS = 10_000;

export interface PeerUserCheck {
  /** Resolves true when the peer of this loopback TCP connection is an allowed local user. */
  admits(socket: Socket): Promise<boolean>;
}

/**
 * The per-listener check: the peer's uid against the allowed ones. A refusal is counted in
 * connections_rejected_total{frontend,reason="peer_user"} and warned about at most every 10 s (a
 * flood must not flood the log).
 */
export function createPeerUserCheck(
  frontend: ListenerFrontend,
  allowed: ReadonlyMap<number, string>,
  metrics: Metrics,
  log: Logger,
  lookup: typeof peerUidOf = peerUidOf,
): PeerUserCheck {
  const rejected = metrics.connectionsRejected.labels({ frontend, reason: 'peer_user' });
  rejected.inc(0);
  let lastWarn = -Infinity;
  return {
    async admits(socket) {
      let uid: number | null;
      try {
        uid = await lookup(
          { address: socket.remoteAddress, port: socket.remotePort },
          { address: socket.localAddress, port: socket.localPort },
        );
      } catch {
        uid = null;
      }
      if (uid !== null && allowed.has(uid)) return true;
      rejected.inc();
      const now = Date.now();
      if (now - lastWarn >= REJECT_WARN_INTERVAL_MS) {
        lastWarn = now;
        log.warn(
          { event: 'peer_user_refused', uid, allowed: [...allowed.values()] },
          uid === null
            ? `${frontend} connection from a peer whose local owner cannot be found, closed (--allowed-peer-users)`
            : `${frontend} connection from a local user not in --allowed-peer-users, closed`,
        );
      }
      return false;
    },
  };
}
