/** One bad-usage path for every command: UsageError and ConfigError → exit 2, `command: message`, usage on stdout. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EXIT_USAGE, UsageError, configFileOf, runCommand } from '../../src/cli-usage.js';
import { ConfigError } from '../../src/config.js';

function capture(): { stdout: string[]; stderr: string[]; out: { stdout: (t: string) => void; stderr: (t: string) => void } } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: { stdout: (t) => void stdout.push(t), stderr: (t) => void stderr.push(t) } };
}

describe('runCommand', () => {
  it('returns the command exit code when nothing is thrown', async () => {
    const c = capture();
    assert.equal(await runCommand('check', () => Promise.resolve(3), c.out), 3);
    assert.deepEqual([c.stdout, c.stderr], [[], []]);
  });

  it('a UsageError exits 2 with the command name before the message', async () => {
    const c = capture();
    const code = await runCommand('export', () => Promise.reject(new UsageError('--format postfix is the only format')), c.out);
    assert.equal(code, EXIT_USAGE);
    assert.deepEqual(c.stderr, ['export: --format postfix is the only format\n']);
    assert.deepEqual(c.stdout, []);
  });

  it('a UsageError with a usage prints it on stdout (what --help prints), with or without a message', async () => {
    const c = capture();
    assert.equal(await runCommand('query', () => Promise.reject(new UsageError(null, 'usage: query ...\n')), c.out), 2);
    assert.deepEqual([c.stdout, c.stderr], [['usage: query ...\n'], []]);
  });

  it('a bad setting (ConfigError, from any source) is a usage error too', async () => {
    const c = capture();
    const code = await runCommand(
      'serve',
      () => Promise.reject(new ConfigError('max-shrink (--max-shrink): 101 is above the maximum 100')),
      c.out,
    );
    assert.equal(code, 2);
    assert.deepEqual(c.stderr, ['serve: max-shrink (--max-shrink): 101 is above the maximum 100\n']);
  });

  it('anything else propagates (exit 1 at the top)', async () => {
    const c = capture();
    await assert.rejects(
      runCommand('check', () => Promise.reject(new TypeError('bug')), c.out),
      TypeError,
    );
  });
});

describe('configFileOf', () => {
  it('--config wins over MSSANTE_POLICYD_CONFIG; neither: no file', () => {
    const env = { MSSANTE_POLICYD_CONFIG: '/etc/env.json' };
    assert.equal(configFileOf({ config: '/etc/flag.json' }, env), '/etc/flag.json');
    assert.equal(configFileOf({}, env), '/etc/env.json');
    assert.equal(configFileOf({}, {}), null);
    assert.equal(configFileOf({ config: true }, {}), null, 'a value that is not a path is no file');
  });
});
