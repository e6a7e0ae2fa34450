/**
 * The shipped Postfix snippets compose: appended to one main.cf (a Postfix that both receives and
 * relays into the trust space), the receiving check stays in force and the sending side's refusal
 * too — no parameter set twice, which Postfix would resolve silently in favour of the later one. A
 * real `postconf -c DIR` is the oracle; the internal listener the README gives parses as written.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { REPO_ROOT } from '../../support/fixtures.js';
import { POSTFIX_DEPLOY_DIR } from '../../support/postfix.js';
import { toolOrSkip } from '../../support/tools.js';

const snippet = (name: string): string => readFileSync(join(POSTFIX_DEPLOY_DIR, name), 'utf8');

/** The internal listener of README "Outbound (sending side)", as printed there. */
function readmeInternalListener(): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const m = /```\n(# master\.cf: internal submission into the trust space[^`]*?)```/.exec(readme);
  assert.ok(m, 'README gives the internal listener');
  return m[1]!;
}

function postconf(bin: string, dir: string, args: readonly string[]): { stdout: string; stderr: string } {
  const r = spawnSync(bin, ['-c', dir, ...args], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** Parameters a snippet sets (name = value lines at the start of a line). */
function parametersSet(text: string): string[] {
  return [...text.matchAll(/^([a-z_][a-z0-9_]*)\s*=/gm)].map((m) => m[1]!);
}

describe('deploy/postfix snippets in one main.cf', () => {
  it('main.cf.policy, main.cf.milter and main.cf.outbound set no parameter in common with the outbound one', () => {
    const outbound = new Set(parametersSet(snippet('main.cf.outbound')));
    for (const inbound of ['main.cf.policy', 'main.cf.milter']) {
      assert.deepEqual(
        parametersSet(snippet(inbound)).filter((p) => outbound.has(p)),
        [],
        `${inbound} and main.cf.outbound both set these`,
      );
    }
  });

  for (const order of [
    ['main.cf.policy', 'main.cf.outbound'],
    ['main.cf.outbound', 'main.cf.policy'],
  ]) {
    it(`${order.join(' then ')}: postconf shows check_policy_service and the recipient refusal in force, no override`, (t: TestContext) => {
      const bin = toolOrSkip(t, 'postconf');
      if (bin === null) return;
      const dir = mkdtempSync(join(tmpdir(), 'mssante-postconf-'));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      writeFileSync(join(dir, 'main.cf'), ['compatibility_level = 3.6', ...order.map(snippet)].join('\n'));
      writeFileSync(join(dir, 'master.cf'), `${snippet('master.cf.outbound')}\n${readmeInternalListener()}`);
      const r = postconf(bin, dir, ['-h', 'smtpd_recipient_restrictions', 'smtpd_relay_restrictions', 'transport_maps']);
      assert.doesNotMatch(r.stderr, /overriding earlier entry/);
      const [recipient, relay, transport] = r.stdout.trim().split('\n');
      assert.match(
        recipient!,
        /^reject_non_fqdn_recipient, reject_unauth_destination, check_policy_service \{ \$mssante_policy_service, /,
      );
      assert.match(relay!, /check_recipient_access \$mssante_socketmap:mssante-recipient-access, permit_mynetworks, /);
      assert.match(relay!, /defer_unauth_destination$/, 'Postfix relay control kept');
      assert.equal(transport, '$mssante_socketmap:mssante-transport');
      // Expanded: the policy service is the site value of main.cf.policy.
      assert.match(
        postconf(bin, dir, ['-hx', 'smtpd_recipient_restrictions']).stdout,
        /check_policy_service \{ inet:127\.0\.0\.1:10040, /,
      );

      // The internal listener drops the receiving checks only: Postfix reads its overrides as written.
      const listener = postconf(bin, dir, [
        '-P',
        '10.0.0.1:2525/inet/smtpd_recipient_restrictions',
        '10.0.0.1:2525/inet/smtpd_tls_ask_ccert',
      ]);
      assert.deepEqual(listener.stdout.trim().split('\n').sort(), [
        '10.0.0.1:2525/inet/smtpd_recipient_restrictions =',
        '10.0.0.1:2525/inet/smtpd_tls_ask_ccert = no',
      ]);
    });
  }
});
