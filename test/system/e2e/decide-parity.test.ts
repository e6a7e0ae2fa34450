/**
 * /v1/decide (the support team's dry run) and the policy protocol (Postfix's path) give the same
 * answer for the same facts: a property test against one daemon started in-process.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { DEMO_SIGNER, DEMO_WHITELIST, resolveConfig } from '../../../src/config.js';
import { startDaemon, type RunningDaemon } from '../../../src/daemon.js';
import { waitFor } from '../../support/faults.js';
import { PolicyClient } from '../../support/policy-client.js';

describe('/v1/decide and the policy protocol agree', () => {
  let daemon: RunningDaemon;
  let client: PolicyClient;

  before(async () => {
    const config = resolveConfig(
      new Map<string, string | boolean | string[]>([
        ['whitelist', DEMO_WHITELIST],
        ['signer', [DEMO_SIGNER]],
        ['state-dir', mkdtempSync(join(tmpdir(), 'parity-'))],
        ['policy-listen', '127.0.0.1:0'],
        ['http-listen', '127.0.0.1:0'],
        ['trusted-issuer-cn', []],
      ]),
      {},
      null,
    );
    daemon = await startDaemon(config, { logger: pino({ level: 'silent' }), writeLine: () => undefined });
    // A deadline, not a speed: the list is prepared in a worker, slow when both cores are busy.
    await waitFor('the demo list in force', () => daemon.lifecycle.current() !== null, 120_000);
    client = await PolicyClient.connect(daemon.addresses.policy!);
  });

  after(async () => {
    client?.close();
    await daemon?.shutdown('test end');
  });

  it('for random facts, both paths give the same action', async () => {
    const cns = fc.constantFrom('mx.demo-hopital.test', 'smtp.demo-clinique.test', 'MX.DEMO-HOPITAL.TEST', 'mx.evil.test', '');
    const senders = fc.oneof(
      fc.constantFrom(
        '',
        'a@demo-hopital.mssante.fr',
        'b@pharmacie.demo-hopital.mssante.fr',
        'c@demo-clinique.mssante.fr',
        'd@x.demo-hopital.mssante.fr',
        'postmaster',
        'e@[127.0.0.1]',
      ),
      fc.emailAddress(),
    );
    const dns = fc.constantFrom(
      'C=FR,ST=Paris (75),O=CENTRE HOSPITALIER DE DEMONSTRATION,OU=1750000000,CN=mx.demo-hopital.test',
      '/C=FR/ST=Paris (75)/O=AUTRE/OU=1750000000/CN=mx.demo-hopital.test',
      'CN=smtp.demo-clinique.test,OU=318310021300028,O=CLINIQUE "DEMO",ST=Haute-Garonne (31),C=FR',
      'garbage',
    );
    const facts = fc.record(
      {
        sender: senders,
        ccert_subject: cns,
        ccert_issuer: fc.constantFrom('AC DEMO', ''),
        x_ccert_dn: dns,
        x_ccert_verified: fc.constantFrom('0', '1'),
        encryption_protocol: fc.constantFrom('TLSv1.3', 'TLSv1.2', 'TLS1.2', ''),
        encryption_cipher: fc.constantFrom('TLS_AES_256_GCM_SHA384', 'ECDHE-RSA-AES256-SHA384'),
        protocol_state: fc.constantFrom('RCPT', 'MAIL', 'DATA'),
      },
      { requiredKeys: ['sender'] },
    );
    let compared = 0;
    await fc.assert(
      fc.asyncProperty(facts, async (input) => {
        const viaPolicy = await client.ask(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)));
        const res = await fetch(`http://${daemon.addresses.http}/v1/decide`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(input),
        });
        assert.equal(res.status, 200);
        const viaHttp = (await res.json()) as { action: string };
        assert.equal(viaHttp.action, viaPolicy, JSON.stringify(input));
        compared++;
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 300) > 1000 ? 1000 : 300 },
    );
    assert.ok(compared >= 300);
  });
});
