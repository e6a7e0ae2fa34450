/**
 * --allowed-peer-users: the parsing of /proc/net/tcp{,6} lines (captured on x86-64 Linux, uids
 * edited), the peer match, name resolution, and a real loopback listener that closes a peer whose
 * user is not allowed before reading a byte, counted in connections_rejected_total{reason="peer_user"}.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import pino from 'pino';
import { startStreamServer, type ListenerHandle } from '../../../src/net/stream-server.js';
import {
  canonicalAddress,
  findPeerUid,
  isLoopbackAddress,
  parseProcNetTcp,
  peerUidOf,
  resolveUsers,
} from '../../../src/net/peer-user.js';
import { createMetrics, type Metrics } from '../../../src/observe/metrics.js';

// A listener on 127.0.0.1:41101 (0xA08D) and a client on 127.0.0.1:59708 (0xE93C) owned by uid 103.
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   1: 0100007F:A08D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 226435 1 0000000013e28330 100 0 0 10 0
  55: 0100007F:E93C 0100007F:A08D 01 00000000:00000000 00:00000000 00000000   103        0 226436 2 000000004ef431c0 20 0 0 10 -1
  65: 0100007F:A08D 0100007F:E93C 01 00000000:00000000 00:00000000 00000000     0        0 226437 1 000000003655317a 20 0 0 10 -1
  66: 0100007F:E93D 0100007F:A08D 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
`;
// [::1]:45253 (0xB0C5) listening; a client [::1]:49578 (0xC1AA) of uid 1001; an IPv4-mapped client of uid 1002.
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:B0C5 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 226506 1 00000000f127c49e 100 0 0 10 0
   1: 00000000000000000000000001000000:B0C5 00000000000000000000000001000000:C1AA 01 00000000:00000000 00:00000000 00000000     0        0 226513 1 00000000e2602b6e 20 0 0 10 -1
   2: 00000000000000000000000001000000:C1AA 00000000000000000000000001000000:B0C5 01 00000000:00000000 00:00000000 00000000  1001        0 226512 2 000000002264eb41 20 0 0 10 -1
   3: 0000000000000000FFFF00000100007F:C1AB 0000000000000000FFFF00000100007F:A08D 01 00000000:00000000 00:00000000 00000000  1002        0 226600 2 000000002264eb41 20 0 0 10 -1
`;
const V6_LOOPBACK = '0000:0000:0000:0000:0000:0000:0000:0001';

describe('parseProcNetTcp', () => {
  it('reads addresses (host byte order, little-endian), ports, state, uid and inode; skips the header', () => {
    const sockets = parseProcNetTcp(TCP, true);
    assert.equal(sockets.length, 4);
    assert.deepEqual(sockets[1], {
      local: { address: '127.0.0.1', port: 59708 },
      remote: { address: '127.0.0.1', port: 41101 },
      state: 1,
      uid: 103,
      inode: 226436,
    });
    assert.equal(sockets[3]!.state, 6);
    assert.equal(sockets[3]!.inode, 0);
  });

  it('reads IPv6 words in host order, and IPv4-mapped addresses as IPv4', () => {
    const sockets = parseProcNetTcp(TCP6, true);
    assert.equal(sockets.length, 4);
    assert.deepEqual(sockets[2]!.local, { address: V6_LOOPBACK, port: 49578 });
    assert.deepEqual(sockets[3]!.local, { address: '127.0.0.1', port: 49579 });
  });

  it('reads big-endian hosts too', () => {
    const line = '   0: 7F000001:A08D 7F000001:E93C 01 00000000:00000000 00:00000000 00000000    42        0 1 1 0 20 0 0 10 -1';
    assert.deepEqual(parseProcNetTcp(line, false)[0]!.local, { address: '127.0.0.1', port: 41101 });
  });

  it('ignores malformed lines (random text, odd address lengths)', () => {
    assert.deepEqual(parseProcNetTcp('garbage\n 1: 0100:A08D 0100007F:E93C 01 x x x 5 0 7\n\n', true), []);
  });
});

describe('findPeerUid', () => {
  const v4 = parseProcNetTcp(TCP, true);
  const v6 = parseProcNetTcp(TCP6, true);
  it("matches the peer's socket: its local end is the peer, its remote end is the listener", () => {
    assert.equal(findPeerUid(v4, { address: '127.0.0.1', port: 59708 }, { address: '127.0.0.1', port: 41101 }), 103);
    assert.equal(findPeerUid(v6, { address: V6_LOOPBACK, port: 49578 }, { address: V6_LOOPBACK, port: 45253 }), 1001);
    assert.equal(findPeerUid(v6, { address: '127.0.0.1', port: 49579 }, { address: '127.0.0.1', port: 41101 }), 1002);
  });

  it("never takes the listener's own accepted socket (uid of the daemon), nor a socket no process holds", () => {
    // The reverse pair is the daemon's side: asked with the ends swapped, it must not answer 0 (root).
    assert.equal(findPeerUid(v4, { address: '127.0.0.1', port: 41101 }, { address: '127.0.0.1', port: 1 }), null);
    // TIME_WAIT: uid 0, inode 0. A peer that closed at once must not pass as root.
    assert.equal(findPeerUid(v4, { address: '127.0.0.1', port: 59709 }, { address: '127.0.0.1', port: 41101 }), null);
    assert.equal(findPeerUid(v4, { address: '127.0.0.2', port: 59708 }, { address: '127.0.0.1', port: 41101 }), null);
  });
});

describe('addresses', () => {
  it('canonicalAddress: node forms to the /proc form', () => {
    assert.equal(canonicalAddress('127.0.0.1'), '127.0.0.1');
    assert.equal(canonicalAddress('::1'), V6_LOOPBACK);
    assert.equal(canonicalAddress('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(canonicalAddress('fe80::1%lo'), 'fe80:0000:0000:0000:0000:0000:0000:0001');
    assert.equal(canonicalAddress('2001:db8::a:b'), '2001:0db8:0000:0000:0000:0000:000a:000b');
    assert.equal(canonicalAddress('localhost'), null);
  });

  it('isLoopbackAddress', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopbackAddress(a), true, a);
    for (const a of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', 'fe80::1', '']) assert.equal(isLoopbackAddress(a), false, a);
  });
});

describe('resolveUsers', () => {
  it('names and uids, comma-separated or repeated; an unknown name is an error', async () => {
    const lookup = async (name: string): Promise<number> => {
      const known: Record<string, number> = { postfix: 103, 'Debian-exim': 999, '0': 0 };
      if (name in known) return known[name]!;
      throw new Error('unknown');
    };
    const users = await resolveUsers(['postfix,Debian-exim', '0'], lookup);
    assert.deepEqual(
      [...users],
      [
        [103, 'postfix'],
        [999, 'Debian-exim'],
        [0, '0'],
      ],
    );
    await assert.rejects(resolveUsers(['postfx'], lookup), /no local user named "postfx"/);
  });

  it('resolves through the system (root is uid 0)', async () => {
    assert.deepEqual([...(await resolveUsers(['root']))], [[0, 'root']]);
  });
});

describe('a loopback listener with allowed peer users (this process is the peer)', () => {
  const me = process.getuid?.() ?? -1;

  async function listener(allowed: Map<number, string>, metrics: Metrics): Promise<ListenerHandle> {
    return startStreamServer('127.0.0.1:0', {
      frontend: 'policy',
      limits: {
        maxConnections: 10,
        idleTimeoutMs: 60_000,
        requestTimeoutMs: 60_000,
        maxConnectionBytes: 65_536,
        heapWatermarkPercent: 100,
      },
      logger: pino({ level: 'silent' }),
      metrics,
      protocolErrorKinds: [],
      allowedPeerUsers: allowed,
      codecFault: () => null,
      createSession: (conn) => ({
        decode: (chunk) => [chunk],
        answer: (chunks) => {
          for (const chunk of chunks) conn.write(chunk);
        },
        pendingBytes: () => 0,
        heldBytes: () => 0,
        idle: () => true,
      }),
    });
  }

  /** Sends `text`, resolves with what came back before the close. */
  function exchange(address: string, text: string): Promise<string> {
    const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
    return new Promise((resolve) => {
      let got = '';
      const c = net.connect(port, host, () => c.write(text));
      c.setEncoding('utf8');
      c.on('data', (d: string) => {
        got += d;
        if (got.length >= text.length) c.end();
      });
      c.on('error', () => undefined);
      c.on('close', () => resolve(got));
    });
  }

  async function rejectedPeerUser(metrics: Metrics): Promise<number> {
    const v = (await metrics.connectionsRejected.get()).values.find((s) => s.labels.reason === 'peer_user');
    return v?.value ?? 0;
  }

  it('answers an allowed user, and closes any other before reading (counted once per connection)', async () => {
    const allowedMetrics = createMetrics();
    const open = await listener(new Map([[me, 'me']]), allowedMetrics);
    try {
      assert.equal(await exchange(open.address, 'hello'), 'hello');
      assert.equal(await rejectedPeerUser(allowedMetrics), 0);
    } finally {
      await open.close(1000);
    }
    const metrics = createMetrics();
    const closed = await listener(new Map([[me + 12_345, 'someone-else']]), metrics);
    try {
      for (let i = 0; i < 3; i++) assert.equal(await exchange(closed.address, 'hello'), '');
      assert.equal(await rejectedPeerUser(metrics), 3);
    } finally {
      await closed.close(1000);
    }
  });

  it("peerUidOf finds this process's own uid for its connection", async () => {
    const server = net.createServer();
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
    const port = (server.address() as net.AddressInfo).port;
    const accepted = new Promise<net.Socket>((ok) => server.once('connection', ok));
    const client = net.connect(port, '127.0.0.1');
    const s = await accepted;
    try {
      const uid = await peerUidOf(
        { address: s.remoteAddress, port: s.remotePort },
        { address: s.localAddress, port: s.localPort },
      );
      assert.equal(uid, me);
    } finally {
      client.destroy();
      s.destroy();
      server.close();
    }
  });

  it('refuses to start on a non-loopback listener (the check could not hold there); a unix listener is left to its mode', async () => {
    const metrics = createMetrics();
    const base = {
      frontend: 'policy' as const,
      limits: {
        maxConnections: 10,
        idleTimeoutMs: 60_000,
        requestTimeoutMs: 60_000,
        maxConnectionBytes: 65_536,
        heapWatermarkPercent: 100,
      },
      logger: pino({ level: 'silent' }),
      metrics,
      protocolErrorKinds: [],
      allowedPeerUsers: new Map([[me, 'me']]),
      codecFault: () => null,
      createSession: () => ({
        decode: () => [],
        answer: () => undefined,
        pendingBytes: () => 0,
        heldBytes: () => 0,
        idle: () => true,
      }),
    };
    await assert.rejects(startStreamServer('0.0.0.0:0', base), /loopback TCP listeners only.*peers from other hosts/);
    const path = `/tmp/mssante-peer-user-${process.pid}.sock`;
    const unix = await startStreamServer(`unix:${path}`, base);
    await unix.close(1000);
  });
});
