/**
 * Runs prepareList() off the main thread: signature verification and parsing of a large list must
 * never stall answers. One worker per load (prepare-worker-thread.ts): libxml2's WebAssembly memory
 * only grows, and the worker's exit is what gives it back; a crash (an XML bomb hitting the memory
 * limit) is a failed load too. This side never imports the list code, so the main thread never
 * loads WebAssembly.
 */
import { Worker } from 'node:worker_threads';
import type { SignerTrustConfig } from './signature.js';
import type { PrepareResult } from './prepare.js';
import type { ValidEntry } from './validate.js';

export interface PrepareJob {
  readonly id: number;
  readonly bytes: Uint8Array;
  readonly trust: SignerTrustConfig;
  readonly allowUnsigned: boolean;
  readonly maxEntries: number;
  /**
   * A list is in force and answering: this one is prepared at the lowest CPU priority. Without one
   * (start-up, nothing usable) every answer is a tempfail until it is done, so it runs at normal
   * priority.
   */
  readonly background: boolean;
}

export interface JobReply {
  readonly id: number;
  /** The job's bytes, transferred back (see PrepareOutcome.bytes). */
  readonly bytes?: Uint8Array;
  /** A prepared list's `entries` travel as `packed` (and are empty here). */
  readonly result: PrepareResult | null;
  readonly packed?: PackedEntries;
  readonly error: string | null;
  readonly cpuMs: number;
  /** The worker thread's nice value while it worked (null: not Linux, or not readable). */
  readonly niceness: number | null;
}

/**
 * Valid entries as they cross from the worker: each distinct string once, each entry as
 * ENTRY_FIELDS indexes into them (a transferred Int32Array). A structured clone copies a string
 * every time it is referenced: the DN of a certificate serving 40 domains, in three spellings, was
 * copied 120 times, and the list's copy in the daemon was twice what it needs (issue #25).
 */
export interface PackedEntries {
  readonly strings: string[];
  /** Per entry: index, domain, domainUnicode, dnRaw, dnKey, dnDisplay, cn, description, updatedAt (-1: null). */
  readonly fields: Int32Array<ArrayBuffer>;
}

const ENTRY_FIELDS = 9;

/** The worker's side: entries → PackedEntries. */
export function packEntries(entries: readonly ValidEntry[]): PackedEntries {
  const strings: string[] = [];
  const refs = new Map<string, number>();
  const ref = (s: string): number => {
    let i = refs.get(s);
    if (i === undefined) {
      i = strings.length;
      strings.push(s);
      refs.set(s, i);
    }
    return i;
  };
  const fields = new Int32Array(entries.length * ENTRY_FIELDS);
  let k = 0;
  for (const e of entries) {
    fields[k++] = e.index;
    fields[k++] = ref(e.domain);
    fields[k++] = ref(e.domainUnicode);
    fields[k++] = ref(e.dnRaw);
    fields[k++] = ref(e.dnKey);
    fields[k++] = ref(e.dnDisplay);
    fields[k++] = ref(e.cn);
    fields[k++] = ref(e.description);
    fields[k++] = e.updatedAt === null ? -1 : ref(e.updatedAt);
  }
  return { strings, fields };
}

/** The daemon's side: PackedEntries → entries sharing one copy of each string. */
export function unpackEntries(packed: PackedEntries): ValidEntry[] {
  const { strings, fields } = packed;
  const entries: ValidEntry[] = new Array<ValidEntry>(fields.length / ENTRY_FIELDS);
  for (let i = 0, k = 0; k < fields.length; i++, k += ENTRY_FIELDS) {
    const updatedAt = fields[k + 8]!;
    entries[i] = {
      index: fields[k]!,
      domain: strings[fields[k + 1]!]!,
      domainUnicode: strings[fields[k + 2]!]!,
      dnRaw: strings[fields[k + 3]!]!,
      dnKey: strings[fields[k + 4]!]!,
      dnDisplay: strings[fields[k + 5]!]!,
      cn: strings[fields[k + 6]!]!,
      description: strings[fields[k + 7]!]!,
      updatedAt: updatedAt === -1 ? null : strings[updatedAt]!,
    };
  }
  return entries;
}

/** Below this a copy costs nothing worth saving. */
const TRANSFER_MIN_BYTES = 64 * 1024;

/** The ArrayBuffer behind `bytes` when `bytes` is all of it (never a pool slice), large enough to be worth moving. */
export function transferableBuffer(bytes: Uint8Array): ArrayBuffer | null {
  const buffer = bytes.buffer;
  if (!(buffer instanceof ArrayBuffer) || bytes.byteOffset !== 0 || bytes.byteLength !== buffer.byteLength) return null;
  return bytes.byteLength >= TRANSFER_MIN_BYTES ? buffer : null;
}

