/**
 * The list worker itself (spawned by PrepareWorker in prepare-worker.ts): runs prepareList() — and so
 * loads libxml2's WebAssembly — off the main thread, for one job, at the lowest CPU priority when a
 * list is already in force.
 */
import { readFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { isMainThread, parentPort } from 'node:worker_threads';
import { hasSignerTrust, loadSignerTrust, type SignerTrust } from './signature.js';
import { prepareList } from './prepare.js';
import { packEntries, transferableBuffer, type JobReply, type PrepareJob } from './prepare-worker.js';

/**
 * Linux: the worker's own thread gets the lowest CPU priority, so that on a busy host answers keep
 * the CPU while a list is verified (measured: p99 during reloads under load 25 ms → 10 ms). Only in
 * the background: with nothing in force, nice 19 on a busy host kept the daemon answering tempfail
 * for 30 s at start-up (bench, both cores loaded) instead of a few.
 */
function threadNiceness(background: boolean): number | null {
  try {
    const tid = Number(readFileSync('/proc/thread-self/stat', 'utf8').split(' ', 1)[0]);
    if (!Number.isSafeInteger(tid) || tid <= 0) return null;
    if (background) setPriority(tid, 19);
    return getPriority(tid);
  } catch {
    return null; // not Linux, or not allowed: run at the priority inherited
  }
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  port.on('message', (job: PrepareJob) => {
    const niceness = threadNiceness(job.background);
    const started = process.cpuUsage();
    try {
      const trust: SignerTrust | null = hasSignerTrust(job.trust) ? loadSignerTrust(job.trust) : null;
      const result = prepareList(job.bytes, {
        trust,
        allowUnsigned: job.allowUnsigned,
        maxEntries: job.maxEntries,
      });
      const cpu = process.cpuUsage(started);
      // The bytes came transferred when they were a buffer of their own: they go back the same way.
      const back = transferableBuffer(job.bytes);
      const bytes = back === null ? {} : { bytes: job.bytes };
      if (!result.ok) {
        const reply: JobReply = { id: job.id, result, ...bytes, error: null, cpuMs: (cpu.user + cpu.system) / 1000, niceness };
        port.postMessage(reply, back === null ? [] : [back]);
        return;
      }
      // The entries go packed (each string once), their table transferred rather than copied.
      const packed = packEntries(result.list.entries);
      const reply: JobReply = {
        id: job.id,
        result: { ok: true, list: { ...result.list, entries: [] } },
        packed,
        ...bytes,
        error: null,
        cpuMs: (cpu.user + cpu.system) / 1000,
        niceness,
      };
      port.postMessage(reply, back === null ? [packed.fields.buffer] : [packed.fields.buffer, back]);
    } catch (error) {
      const cpu = process.cpuUsage(started);
      const back = transferableBuffer(job.bytes);
      const reply: JobReply = {
        id: job.id,
        result: null,
        ...(back === null ? {} : { bytes: job.bytes }),
        error: (error as Error).message,
        cpuMs: (cpu.user + cpu.system) / 1000,
        niceness,
      };
      port.postMessage(reply, back === null ? [] : [back]);
    }
  });
}
