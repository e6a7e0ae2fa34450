/**
 * Type=notify without systemd running: a fake service manager (a unix datagram socket read by
 * python3, as systemd reads $NOTIFY_SOCKET) receives what the daemon sends through systemd-notify:
 * READY=1 once it answers, STOPPING=1 when SIGTERM begins the shutdown, in that order.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { tempDir, unsignedListFile, VALID, waitFor } from '../../support/faults.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { toolOrSkip } from '../../support/tools.js';

// Prints each datagram as one JSON line; fds passed along (systemd-notify's BARRIER=1 pipe) are
// closed at once, which is how the manager tells systemd-notify the message was processed.
const RECEIVER = `
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    msg, fds, _flags, _addr = socket.recv_fds(s, 65536, 16)
    for fd in fds:
        os.close(fd)
    print(json.dumps({"message": msg.decode()}), flush=True)
`;

describe('sd_notify (Type=notify) through systemd-notify', { timeout: 600_000 }, () => {
  const cleanups: Array<() => Promise<unknown> | void> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('READY=1 once answering, STOPPING=1 at SIGTERM; nothing else speaks for the daemon', async (t: TestContext) => {
    const python = toolOrSkip(t, 'python3');
    if (python === null || toolOrSkip(t, 'systemd-notify') === null) return;
    const socketPath = join(tempDir('notify'), 'notify.sock');
    const receiver = spawn(python, ['-c', RECEIVER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => void receiver.kill('SIGKILL'));
    const messages: string[] = [];
    let bound = false;
    let rest = '';
    receiver.stdout.setEncoding('utf8');
    receiver.stdout.on('data', (chunk: string) => {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        const record = JSON.parse(rest.slice(0, nl)) as { bound?: boolean; message?: string };
        rest = rest.slice(nl + 1);
        if (record.bound === true) bound = true;
        if (record.message !== undefined) messages.push(record.message);
      }
    });
    await waitFor('the fake manager', () => bound, 60_000);

    const daemon: DaemonHandle = await startDaemon({ whitelist: unsignedListFile(), env: { NOTIFY_SOCKET: socketPath } });
    cleanups.push(() => daemon.stop('SIGKILL'));
    const ready = await waitFor('READY=1', () => messages.find((m) => m.split('\n').includes('READY=1')), 120_000);
    assert.match(ready, /^STATUS=answering/m);
    // Ready means answering.
    assert.equal(await askOnce(daemon.policyAddress, postfixRequest(VALID.cn, VALID.sender)), 'DUNNO');

    assert.equal(await daemon.stop('SIGTERM'), 0);
    await waitFor('STOPPING=1', () => messages.some((m) => m.split('\n').includes('STOPPING=1')), 60_000);
    const order = messages.map((m) => (m.includes('READY=1') ? 'ready' : m.includes('STOPPING=1') ? 'stopping' : 'other'));
    // systemd-notify sends the barrier as its own datagram after each message.
    assert.deepEqual(
      order.filter((o) => o !== 'other'),
      ['ready', 'stopping'],
    );
    assert.ok(
      messages.every((m) =>
        /^(READY=1|STOPPING=1|STATUS=[^\n]*|BARRIER=1)(\n(READY=1|STOPPING=1|STATUS=[^\n]*|BARRIER=1))*\n?$/.test(m),
      ),
      JSON.stringify(messages),
    );
  });
});
