/**
 * `--trace-file`: the decision trace written to a file of its own, so a high decision rate does not
 * go through journald's rate limit. Lines are copied into one reusable buffer and written with one
 * write(2) per event-loop turn (a batch of whole lines); the buffer is bounded, and a line that does
 * not fit is dropped and counted (like the stdout log buffer). SIGUSR1 → `reopen()`: logrotate renames
 * the file, the daemon opens a new one at the same path; what was written before the signal stays in
 * the renamed file, what was still buffered goes to the new one — nothing is lost.
 */
import { closeSync, openSync, write, writeSync } from 'node:fs';

/** Most bytes held in memory for the trace file (buffered + being written); past it lines are dropped. */
const TRACE_BUFFER_MAX_BYTES = 8 * 1024 * 1024;
const INITIAL_BYTES = 64 * 1024;
/** Worst case of UTF-8 bytes per UTF-16 code unit: a line of `n` units never needs more than 3n bytes. */
const MAX_UTF8_PER_UNIT = 3;

export interface TraceFileSinkOptions {
  readonly path: string;
  readonly maxBufferBytes?: number;
  /** Called once per dropped line (buffer full, or a write that failed). */
  readonly onDrop?: (lines: number) => void;
  /** Called when the file cannot be (re)opened or written; the sink goes on with what it has. */
  readonly onError?: (error: Error) => void;
}

export class TraceFileSink {
  readonly path: string;
  private readonly maxBytes: number;
  private readonly onDrop: (lines: number) => void;
  private readonly onError: (error: Error) => void;
  private fd: number;
  /** Lines of the current turn, reused from batch to batch (swapped with `spare` while a write runs). */
  private active: Buffer;
  private spare: Buffer;
  private length = 0;
  private lines = 0;
  /** Bytes and lines of the batch being written (0 when idle). */
  private inFlightBytes = 0;
  private inFlightLines = 0;
  private scheduled = false;
  private reopenWanted = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  /** Lines dropped since the sink was opened (also reported through onDrop). */
  dropped = 0;

  constructor(options: TraceFileSinkOptions) {
    this.path = options.path;
    this.maxBytes = options.maxBufferBytes ?? TRACE_BUFFER_MAX_BYTES;
    this.onDrop = options.onDrop ?? (() => undefined);
    this.onError = options.onError ?? (() => undefined);
    // Opening at start-up is synchronous: a trace file that cannot be opened is a start-up error.
    this.fd = openTrace(this.path);
    const initial = Math.min(INITIAL_BYTES, this.maxBytes);
    this.active = Buffer.allocUnsafe(initial);
    this.spare = Buffer.allocUnsafe(initial);
  }

  /** Buffers one whole line (ending in \n); it is written at the end of this event-loop turn. */
  readonly write = (line: string): void => {
    if (this.closed) return this.drop(1);
    let room = this.active.length - this.length;
    if (line.length * MAX_UTF8_PER_UNIT > room) {
      const bytes = Buffer.byteLength(line);
      if (bytes > room && !this.grow(bytes)) return this.drop(1);
      room = this.active.length - this.length;
    }
    this.length += this.active.write(line, this.length, room, 'utf8');
    this.lines += 1;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  };

  /** logrotate's postrotate (SIGUSR1): open the path anew once the write in flight has finished. */
  reopen(): void {
    if (this.closed) return;
    this.reopenWanted = true;
    if (this.inFlightBytes === 0) this.doReopen();
  }

  /** Resolves when every buffered line has been written (or dropped). */
  drain(): Promise<void> {
    if (this.length === 0 && this.inFlightBytes === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      if (this.inFlightBytes === 0) this.flush();
    });
  }

  /** Writes what is left synchronously and closes the file (at exit). */
  closeSync(): void {
    if (this.closed) return;
    this.closed = true;
    // A write in flight still owns `spare`: the bytes in `active` come after it either way.
    try {
      let offset = 0;
      while (offset < this.length) offset += writeSync(this.fd, this.active, offset, this.length - offset);
    } catch (error) {
      this.drop(this.lines);
      this.onError(error as Error);
    }
    this.length = 0;
    this.lines = 0;
    if (this.inFlightBytes === 0) closeQuietly(this.fd);
  }

  private drop(lines: number): void {
    this.dropped += lines;
    this.onDrop(lines);
  }

  /** Makes room for `bytes` more in `active` within the bound; false when the bound forbids it. */
  private grow(bytes: number): boolean {
    const needed = this.length + bytes;
    if (needed + this.inFlightBytes > this.maxBytes) return false;
    let size = this.active.length;
    while (size < needed) size *= 2;
    const bigger = Buffer.allocUnsafe(Math.min(size, this.maxBytes));
    this.active.copy(bigger, 0, 0, this.length);
    this.active = bigger;
    return true;
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.inFlightBytes > 0) return; // the write's callback flushes again
    if (this.length === 0) {
      this.settle();
      return;
    }
    const batch = this.active;
    this.active = this.spare;
    this.spare = batch;
    this.inFlightBytes = this.length;
    this.inFlightLines = this.lines;
    this.length = 0;
    this.lines = 0;
    this.writeFrom(0);
  };

  private writeFrom(offset: number): void {
    const fd = this.fd;
    write(fd, this.spare, offset, this.inFlightBytes - offset, null, (error, written) => {
      if (error !== null) {
        this.onError(error);
        this.drop(this.inFlightLines);
      } else if (offset + written < this.inFlightBytes) {
        this.writeFrom(offset + written);
        return;
      }
      this.inFlightBytes = 0;
      this.inFlightLines = 0;
      if (this.closed) {
        closeQuietly(fd);
        this.settle();
        return;
      }
      if (this.reopenWanted) this.doReopen();
      if (this.length > 0) this.flush();
      else this.settle();
    });
  }

  private doReopen(): void {
    this.reopenWanted = false;
    let fd: number;
    try {
      fd = openTrace(this.path);
    } catch (error) {
      // Keep writing to the open (renamed) file rather than losing lines.
      this.onError(error as Error);
      return;
    }
    const old = this.fd;
    this.fd = fd;
    closeQuietly(old);
  }

  private settle(): void {
    if (this.length > 0 || this.inFlightBytes > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

function openTrace(path: string): number {
  return openSync(path, 'a', 0o640);
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
