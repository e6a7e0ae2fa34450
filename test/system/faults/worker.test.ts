/**
 * The list worker's heap limit: a list that makes parsing exhaust the worker's memory is a failed
 * load (the life cycle calls it worker_failed), the main thread is untouched, and the next load gets
 * a fresh worker. The daemon's limit (1536 MiB) is not a flag; the same class is driven here with a
 * small one so that the limit is reached in a second rather than after gigabytes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getPriority } from 'node:os';
import { join } from 'node:path';
import { PrepareWorker } from '../../../src/whitelist/prepare-worker.js';
import { REPO_ROOT } from '../../support/fixtures.js';
import { BASE_ENTRIES, isoDays } from '../../support/faults.js';
import { buildListXml, LIST_NS } from '../../support/xmlsec.js';

const NO_TRUST = { signer: [], signerCa: [], signerCn: [], signerSubject: [] };

describe('list worker heap limit', { timeout: 300_000 }, () => {
  it('a list that exhausts the worker heap fails as a value; the next list loads in a fresh worker', async (t) => {
    const worker = new PrepareWorker(48);
    // The worker is unref'd (it must never keep the daemon alive): hold the loop open meanwhile, as the daemon's sockets do.
    const keepAlive = setInterval(() => {}, 1000);
    try {
      // 200 000 entries of 100 bytes: ~20 MB of XML, far more once parsed into objects.
      const domaine = '<Domaine><Nom>a.mssante.test</Nom><DNCertificatOperateur>CN=x</DNCertificatOperateur></Domaine>';
      const bomb = `<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="${LIST_NS}"><DateDeGeneration>${isoDays(0)}</DateDeGeneration><ListeDomaines>${domaine.repeat(200_000)}</ListeDomaines></ListeBlancheMSSante>`;
      const crashed = await worker.run({
        bytes: Buffer.from(bomb),
        trust: NO_TRUST,
        allowUnsigned: true,
        maxEntries: 1_000_000,
        background: true,
      });
      assert.equal(crashed.result, null, 'no result from a worker out of memory');
      assert.match(crashed.error ?? '', /memory|exited/i, crashed.error ?? '');
      t.diagnostic(`worker failure: ${crashed.error ?? ''}`);

      const good = await worker.run({
        bytes: Buffer.from(buildListXml(BASE_ENTRIES, isoDays(-1))),
        trust: NO_TRUST,
        allowUnsigned: true,
        maxEntries: 1000,
        background: true,
      });
      assert.ok(good.result?.ok === true, `the next list loads: ${good.error ?? ''}`);
      assert.equal(good.result.ok && good.result.list.entries.length, BASE_ENTRIES.length);
    } finally {
      clearInterval(keepAlive);
      await worker.close();
    }
  });

  it('deep nested namespace declarations are refused at once; a job past prepareTimeoutMs (--prepare-timeout) is cut', async () => {
    const worker = new PrepareWorker();
    const keepAlive = setInterval(() => {}, 1000);
    try {
      // Each level declares a namespace: xmldom's cost grew with depth × declarations (review: 0.9 MB took
      // 14 s). libxml2 stops at its nesting limit (2048 levels) instead.
      const depth = 20_000;
      let open = '';
      let close = '';
      for (let i = 0; i < depth; i++) {
        open += `<a xmlns:p${i}="u${i}">`;
        close += '</a>';
      }
      const deep = `<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="${LIST_NS}"><DateDeGeneration>${isoDays(0)}</DateDeGeneration>${open}${close}<ListeDomaines/><Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/></ListeBlancheMSSante>`;
      const trust = { ...NO_TRUST, signer: [join(REPO_ROOT, 'examples', 'demo-signer.pem')] };
      const refused = await worker.run(
        { bytes: Buffer.from(deep), trust, allowUnsigned: false, maxEntries: 1000, background: true },
        120_000,
      );
      assert.equal(refused.result?.ok, false, refused.error ?? '');
      assert.equal(refused.result.ok ? null : refused.result.reason, 'xml_malformed');

      // Nothing is slow enough now to need the deadline: a 10 ms one, which starting a worker alone
      // exceeds, proves the cut.
      const started = Date.now();
      const cut = await worker.run(
        { bytes: Buffer.from(deep), trust, allowUnsigned: false, maxEntries: 1000, background: true },
        10,
      );
      assert.equal(cut.result, null);
      assert.match(cut.error ?? '', /took longer than 0\.01 s/);
      assert.ok(Date.now() - started < 10_000, 'the deadline, not the document, ended the job');

      const good = await worker.run(
        {
          bytes: Buffer.from(buildListXml(BASE_ENTRIES, isoDays(-1))),
          trust: NO_TRUST,
          allowUnsigned: true,
          maxEntries: 1000,
          background: true,
        },
        30_000,
      );
      assert.ok(good.result?.ok === true, `the next list loads in a fresh worker: ${good.error ?? ''}`);
    } finally {
      clearInterval(keepAlive);
      await worker.close();
    }
  });

  it('runs at nice 19 only in the background: with nothing in force (start-up) the list is urgent', async (t) => {
    if (process.platform !== 'linux') return t.skip('thread priorities are read from /proc (Linux)');
    const worker = new PrepareWorker(256);
    const keepAlive = setInterval(() => {}, 1000);
    try {
      const job = (background: boolean) => ({
        bytes: Buffer.from(buildListXml(BASE_ENTRIES, isoDays(-1))),
        trust: NO_TRUST,
        allowUnsigned: true,
        maxEntries: 1000,
        background,
      });
      const background = await worker.run(job(true), 120_000);
      assert.ok(background.result?.ok === true, background.error ?? '');
      assert.equal(background.niceness, 19);
      const urgent = await worker.run(job(false), 120_000);
      assert.ok(urgent.result?.ok === true, urgent.error ?? '');
      assert.equal(urgent.niceness, getPriority(), "the daemon's own priority");
    } finally {
      clearInterval(keepAlive);
      await worker.close();
    }
  });
});
