import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { METRIC_PREFIX, createMetrics } from '../../../src/observe/metrics.js';

const NAME = `${METRIC_PREFIX}decision_duration_seconds`;

/** The histogram as prom-client itself builds it from the same observations: what countDecision must export. */
function reference(observations: ReadonlyArray<readonly ['policy' | 'milter', number]>): Promise<string> {
  const registry = new Registry();
  const h = new Histogram({
    name: NAME,
    help: 'Time from a complete request to its answer being written',
    labelNames: ['frontend'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5],
    registers: [registry],
  });
  for (const [frontend, seconds] of observations) h.labels({ frontend }).observe(seconds);
  return registry.getSingleMetricAsString(NAME);
}

/** Durations on every bound, between them, above the last one; sums that are not exact in binary. */
function observations(): Array<['policy' | 'milter', number]> {
  const out: Array<['policy' | 'milter', number]> = [];
  const values = [0, 0.00005, 0.00004999, 0.0000731, 0.0001, 0.00017, 0.0005, 0.0031, 0.01, 0.1, 0.49, 0.5, 0.51, 7, 1e-7];
  for (let i = 0; i < 300; i++) out.push([i % 7 === 0 ? 'milter' : 'policy', values[i % values.length]! * (1 + (i % 3) / 10)]);
  return out;
}

describe('decision_duration_seconds', () => {
  it('exports, at each read, exactly what prom-client would have from the same observations', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const all = observations();
    // Read between observations too: values are totals, never added twice.
    for (const [i, [frontend, seconds]] of all.entries()) {
      metrics.countDecision(frontend, 'pass', 'ok', seconds);
      if (i === 100 || i === 101 || i === 250) {
        assert.equal(await metrics.registry.getSingleMetricAsString(NAME), await reference(all.slice(0, i + 1)));
      }
    }
    assert.equal(await metrics.registry.getSingleMetricAsString(NAME), await reference(all));
    assert.equal(await metrics.registry.getSingleMetricAsString(NAME), await reference(all));
    const json = (await metrics.decisionDuration.get()).values;
    const count = json.find((v) => v.metricName === `${NAME}_count` && v.labels.frontend === 'policy');
    assert.equal(count?.value, all.filter(([f]) => f === 'policy').length);
  });

  it('has no series before the first decision of a frontend, as before', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    assert.equal(await metrics.registry.getSingleMetricAsString(NAME), await reference([]));
    metrics.countDecision('policy', 'pass', 'ok', 0.0002);
    const text = await metrics.registry.getSingleMetricAsString(NAME);
    assert.equal(text, await reference([['policy', 0.0002]]));
    assert.doesNotMatch(text, /milter/);
  });

  it('starts again from zero after a reset', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.countDecision('policy', 'pass', 'ok', 0.001);
    await metrics.registry.metrics();
    metrics.registry.resetMetrics();
    metrics.countDecision('milter', 'reject', 'cert_not_listed', 0.003);
    assert.equal(await metrics.registry.getSingleMetricAsString(NAME), await reference([['milter', 0.003]]));
  });

  it('refuses a duration that is not a number, as prom-client does', () => {
    const metrics = createMetrics({ defaultMetrics: false });
    assert.throws(() => metrics.countDecision('policy', 'pass', 'ok', Number.NaN), TypeError);
  });
});
