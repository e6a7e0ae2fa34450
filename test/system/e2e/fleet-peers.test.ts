/**
 * Two daemons sharing one real redis-server (a private instance): the certificate history is the
 * fleet's. A certificate first seen through daemon A is known to daemon B (/v1/peers), a renewal seen
 * first on B is a change there, and the same renewal reaching A afterwards is not news again
 * (peer_certificate_changes_total stays 0 on A). With the store gone, both go on from their own
 * state-dir history: answers unchanged, store_errors_total{op="peers"} counts it.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { BASE_ENTRIES, httpGet, metricNow, OP1_CN, unsignedListFile, VALID, waitFor } from '../../support/faults.js';
import { PolicyClient, postfixRequest } from '../../support/policy-client.js';
import { startRedis } from '../../support/redis.js';

const daemons: DaemonHandle[] = [];
after(() => Promise.all(daemons.map((d) => d.stop())));

/** A SHA-256 as Postfix sends ccert_fingerprint, and the daemon's canonical form of it. */
function fingerprint(byte: string): { postfix: string; canonical: string } {
  const hex = Array.from({ length: 32 }, () => byte).join(':');
  return { postfix: hex, canonical: `sha256:${hex}` };
}
const OLD = fingerprint('A1');
const RENEWED = fingerprint('B2');

interface PeersView {
  identities: number;
  peers: Array<{ identity: string; fingerprints: Array<{ fingerprint: string }> }>;
}

async function peersOf(d: DaemonHandle): Promise<PeersView> {
  return JSON.parse((await httpGet(d, '/v1/peers')).text) as PeersView;
}

function fingerprintsOf(view: PeersView): string[] {
  return view.peers.find((p) => p.identity === OP1_CN)?.fingerprints.map((f) => f.fingerprint) ?? [];
}

async function sight(client: PolicyClient, fp: { postfix: string }): Promise<string> {
  return client.ask({ ...postfixRequest(OP1_CN, VALID.sender), ccert_fingerprint: fp.postfix });
}

const changes = (d: DaemonHandle): Promise<number> => metricNow(d, 'peer_certificate_changes_total', { frontend: 'policy' });

test('two daemons, one store: a certificate seen on A is known on B; a renewal is news once for the fleet', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const list = unsignedListFile(BASE_ENTRIES);
  const args = ['--store', redis.url, '--store-timeout', '2000'];
  const [a, b] = await Promise.all([
    startDaemon({ whitelist: list, extraArgs: args }),
    startDaemon({ whitelist: list, extraArgs: args }),
  ]);
  daemons.push(a, b);
  const [ca, cb] = await Promise.all([PolicyClient.connect(a.policyAddress), PolicyClient.connect(b.policyAddress)]);
  t.after(() => [ca, cb].forEach((c) => c.close()));
  await waitFor('both instances in /v1/fleet', async () => {
    const fleet = JSON.parse((await httpGet(a, '/v1/fleet')).text) as { instances: unknown[] };
    return fleet.instances.length === 2;
  });

  assert.equal(await sight(ca, OLD), 'DUNNO');
  // B never saw OLD: it knows it from the store.
  await waitFor('B lists the certificate seen through A', async () => fingerprintsOf(await peersOf(b)).includes(OLD.canonical));

  // The renewal reaches B first: a change on B, against what A saw.
  assert.equal(await sight(cb, RENEWED), 'DUNNO');
  await waitFor('B counted the change', async () => (await changes(b)) === 1);
  // The log line reaches this process through B's stdout, maybe after the metric moved.
  const logged = await waitFor('B logged the change', () => b.logs.find((l) => l.includes('"event":"peer_certificate_changed"')));
  assert.ok(logged.includes(OLD.canonical) && logged.includes(RENEWED.canonical), logged);

  // Then A: not news any more. A further sighting on A (another fingerprint's key in the store) shows A's record went through.
  assert.equal(await sight(ca, RENEWED), 'DUNNO');
  const third = fingerprint('C3');
  assert.equal(await sight(ca, third), 'DUNNO');
  await waitFor('A counted only the third certificate', async () => (await changes(a)) === 1);
  assert.deepEqual(
    fingerprintsOf(await peersOf(a)).sort(),
    [OLD.canonical, RENEWED.canonical, third.canonical].sort(),
    'one history on both',
  );
  const aChange = await waitFor('A logged its change', () => {
    const lines = a.logs.filter((l) => l.includes('"event":"peer_certificate_changed"'));
    return lines.length > 0 ? lines : null;
  });
  assert.equal(aChange.length, 1);
  assert.ok(aChange[0]!.includes(`"previous_fingerprint":"${RENEWED.canonical}"`), aChange[0]);
  assert.equal(await metricNow(a, 'store_errors_total', { op: 'peers' }), 0);

  // The store gone: answers unchanged, counted, each instance on its own history.
  await redis.kill();
  assert.equal(await sight(cb, fingerprint('D4')), 'DUNNO');
  await waitFor(
    'store_errors_total{op="peers"} on B',
    async () => (await metricNow(b, 'store_errors_total', { op: 'peers' })) > 0,
  );
  assert.equal((await httpGet(b, '/readyz')).status, 200);
  assert.equal((await httpGet(b, '/v1/peers')).status, 200, 'the local history answers /v1/peers');
});