/** A reply's result with its entries unpacked. */
function resultOf(reply: JobReply): PrepareResult | null {
  const result = reply.result;
  if (result === null || !result.ok || reply.packed === undefined) return result;
  return { ok: true, list: { ...result.list, entries: unpackEntries(reply.packed) } };
}

export interface PrepareOutcome {
  readonly result: PrepareResult | null;
  /**
   * The job's bytes, handed back when they were transferred to the worker rather than copied: the
   * caller's own view is detached then, and these are the bytes to persist. Absent: the caller's
   * view is intact (copied, or the worker failed: the bytes are lost with it).
   */
  readonly bytes?: Uint8Array;
  /** Set when the worker itself failed (crash, memory limit, bad signer file). */
  readonly error: string | null;
  readonly cpuMs: number;
  /** The worker thread's nice value (19 in the background), when known. */
  readonly niceness?: number | null;
}

/** Young generation of the list worker, MiB (semi-spaces of about a third of it). */
const WORKER_YOUNG_GENERATION_MB = 3;

/** The main-thread side: one job at a time (the life cycle serialises loads), a fresh worker for each. */
export class PrepareWorker {
  private worker: Worker | null = null;
  private nextId = 1;

  constructor(private readonly maxHeapMb: number = 1536) {}

  private spawn(): Worker {
    const self = import.meta.url;
    // A small young generation (V8's default grows to 3 x 16 MiB): the DOM of a list outlives
    // scavenges anyway, and the process's peak RSS while a list is verified drops (README, Performance).
    const options = {
      resourceLimits: {
        maxOldGenerationSizeMb: this.maxHeapMb,
        maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB,
        stackSizeMb: 8,
      },
    };
    let worker: Worker;
    if (self.endsWith('.ts')) {
      // Under tsx (tests, development) a worker does not inherit tsx's loader: register it first.
      const tsxApi = import.meta.resolve('tsx/esm/api');
      const module = new URL('./prepare-worker-thread.ts', self).href;
      worker = new Worker(
        `import(${JSON.stringify(tsxApi)}).then((t) => { t.register(); return import(${JSON.stringify(module)}); });`,
        { ...options, eval: true },
      );
    } else {
      worker = new Worker(new URL('./prepare-worker-thread.js', self), options);
    }
    worker.unref();
    return worker;
  }

  /** Runs one job; past `timeoutMs` the worker is ended (a pathological document must not hold the loads). */
  run(job: Omit<PrepareJob, 'id'>, timeoutMs = 0): Promise<PrepareOutcome> {
    const worker = (this.worker ??= this.spawn());
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              cleanup();
              this.worker = null;
              void worker.terminate();
              resolve({ result: null, error: `verification and parsing took longer than ${timeoutMs / 1000} s`, cpuMs: 0 });
            }, timeoutMs)
          : null;
      const cleanup = (): void => {
        if (timer !== null) clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const onMessage = (reply: JobReply): void => {
        if (reply.id !== id) return;
        cleanup();
        // WebAssembly memory never shrinks: ending the worker gives the list's memory back. The
        // entries are unpacked (and then indexed) only once it has gone, so that the two never add
        // up at the peak (50 000 entries: ~30 MiB).
        this.worker = null;
        const settled = (): void =>
          resolve({
            result: resultOf(reply),
            error: reply.error,
            cpuMs: reply.cpuMs,
            niceness: reply.niceness,
            ...(reply.bytes !== undefined ? { bytes: reply.bytes } : {}),
          });
        worker.terminate().then(settled, settled);
      };
      const onError = (error: Error): void => {
        cleanup();
        this.worker = null;
        void worker.terminate();
        resolve({ result: null, error: `list worker failed: ${error.message}`, cpuMs: 0 });
      };
      const onExit = (code: number): void => {
        cleanup();
        this.worker = null;
        resolve({ result: null, error: `list worker exited with code ${code}`, cpuMs: 0 });
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      // A large list's own buffer is transferred, not copied (a 50 000-entry list is 30 MB), and
      // comes back with the reply; a slice of a shared pool is copied.
      const transfer = transferableBuffer(job.bytes);
      worker.postMessage({ ...job, id } satisfies PrepareJob, transfer === null ? [] : [transfer]);
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    if (worker !== null) await worker.terminate();
  }
}
