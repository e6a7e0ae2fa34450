/**
 * The daemon inside a real Postfix through policy delegation: deploy/postfix/main.cf.policy as
 * operators copy it, the real daemon, swaks as the sending MTA (scenarios in
 * test/support/postfix-scenarios.ts). Also keeps the two Postfix deploy files' TLS lines in step.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { POSTFIX_DEPLOY_DIR } from '../../support/postfix.js';
import { describePostfixScenarios } from '../../support/postfix-scenarios.js';

describePostfixScenarios('policy');

test('main.cf.milter keeps the TLS lines of main.cf.policy', () => {
  const tlsLines = (file: string): string[] =>
    readFileSync(join(POSTFIX_DEPLOY_DIR, file), 'utf8')
      .split('\n')
      .filter((l) => /^(smtpd_tls_|tls_)/.test(l) && !/^smtpd_tls_(CAfile|cert_file|key_file) /.test(l));
  const policy = tlsLines('main.cf.policy');
  assert.ok(policy.includes('smtpd_tls_security_level = encrypt'));
  assert.ok(policy.includes('smtpd_tls_ask_ccert = yes'));
  assert.ok(policy.includes('smtpd_tls_req_ccert = no'));
  assert.deepEqual(tlsLines('main.cf.milter'), policy);
});
