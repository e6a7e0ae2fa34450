/**
 * Reading systemd's socket-activation variables (sd_listen_fds(3) semantics): which inherited fd
 * serves which listener, and every malformed or foreign hand-over refused or ignored as it should.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ACTIVATION_NAMES } from '../../../src/frontend-registry.js';
import {
  forgetActivationEnv,
  inheritedSockets,
  SocketActivationError,
  unservedSockets,
} from '../../../src/net/socket-activation.js';

const PID = 4242;

describe('inheritedSockets', () => {
  it('maps LISTEN_FDNAMES to fds from 3, in order', () => {
    const sockets = inheritedSockets(
      { LISTEN_PID: String(PID), LISTEN_FDS: '2', LISTEN_FDNAMES: 'policy:http' },
      PID,
      ACTIVATION_NAMES,
    );
    assert.deepEqual(
      [...sockets],
      [
        ['policy', 3],
        ['http', 4],
      ],
    );
  });

  it('every listener name is accepted', () => {
    const env = { LISTEN_PID: String(PID), LISTEN_FDS: '4', LISTEN_FDNAMES: ACTIVATION_NAMES.join(':') };
    assert.deepEqual([...inheritedSockets(env, PID, ACTIVATION_NAMES).keys()], [...ACTIVATION_NAMES]);
  });

  it('nothing inherited without LISTEN_FDS, or with LISTEN_FDS=0', () => {
    assert.equal(inheritedSockets({}, PID, ACTIVATION_NAMES).size, 0);
    assert.equal(inheritedSockets({ LISTEN_PID: String(PID), LISTEN_FDS: '0' }, PID, ACTIVATION_NAMES).size, 0);
  });

  it('sockets meant for another process (LISTEN_PID not ours, or absent) are ignored: we bind as usual', () => {
    assert.equal(inheritedSockets({ LISTEN_PID: '1', LISTEN_FDS: '1', LISTEN_FDNAMES: 'policy' }, PID, ACTIVATION_NAMES).size, 0);
    assert.equal(inheritedSockets({ LISTEN_FDS: '1', LISTEN_FDNAMES: 'policy' }, PID, ACTIVATION_NAMES).size, 0);
    assert.equal(inheritedSockets({ LISTEN_PID: 'x', LISTEN_FDS: '1', LISTEN_FDNAMES: 'policy' }, PID, ACTIVATION_NAMES).size, 0);
  });

  it('refuses unnamed, misnamed, duplicated or too many sockets, naming the fix', () => {
    const bad = (env: NodeJS.ProcessEnv, message: RegExp): void =>
      assert.throws(
        () => inheritedSockets({ LISTEN_PID: String(PID), ...env }, PID, ACTIVATION_NAMES),
        (e: Error) => {
          assert.ok(e instanceof SocketActivationError);
          assert.match(e.message, message);
          return true;
        },
      );
    bad({ LISTEN_FDS: '1' }, /FileDescriptorName=/);
    bad({ LISTEN_FDS: '2', LISTEN_FDNAMES: 'policy' }, /LISTEN_FDS=2 but LISTEN_FDNAMES/);
    // systemd's default name is the socket unit's: it must be set to the listener's.
    bad({ LISTEN_FDS: '1', LISTEN_FDNAMES: 'mssante-policyd.socket' }, /must be one of policy, milter, socketmap, http/);
    bad({ LISTEN_FDS: '2', LISTEN_FDNAMES: 'policy:policy' }, /two inherited sockets are named "policy"/);
    bad({ LISTEN_FDS: '5', LISTEN_FDNAMES: 'policy:milter:socketmap:http:policy' }, /at most 4/);
    bad({ LISTEN_FDS: 'many', LISTEN_FDNAMES: 'policy' }, /not a number/);
  });

  it('forgetActivationEnv removes the variables (spawned helpers must not take our sockets)', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '1', LISTEN_FDNAMES: 'policy', PATH: '/bin' };
    forgetActivationEnv(env);
    assert.deepEqual(env, { PATH: '/bin' });
  });

  it('unservedSockets: an inherited socket whose listener is off', () => {
    const sockets = new Map([
      ['policy', 3],
      ['milter', 4],
    ] as const);
    assert.deepEqual(unservedSockets(sockets, { policy: true, milter: false, socketmap: false, http: true }), ['milter']);
    assert.deepEqual(unservedSockets(sockets, { policy: true, milter: true, socketmap: false, http: false }), []);
  });
});
