/**
 * ConfigReloader in-process: which settings a SIGHUP applies, which it keeps for a restart, and a
 * file that cannot be read or is invalid leaves everything as it runs.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { ConfigReloader, LIVE_FIELDS, LIVE_SETTINGS } from '../../src/config-reload.js';
import { resolveConfig, SETTINGS, settingsHelp, type FlagValues } from '../../src/config.js';
import { createMetrics } from '../../src/observe/metrics.js';
import { LogLevelControl } from '../../src/observe/log-level.js';

function setup(initial: Record<string, unknown>): {
  file: string;
  reloader: ConfigReloader;
  metrics: ReturnType<typeof createMetrics>;
  logs: Array<Record<string, unknown>>;
} {
  const file = join(mkdtempSync(join(tmpdir(), 'cfg-reload-')), 'config.json');
  writeFileSync(file, JSON.stringify(initial));
  const flags: FlagValues = new Map([['whitelist', 'demo']]);
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: 'info' },
    { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const metrics = createMetrics({ defaultMetrics: false });
  const sources = { flags, env: {}, configFile: file };
  return { file, reloader: new ConfigReloader(sources, resolveConfig(flags, {}, file), metrics, logger), metrics, logs };
}

describe('ConfigReloader', () => {
  it('every live setting has its Config field, and the table marks nothing else live', () => {
    assert.deepEqual([...LIVE_SETTINGS].sort(), Object.keys(LIVE_FIELDS).sort());
    for (const key of LIVE_SETTINGS) assert.ok(SETTINGS.some((s) => s.key === key));
    // Listeners and the state dir are bound at start: never live.
    for (const key of ['policy-listen', 'milter-listen', 'http-listen', 'socketmap-listen', 'state-dir', 'whitelist', 'signer'])
      assert.ok(!LIVE_SETTINGS.has(key as never), key);
  });

  it('serve --help marks the live settings', () => {
    const help = settingsHelp();
    for (const s of SETTINGS) {
      const block = help.slice(help.indexOf(`  --${s.key}`)).split('\n      env ')[0]!;
      assert.equal(block.includes('[live: SIGHUP applies it]'), LIVE_SETTINGS.has(s.key), s.key);
    }
  });

  it('applies live settings, keeps the others for a restart and says which', () => {
    const { file, reloader, logs } = setup({ 'tls-profile': 'off', 'state-dir': '/tmp/a' });
    writeFileSync(
      file,
      JSON.stringify({ 'tls-profile': 'ref1-v1.7', 'state-dir': '/tmp/b', 'operator-rate': 5, 'log-level': 'warn' }),
    );
    const outcome = reloader.reload();
    assert.equal(outcome.kind, 'applied');
    if (outcome.kind !== 'applied') return;
    assert.deepEqual([...outcome.live].sort(), ['log-level', 'operator-rate', 'tls-profile']);
    assert.deepEqual(outcome.needsRestart, ['state-dir']);
    assert.equal(outcome.config.tlsProfile, 'ref1-v1.7');
    assert.equal(outcome.config.operatorRate, 5);
    assert.equal(outcome.config.logLevel, 'warn');
    assert.equal(outcome.config.stateDir, '/tmp/a', 'kept until a restart');
    assert.deepEqual(logs.find((l) => l['event'] === 'config_needs_restart')?.['settings'], ['state-dir']);
    // Still different from the file at the next SIGHUP: said again, still kept.
    const again = reloader.reload();
    assert.ok(again.kind === 'applied' && again.live.length === 0 && again.needsRestart[0] === 'state-dir');
    assert.equal(reloader.current().stateDir, '/tmp/a');
  });

  it('an unreadable, unparsable or invalid file: counted, logged, nothing changes', async () => {
    const { file, reloader, metrics, logs } = setup({ 'tls-profile': 'ref1-v1.6' });
    const before = reloader.current();
    for (const write of [
      () => writeFileSync(file, '{"tls-profile": '),
      () => writeFileSync(file, JSON.stringify({ 'tls-profile': 'nope' })),
      () => writeFileSync(file, JSON.stringify({ 'no-such-setting': 1 })),
      () => rmSync(file),
    ]) {
      write();
      assert.equal(reloader.reload().kind, 'failed');
      assert.equal(reloader.current(), before);
    }
    assert.equal((await metrics.configReloadFailures.get()).values[0]?.value, 4);
    assert.equal(logs.filter((l) => l['event'] === 'config_reload_failed').length, 4);
  });
});

describe('LogLevelControl', () => {
  it('sets the level of the root and of every child made before', () => {
    const control = new LogLevelControl();
    const root = pino({ level: 'info', onChild: control.onChild }, { write: () => undefined });
    const child = root.child({ component: 'a' });
    const grandchild = child.child({ conn: 1 });
    control.set(root, 'debug');
    assert.deepEqual([root.level, child.level, grandchild.level], ['debug', 'debug', 'debug']);
  });
});
