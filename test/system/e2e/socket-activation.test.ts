/**
 * Socket activation: a holder keeps the policy socket like systemd does (test/support/socket-holder.py),
 * a client asks on a new connection every few milliseconds throughout, and the daemon is restarted
 * twice in the middle. Connections made while no daemon runs wait in the kernel's queue and are
 * answered by the next one, which accepts only once it can answer (the stored list loaded): every
 * request gets a real answer, none a 4xx, none lost.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { cliArgv } from '../../support/daemon.js';
import { tempDir, unsignedListFile, VALID } from '../../support/faults.js';
import { encodeRequest, PolicyDecoder } from '../../../src/frontends/policy/codec.js';
import { DEFAULT_POLICY_LIMITS } from '../../../src/listener-defaults.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { startSocketHolder, type SocketHolder } from '../../support/socket-holder.js';
import { toolOrSkip } from '../../support/tools.js';

/** Requests outstanding at once: during a restart they queue in the kernel (the socket's backlog is 1024). */
const IN_FLIGHT = 32;
/** A generous deadline per request (a restart on a loaded machine takes seconds): liveness, not speed. */
const ANSWER_DEADLINE_MS = 180_000;

interface Asked {
  readonly sentAt: number;
  answer: string | null;
  error: string | null;
}

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** One policy request over a unix socket; resolves with its action. */
function askUnix(path: string, attributes: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
    const socket = net.connect({ path }, () =>
      socket.write(encodeRequest(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', ...attributes }))),
    );
    socket.on('data', (chunk) => {
      const [reply] = decoder.push(chunk);
      if (reply !== undefined) {
        resolve(reply.get('action') ?? '');
        socket.end();
      }
    });
    socket.on('error', reject);
  });
}

