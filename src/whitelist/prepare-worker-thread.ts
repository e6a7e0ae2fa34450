/**
 * The list worker itself (spawned by PrepareWorker in prepare-worker.ts): runs prepareList() — and so
 * loads libxml2's WebAssembly — off the main thread, for one job, at the lowest CPU priority.
 */
import { readFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { isMainThread, parentPort } from 'node:worker_threads';
import { hasSignerTrust, loadSignerTrust, type SignerTrust } from './signature.js';
import { prepareList } from './prepare.js';
import { packEntries, type JobReply, type PrepareJob } from './prepare-worker.js';

/**
 * Linux: the worker's own thread gets the lowest CPU priority, so that on a busy host answers keep
 * the CPU while a list is verified (measured: p99 during reloads under load 25 ms → 10 ms).
 */
function lowerThreadPriority(): void {
  try {
    const tid = Number(readFileSync('/proc/thread-self/stat', 'utf8').split(' ', 1)[0]);
    if (Number.isSafeInteger(tid) && tid > 0) setPriority(tid, 19);
  } catch {
    // not Linux, or not allowed: run at normal priority
  }
}

if (!isMainThread && parentPort !== null) {
  lowerThreadPriority();
  const port = parentPort;
  port.on('message', (job: PrepareJob) => {
    const started = process.cpuUsage();
    try {
      const trust: SignerTrust | null = hasSignerTrust(job.trust) ? loadSignerTrust(job.trust) : null;
      const result = prepareList(job.bytes, {
        trust,
        allowUnsigned: job.allowUnsigned,
        maxEntries: job.maxEntries,
      });
      const cpu = process.cpuUsage(started);
      if (!result.ok) {
        port.postMessage({ id: job.id, result, error: null, cpuMs: (cpu.user + cpu.system) / 1000 } satisfies JobReply);
        return;
      }
      // The entries go packed (each string once), their table transferred rather than copied.
      const packed = packEntries(result.list.entries);
      const reply: JobReply = {
        id: job.id,
        result: { ok: true, list: { ...result.list, entries: [] } },
        packed,
        error: null,
        cpuMs: (cpu.user + cpu.system) / 1000,
      };
      port.postMessage(reply, [packed.fields.buffer]);
    } catch (error) {
      const cpu = process.cpuUsage(started);
      port.postMessage({
        id: job.id,
        result: null,
        error: (error as Error).message,
        cpuMs: (cpu.user + cpu.system) / 1000,
      } satisfies JobReply);
    }
  });
}
