import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { TraceFileSink } from '../../../src/observe/trace-sink.js';

const dir = mkdtempSync(join(tmpdir(), 'trace-sink-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => join(dir, `trace-${n++}.log`);
const line = (i: number, pad = 0): string => `{"i":${i},"pad":"${'x'.repeat(pad)}"}\n`;
const read = (path: string): number[] =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { i: number }).i);

describe('TraceFileSink', () => {
  it('writes the lines of one event-loop turn together, at the end of the turn, in order', async () => {
    const path = freshPath();
    const sink = new TraceFileSink({ path });
    for (let i = 0; i < 1000; i++) sink.write(line(i, 50));
    assert.equal(statSync(path).size, 0, 'nothing written during the turn');
    await sink.drain();
    assert.deepEqual(
      read(path),
      Array.from({ length: 1000 }, (_, i) => i),
    );
    sink.closeSync();
  });

  it('keeps non-ASCII text whole (UTF-8) across buffer growth', async () => {
    const path = freshPath();
    const sink = new TraceFileSink({ path });
    const text = 'é€😀'.repeat(30_000); // larger than the initial buffer
    sink.write(`${JSON.stringify({ i: 0, text })}\n`);
    await sink.drain();
    sink.closeSync();
    assert.equal((JSON.parse(readFileSync(path, 'utf8')) as { text: string }).text, text);
  });

  it('is bounded: lines past the bound are dropped whole and counted, the rest are intact', async () => {
    const path = freshPath();
    const drops: number[] = [];
    const sink = new TraceFileSink({ path, maxBufferBytes: 64 * 1024, onDrop: (k) => drops.push(k) });
    const big = line(0, 1000).length; // ~1 KB, like a real trace line
    const total = 200;
    for (let i = 0; i < total; i++) sink.write(line(i, 1000));
    await sink.drain();
    sink.closeSync();
    const written = read(path);
    const fit = Math.floor((64 * 1024) / big);
    assert.equal(written.length, fit);
    assert.deepEqual(
      written,
      Array.from({ length: fit }, (_, i) => i),
      'the first lines, whole and in order',
    );
    assert.equal(sink.dropped, total - fit);
    assert.equal(
      drops.reduce((a, b) => a + b, 0),
      total - fit,
      'every drop reported',
    );
    assert.ok(readFileSync(path, 'utf8').endsWith('\n'));
  });

  it('a line larger than the whole bound is dropped, the next one still goes', async () => {
    const path = freshPath();
    const sink = new TraceFileSink({ path, maxBufferBytes: 1024 });
    sink.write(line(0, 5000));
    sink.write(line(1));
    await sink.drain();
    sink.closeSync();
    assert.deepEqual(read(path), [1]);
    assert.equal(sink.dropped, 1);
  });

  it('reopen after a rename (logrotate): earlier lines stay in the renamed file, later ones go to a new file, none lost', async () => {
    const path = freshPath();
    const sink = new TraceFileSink({ path });
    for (let i = 0; i < 100; i++) sink.write(line(i));
    await sink.drain();
    renameSync(path, `${path}.1`);
    // Lines written after the rename but before the signal still land in the renamed file.
    for (let i = 100; i < 150; i++) sink.write(line(i));
    await sink.drain();
    sink.reopen();
    for (let i = 150; i < 300; i++) sink.write(line(i));
    await sink.drain();
    sink.closeSync();
    assert.deepEqual(
      read(`${path}.1`),
      Array.from({ length: 150 }, (_, i) => i),
    );
    assert.deepEqual(
      read(path),
      Array.from({ length: 150 }, (_, i) => 150 + i),
    );
  });

  it('reopen while a batch is being written loses nothing', async () => {
    const path = freshPath();
    const sink = new TraceFileSink({ path });
    const all: number[] = [];
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 500; i++) sink.write(line(round * 500 + i, 200));
      if (round === 10) {
        // Let the flush start, then rotate with the write still in flight.
        await new Promise((r) => setImmediate(r));
        renameSync(path, `${path}.1`);
        sink.reopen();
      }
      await new Promise((r) => setImmediate(r));
    }
    await sink.drain();
    sink.closeSync();
    all.push(...read(`${path}.1`), ...read(path));
    assert.deepEqual(
      all,
      Array.from({ length: 10_000 }, (_, i) => i),
    );
    assert.equal(sink.dropped, 0);
  });

  it('closeSync writes what is still buffered', () => {
    const path = freshPath();
    const sink = new TraceFileSink({ path });
    for (let i = 0; i < 10; i++) sink.write(line(i));
    sink.closeSync();
    assert.deepEqual(
      read(path),
      Array.from({ length: 10 }, (_, i) => i),
    );
  });
});
