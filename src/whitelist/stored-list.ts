/**
 * The verdict on the list read back from `--state-dir` at start-up. The copy is input like the
 * network: it was fully verified (signature under the trust settings of this start, ANS profile,
 * entries) before it gets here, then the future-date guard applies. The age rule does not: the
 * stored copy is the list that was in force, and a list in force that ages keeps working (README,
 * "The list life cycle"); a replayed old list is still replaced by the first newer one the source
 * gives. Anything refused is `state_unverified`, with the underlying reason id as its cause.
 */
import type { LoadFailure } from './failures.js';
import { guardList } from './guard.js';
import type { PreparedList } from './prepare.js';
import { redactLocation } from './shown-location.js';
import { WhitelistIndex } from './whitelist-index.js';

export type PreparedOrFailed =
  | { readonly ok: true; readonly list: PreparedList }
  | { readonly ok: false; readonly reason: LoadFailure; readonly detail: string };

export type StoredListVerdict =
  | { readonly ok: true; readonly list: PreparedList }
  | {
      readonly ok: false;
      readonly reason: 'state_unverified' | 'worker_failed';
      /** The check that refused the copy (signature_invalid, list_from_future, ...). */
      readonly cause: LoadFailure;
      readonly detail: string;
    };

/** Longest `source` shown from a stored whitelist.json (it is read from disk, so bounded like any input). */
const MAX_SHOWN_SOURCE_CHARS = 300;

export function judgeStoredList(prepared: PreparedOrFailed, accepted: ReadonlySet<string>, nowMs: number): StoredListVerdict {
  if (!prepared.ok) {
    // A worker that crashed or timed out says nothing about the copy: that failure keeps its own id.
    const reason = prepared.reason === 'worker_failed' ? 'worker_failed' : 'state_unverified';
    return { ok: false, reason, cause: prepared.reason, detail: `stored list: ${prepared.reason}: ${prepared.detail}` };
  }
  // With nothing in force and the age rule off (0): only the future-date guard can refuse here.
  const list = prepared.list;
  const candidate = {
    index: new WhitelistIndex({ generatedAt: list.generatedAt, sha256: list.sha256 }, list.entries, []),
    sha256: list.sha256,
  };
  const guard = guardList(null, candidate, { maxShrinkPercent: 100, maxRebindPercent: 100, maxListAgeDays: 0 }, accepted, nowMs);
  if (guard.verdict === 'refuse') {
    return {
      ok: false,
      reason: 'state_unverified',
      cause: guard.reason,
      detail: `stored list: ${guard.reason}: ${guard.detail}`,
    };
  }
  return { ok: true, list: prepared.list };
}

/** The source named by a stored whitelist.json, as /v1/whitelist and the logs show it. */
export function shownStoredSource(source: unknown): string {
  if (typeof source !== 'string' || source === '') return 'state';
  const shown = redactLocation(source);
  return shown.length > MAX_SHOWN_SOURCE_CHARS ? `${shown.slice(0, MAX_SHOWN_SOURCE_CHARS)}...` : shown;
}
