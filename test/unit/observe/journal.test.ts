/**
 * journald priorities: each log line may start with its syslog priority <N>, which journald strips
 * and files as PRIORITY (journalctl -p warning finds warnings among the trace lines). Auto-detected
 * from JOURNAL_STREAM, as systemd sets it. The daemon's own lines under journald:
 * test/system/observe/journal.test.ts.
 */
import assert from 'node:assert/strict';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { effectiveLogFormat, journalPrefix, stdoutIsJournal } from '../../../src/observe/journal.js';

describe('journald priority prefix', () => {
  it('maps pino levels to syslog priorities', () => {
    const line = (level: string): string => `{"level":"${level}","time":"2026-12-02T00:00:00.000Z","msg":"x"}\n`;
    assert.equal(journalPrefix(line('fatal')), '<2>');
    assert.equal(journalPrefix(line('error')), '<3>');
    assert.equal(journalPrefix(line('warn')), '<4>');
    assert.equal(journalPrefix(line('info')), '<6>');
    assert.equal(journalPrefix(line('debug')), '<7>');
    assert.equal(journalPrefix(line('trace')), '<7>');
    assert.equal(journalPrefix('not json\n'), '<6>');
    // A level word later in the line (attacker-controlled field) does not count.
    assert.equal(journalPrefix('{"level":"info","sender":"{\\"level\\":\\"fatal\\""}\n'), '<6>');
  });

  it('recognises journald on stdout from JOURNAL_STREAM (device:inode), and nothing else', () => {
    const dir = mkdtempSync(join(tmpdir(), 'journal-'));
    const fd = openSync(join(dir, 'out'), 'w');
    try {
      const st = fstatSync(fd);
      assert.equal(stdoutIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd), true);
      assert.equal(stdoutIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }, fd), false);
      assert.equal(stdoutIsJournal({ JOURNAL_STREAM: 'garbage' }, fd), false);
      assert.equal(stdoutIsJournal({}, fd), false);
      assert.equal(effectiveLogFormat('json', { JOURNAL_STREAM: `${st.dev}:${st.ino}` }), 'json');
      assert.equal(effectiveLogFormat('journal', {}), 'journal');
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