describe('socket activation (a holder keeps the socket across restarts)', { timeout: 900_000 }, () => {
  let holder: SocketHolder | null = null;
  const holders: SocketHolder[] = [];
  after(async () => {
    await holder?.close();
    for (const h of holders) await h.close();
  });

  it('two restarts under a steady stream of new connections: every request answered DUNNO, none 4xx, none lost', async (t: TestContext) => {
    const python = toolOrSkip(t, 'python3');
    if (python === null) return;
    holder = await startSocketHolder(python, { policy: 'tcp:127.0.0.1:0' });
    const policy = holder.addresses['policy']!;
    const stateDir = tempDir('activation-state');
    const list = unsignedListFile();
    // --policy-listen names a port nobody binds: the inherited socket is served instead of binding it.
    const argv = [
      ...cliArgv(),
      'serve',
      '--whitelist',
      list,
      '--allow-unsigned',
      '--state-dir',
      stateDir,
      '--policy-listen',
      '127.0.0.1:1',
      '--http-listen',
      'off',
    ];
    const startAndWait = async (): Promise<{ pid: number; listeningAt: number }> => {
      const from = holder!.lines.length;
      const pid = await holder!.start(argv);
      // The start-up line says where it answers and that the socket was inherited.
      const listening = await holder!.waitForEvent('listening', from);
      assert.equal(listening['policy'], policy);
      assert.deepEqual(listening['inherited'], ['policy']);
      return { pid, listeningAt: Date.now() };
    };
    const firstFrom = holder.lines.length;
    await startAndWait();
    // The first start has nothing stored: wait until the list is in force (and kept in the state dir).
    // The restarts below load it from there before they accept.
    await holder.waitForEvent('list_loaded', firstFrom);

    const asked: Asked[] = [];
    let stop = false;
    let outstanding = 0;
    const client = (async () => {
      const pending = new Set<Promise<void>>();
      while (!stop) {
        if (outstanding >= IN_FLIGHT) {
          await Promise.race(pending);
          continue;
        }
        const entry: Asked = { sentAt: Date.now(), answer: null, error: null };
        asked.push(entry);
        outstanding++;
        const p = withDeadline(askOnce(policy, postfixRequest(VALID.cn, VALID.sender)), ANSWER_DEADLINE_MS)
          .then(
            (answer) => void (entry.answer = answer),
            (error: Error) => void (entry.error = error.message),
          )
          .finally(() => {
            outstanding--;
            pending.delete(p);
          });
        pending.add(p);
        await new Promise((r) => setTimeout(r, 10));
      }
      await Promise.all(pending);
    })();

    const answered = (): number => asked.filter((a) => a.answer !== null || a.error !== null).length;
    const waitAnswered = async (n: number): Promise<void> => {
      const deadline = Date.now() + ANSWER_DEADLINE_MS;
      while (answered() < n) {
        assert.ok(Date.now() < deadline, `only ${answered()} of ${n} answers`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };

    const gaps: Array<{ from: number; to: number }> = [];
    for (let restart = 0; restart < 2; restart++) {
      await waitAnswered(answered() + 40);
      // The gap runs from SIGTERM (the old daemon stops accepting at once) to the new one listening.
      const from = Date.now();
      const code = await holder.term();
      assert.equal(code, 0, 'the old daemon exits 0 after draining');
      const { listeningAt } = await startAndWait();
      gaps.push({ from, to: listeningAt });
    }
    await waitAnswered(answered() + 40);
    stop = true;
    await client;
    assert.equal(await holder.term(), 0);

    const errors = asked.filter((a) => a.error !== null);
    const answers = new Map<string, number>();
    for (const a of asked) if (a.answer !== null) answers.set(a.answer, (answers.get(a.answer) ?? 0) + 1);
    t.diagnostic(`${asked.length} requests on new connections; answers ${JSON.stringify([...answers])}; errors ${errors.length}`);
    for (const [i, gap] of gaps.entries()) {
      const during = asked.filter((a) => a.sentAt >= gap.from && a.sentAt <= gap.to).length;
      t.diagnostic(
        `restart ${i + 1}: ${during} requests sent between SIGTERM and the new daemon listening, ${((gap.to - gap.from) / 1000).toFixed(1)} s later`,
      );
      // The proof needs requests made while no daemon ran: with a restart taking seconds there are many.
      assert.ok(during > 0, `restart ${i + 1}: no request was sent during the gap`);
    }
    assert.deepEqual(
      errors.map((e) => e.error),
      [],
      'no request lost',
    );
    assert.deepEqual([...answers.keys()], ['DUNNO'], 'every answer is the listed sender passing, none a 4xx');
  });

  it('a unix socket in a chroot-like dir and the http socket, by name: served, and the socket file left to its holder', async (t: TestContext) => {
    const python = toolOrSkip(t, 'python3');
    if (python === null) return;
    const dir = tempDir('activation-unix');
    const path = join(dir, 'policy.sock');
    const h = await startSocketHolder(python, { http: 'tcp:127.0.0.1:0', policy: `unix:${path}` });
    holders.push(h);
    const argv = [
      ...cliArgv(),
      'serve',
      '--whitelist',
      unsignedListFile(),
      '--allow-unsigned',
      '--state-dir',
      tempDir('activation-unix-state'),
      '--policy-listen',
      `unix:${path}`,
      '--http-listen',
      '127.0.0.1:1',
    ];
    for (let run = 1; run <= 2; run++) {
      const from = h.lines.length;
      await h.start(argv);
      const listening = await h.waitForEvent('listening', from);
      assert.equal(listening['policy'], `unix:${path}`);
      assert.equal(listening['http'], h.addresses['http'], 'the inherited http socket, not the configured port 1');
      assert.deepEqual(listening['inherited'], ['http', 'policy']);
      await h.waitForEvent('list_loaded', from);
      assert.equal(await askUnix(path, postfixRequest(VALID.cn, VALID.sender)), 'DUNNO');
      const health = await fetch(`http://${h.addresses['http']}/healthz`);
      assert.equal(health.status, 200);
      assert.equal(await h.term(), 0);
      // The daemon never removes a socket file it did not bind: the holder's stays for the next start.
      assert.ok(existsSync(path) && lstatSync(path).isSocket(), `run ${run}: ${path} still there`);
    }
  });
});
