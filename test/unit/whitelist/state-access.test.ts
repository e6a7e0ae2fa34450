import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { assertStateDirPrivate, stateDirProblems } from '../../../src/whitelist/state-access.js';

const DAEMON_UID = 4242;
const root = process.getuid?.() === 0;
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A state dir as the daemon (uid 4242) keeps it: 0700, its list 0640, root's accept-sha256 0644. */
function stateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mssante-state-access-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'whitelist.xml'), '<x/>', { mode: 0o640 });
  writeFileSync(join(dir, 'accept-sha256'), 'ab\n', { mode: 0o644 });
  chownSync(dir, DAEMON_UID, DAEMON_UID);
  chownSync(join(dir, 'whitelist.xml'), DAEMON_UID, DAEMON_UID);
  chmodSync(dir, 0o700);
  return dir;
}

describe('stateDirProblems: the state dir is the daemon’s alone', { skip: root ? false : 'needs root (chown)' }, () => {
  it('takes the layout the daemon and check --accept make (owner: the daemon or root, no group/other write)', () => {
    assert.deepEqual(stateDirProblems(stateDir(), DAEMON_UID), []);
    assert.doesNotThrow(() => assertStateDirPrivate(stateDir(), DAEMON_UID));
  });

  it('refuses a directory writable by its group or others, or owned by another user', () => {
    const dir = stateDir();
    chmodSync(dir, 0o770);
    assert.match(stateDirProblems(dir, DAEMON_UID).join('\n'), /mode 0770, writable by its group: chmod go-w/);
    chmodSync(dir, 0o1777);
    assert.match(stateDirProblems(dir, DAEMON_UID).join('\n'), /mode 1777, writable by its group/);
    chmodSync(dir, 0o700);
    chownSync(dir, 103, 103);
    assert.match(stateDirProblems(dir, DAEMON_UID).join('\n'), /owned by uid 103, not by the daemon's user \(uid 4242\) or root/);
  });

  it('refuses a state file another user owns or may write, and a symbolic link', () => {
    const dir = stateDir();
    chmodSync(join(dir, 'whitelist.xml'), 0o646);
    chownSync(join(dir, 'accept-sha256'), 1000, 1000);
    symlinkSync('/etc/passwd', join(dir, 'whitelist.json'));
    mkdirSync(join(dir, 'journal'), { mode: 0o777 });
    chmodSync(join(dir, 'journal'), 0o777);
    const problems = stateDirProblems(dir, DAEMON_UID).join('\n');
    assert.match(problems, /whitelist\.xml has mode 0646, writable by others/);
    assert.match(problems, /accept-sha256 is owned by uid 1000/);
    assert.match(problems, /whitelist\.json is a symbolic link/);
    assert.match(problems, /directory .*journal has mode 0777/);
    assert.throws(() => assertStateDirPrivate(dir, DAEMON_UID), /^Error: refusing the state dir: .*chmod go-w/);
  });

  it('follows the directory itself when it is a symbolic link (DynamicUser: /var/lib/NAME → private/NAME)', () => {
    const dir = stateDir();
    const link = `${dir}-link`;
    symlinkSync(dir, link);
    dirs.push(link);
    assert.deepEqual(stateDirProblems(link, DAEMON_UID), []);
  });

  it('refuses a state dir under a directory another user owns or may write, unless sticky like /tmp', () => {
    const parent = mkdtempSync(join(tmpdir(), 'mssante-state-parent-'));
    dirs.push(parent);
    const dir = join(parent, 'state');
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, DAEMON_UID, DAEMON_UID);
    assert.deepEqual(stateDirProblems(dir, DAEMON_UID), [], 'a parent owned by root, 0700, under sticky /tmp');
    chmodSync(parent, 0o777);
    assert.match(
      stateDirProblems(dir, DAEMON_UID).join('\n'),
      /directory .*mssante-state-parent-\w+ above the state dir has mode 0777: .*chmod go-w/,
    );
    chmodSync(parent, 0o1777);
    assert.deepEqual(stateDirProblems(dir, DAEMON_UID), [], 'sticky: only the owner may rename the state dir');
    chmodSync(parent, 0o755);
    chownSync(parent, 1000, 1000);
    assert.match(
      stateDirProblems(dir, DAEMON_UID).join('\n'),
      /above the state dir is owned by uid 1000, .*could replace the state dir/,
    );
    chownSync(parent, DAEMON_UID, DAEMON_UID);
    assert.deepEqual(stateDirProblems(dir, DAEMON_UID), [], "a parent of the daemon's own user is fine");
  });
});
