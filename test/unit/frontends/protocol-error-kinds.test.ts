/**
 * protocol_errors_total{frontend,kind}: every kind a frontend can report is declared as a typed list
 * (its codec's, its session's, the skeleton's), and each series exists at 0 from the start, so that a
 * rate() or an alert sees the first error instead of a series that appears with it.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { MILTER_PROTOCOL_ERROR_KINDS, startMilterServer } from '../../../src/frontends/milter/server.js';
import { MILTER_CODEC_ERROR_KINDS } from '../../../src/frontends/milter/codec.js';
import { MILTER_SESSION_ERROR_KINDS } from '../../../src/frontends/milter/session.js';
import { POLICY_CODEC_ERROR_KINDS } from '../../../src/frontends/policy/codec.js';
import { startPolicyServer } from '../../../src/frontends/policy/server.js';
import { SOCKETMAP_CODEC_ERROR_KINDS } from '../../../src/frontends/socketmap/codec.js';
import { SocketmapTables } from '../../../src/frontends/socketmap/maps.js';
import { startSocketmapServer } from '../../../src/frontends/socketmap/server.js';
import { LISTENER_DEFAULTS } from '../../../src/listener-defaults.js';
import { STREAM_ERROR_KINDS } from '../../../src/net/stream-server.js';
import { createMetrics, type Metrics } from '../../../src/observe/metrics.js';
import { POLICY_ACTIONS } from '../../../src/trust/reasons.js';

const closers: Array<() => Promise<void>> = [];
after(async () => Promise.all(closers.map((close) => close())));

/** kind → value of protocol_errors_total for one frontend. */
async function series(metrics: Metrics, frontend: string): Promise<Map<string, number>> {
  const { values } = await metrics.protocolErrors.get();
  return new Map(values.filter((v) => v.labels['frontend'] === frontend).map((v) => [String(v.labels['kind']), v.value]));
}

describe('protocol-error kinds', () => {
  const logger = pino({ level: 'silent' });

  it('policy: the codec kinds and the skeleton kinds, each at 0 once listening', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const server = await startPolicyServer('127.0.0.1:0', {
      ...LISTENER_DEFAULTS.policy,
      logger,
      metrics,
      handle: () => POLICY_ACTIONS.ok,
    });
    closers.push(() => server.close(0));
    const expected = [...STREAM_ERROR_KINDS, ...POLICY_CODEC_ERROR_KINDS].sort();
    assert.deepEqual(
      [...(await series(metrics, 'policy'))].sort(),
      expected.map((kind) => [kind, 0]),
    );
  });

  it('milter: the codec, session and server kinds, each at 0 once listening', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const server = await startMilterServer('127.0.0.1:0', {
      ...LISTENER_DEFAULTS.milter,
      logger,
      metrics,
      onMailFrom: () => ({ action: 'continue' }),
    });
    closers.push(() => server.close(0));
    for (const kind of [...MILTER_CODEC_ERROR_KINDS, ...MILTER_SESSION_ERROR_KINDS, 'idle_timeout', 'macro_stage_ignored'])
      assert.ok((MILTER_PROTOCOL_ERROR_KINDS as readonly string[]).includes(kind), kind);
    const expected = [...STREAM_ERROR_KINDS, ...MILTER_PROTOCOL_ERROR_KINDS].sort();
    assert.deepEqual(
      [...(await series(metrics, 'milter'))].sort(),
      expected.map((kind) => [kind, 0]),
    );
  });

  it('socketmap: the codec kinds and the skeleton kinds, each at 0 once listening', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const server = await startSocketmapServer('127.0.0.1:0', {
      ...LISTENER_DEFAULTS.socketmap,
      logger,
      metrics,
      tables: new SocketmapTables({ tlsPolicy: 'secure', transport: 'smtp:' }),
      currentIndex: () => null,
    });
    closers.push(() => server.close(0));
    const expected = [...STREAM_ERROR_KINDS, ...SOCKETMAP_CODEC_ERROR_KINDS].sort();
    assert.deepEqual(
      [...(await series(metrics, 'socketmap'))].sort(),
      expected.map((kind) => [kind, 0]),
    );
  });

  it('the kind lists hold no duplicate', () => {
    for (const list of [POLICY_CODEC_ERROR_KINDS, MILTER_PROTOCOL_ERROR_KINDS, SOCKETMAP_CODEC_ERROR_KINDS, STREAM_ERROR_KINDS])
      assert.equal(new Set(list).size, list.length);
  });
});
