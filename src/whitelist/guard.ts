/**
 * The guard between a verified list and the one in force: no rollback to an older list, no sudden
 * loss of many domains (a truncated export signed by mistake), unless the operator accepted that list.
 */
import type { LoadFailureAt } from './failures.js';
import type { PreparedList } from './prepare.js';
import type { WhitelistIndex } from './whitelist-index.js';

export type GuardVerdict =
  | { readonly verdict: 'accept'; readonly dropped: number; readonly added: number }
  | { readonly verdict: 'unchanged' }
  | { readonly verdict: 'refuse'; readonly reason: LoadFailureAt<'guard'>; readonly detail: string };

/**
 * A list dated further ahead of this host's clock is refused: taken, it would win the rollback guard
 * against every genuine list until that date. A day still takes a signer clock on local time marked Z.
 */
export const MAX_FUTURE_SKEW_MS = 24 * 3_600_000;

export interface GuardInput {
  readonly index: WhitelistIndex;
  readonly sha256: string;
}

export function guardList(
  current: GuardInput | null,
  list: PreparedList,
  maxShrinkPercent: number,
  accepted: ReadonlySet<string>,
  nowMs: number,
  maxListAgeDays = 0,
  /** What the operator runs to accept a refused list (src/accept-command.ts builds one that works as printed). */
  acceptCommand = 'mssante-policyd check FILE --accept --state-dir DIR',
): GuardVerdict {
  const forced = accepted.has(list.sha256);
  const aheadMs = Date.parse(list.generatedAt) - nowMs;
  if (aheadMs > MAX_FUTURE_SKEW_MS && !forced) {
    return {
      verdict: 'refuse',
      reason: 'list_from_future',
      detail: `list generated ${list.generatedAt} is ${(aheadMs / 3_600_000).toFixed(1)} h ahead of this host's clock (limit 24 h): a clock is wrong, here or at the signer (sha256 ${list.sha256})`,
    };
  }
  if (current === null) {
    // Nothing in force to compare with (first start, lost state dir): a validly signed but old list
    // may be a replay that still holds operators removed since. A list in force that ages is kept.
    const ageMs = nowMs - Date.parse(list.generatedAt);
    if (maxListAgeDays > 0 && ageMs > maxListAgeDays * 86_400_000 && !forced) {
      return {
        verdict: 'refuse',
        reason: 'list_too_old',
        detail: `list generated ${list.generatedAt} is ${Math.floor(ageMs / 86_400_000)} days old (--max-list-age ${maxListAgeDays}) and no list is in force to compare it with: waiting for a fresher list; if this one is intended: ${acceptCommand}, then SIGHUP (sha256 ${list.sha256})`,
      };
    }
    return { verdict: 'accept', dropped: 0, added: new Set(list.entries.map((e) => e.domain)).size };
  }
  if (list.sha256 === current.sha256) return { verdict: 'unchanged' };
  if (Date.parse(list.generatedAt) < current.index.generatedAtMs && !forced) {
    return {
      verdict: 'refuse',
      reason: 'list_older',
      detail: `list generated ${list.generatedAt} is older than the one in force (${current.index.generatedAt})`,
    };
  }
  const incoming = new Set(list.entries.map((e) => e.domain));
  let dropped = 0;
  for (const domain of current.index.domains()) if (!incoming.has(domain)) dropped++;
  let added = 0;
  for (const domain of incoming) if (!current.index.hasDomain(domain)) added++;
  const percent = current.index.domainCount === 0 ? 0 : (dropped * 100) / current.index.domainCount;
  if (percent > maxShrinkPercent && !forced) {
    return {
      verdict: 'refuse',
      reason: 'list_shrink',
      detail: `list would drop ${dropped} of ${current.index.domainCount} domains (${percent.toFixed(1)} % > --max-shrink ${maxShrinkPercent} %); if this is intended: ${acceptCommand}, then SIGHUP (sha256 ${list.sha256})`,
    };
  }
  return { verdict: 'accept', dropped, added };
}
