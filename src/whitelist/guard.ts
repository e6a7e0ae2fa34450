/**
 * The guard between a verified list and the one in force: no rollback to an older list, no sudden
 * loss of many domains (a truncated export signed by mistake), no mass move of domains onto other
 * certificates (a misused signing key), unless the operator accepted that list. Shrink and rebind
 * are judged on the change function of changes.ts, the one the journal keeps.
 */
import type { LoadFailureAt } from './failures.js';
import { diffIndexes, percentOf, type ListDiff } from './changes.js';
import type { WhitelistIndex } from './whitelist-index.js';

export type GuardVerdict =
  | {
      readonly verdict: 'accept';
      readonly dropped: number;
      readonly added: number;
      readonly rebound: number;
      /** What changed from the list in force (null when nothing was in force): the journal keeps it. */
      readonly change: ListDiff | null;
    }
  | { readonly verdict: 'unchanged' }
  | {
      readonly verdict: 'refuse';
      readonly reason: LoadFailureAt<'guard'>;
      readonly detail: string;
      readonly change?: ListDiff;
    };

/**
 * A list dated further ahead of this host's clock is refused: taken, it would win the rollback guard
 * against every genuine list until that date. A day still takes a signer clock on local time marked Z.
 */
export const MAX_FUTURE_SKEW_MS = 24 * 3_600_000;

export interface GuardInput {
  readonly index: WhitelistIndex;
  readonly sha256: string;
}

/** The limits of the guard (serve and check read them from the same settings). */
export interface GuardLimits {
  /** --max-shrink: most domains in force a new list may drop, in percent. */
  readonly maxShrinkPercent: number;
  /** --max-rebind: most domains in force a new list may move onto other certificates, in percent. */
  readonly maxRebindPercent: number;
  /** --max-list-age: with nothing in force, an older list is refused. 0 disables. */
  readonly maxListAgeDays: number;
}

export function guardList(
  current: GuardInput | null,
  candidate: GuardInput,
  limits: GuardLimits,
  accepted: ReadonlySet<string>,
  nowMs: number,
  /** What the operator runs to accept a refused list (src/accept-command.ts builds one that works as printed). */
  acceptCommand = 'mssante-policyd check FILE --accept --state-dir DIR',
): GuardVerdict {
  const { index, sha256 } = candidate;
  const generatedAt = index.generatedAt;
  const forced = accepted.has(sha256);
  const aheadMs = index.generatedAtMs - nowMs;
  if (aheadMs > MAX_FUTURE_SKEW_MS && !forced) {
    return {
      verdict: 'refuse',
      reason: 'list_from_future',
      detail: `list generated ${generatedAt} is ${(aheadMs / 3_600_000).toFixed(1)} h ahead of this host's clock (limit 24 h): a clock is wrong, here or at the signer (sha256 ${sha256})`,
    };
  }
  if (current === null) {
    // Nothing in force to compare with (first start, lost state dir): a validly signed but old list
    // may be a replay that still holds operators removed since. A list in force that ages is kept.
    const ageMs = nowMs - index.generatedAtMs;
    const maxListAgeDays = limits.maxListAgeDays;
    if (maxListAgeDays > 0 && ageMs > maxListAgeDays * 86_400_000 && !forced) {
      return {
        verdict: 'refuse',
        reason: 'list_too_old',
        detail: `list generated ${generatedAt} is ${Math.floor(ageMs / 86_400_000)} days old (--max-list-age ${maxListAgeDays}) and no list is in force to compare it with: waiting for a fresher list; if this one is intended: ${acceptCommand}, then SIGHUP (sha256 ${sha256})`,
      };
    }
    return { verdict: 'accept', dropped: 0, added: index.domainCount, rebound: 0, change: null };
  }
  if (sha256 === current.sha256) return { verdict: 'unchanged' };
  if (index.generatedAtMs < current.index.generatedAtMs && !forced) {
    return {
      verdict: 'refuse',
      reason: 'list_older',
      detail: `list generated ${generatedAt} is older than the one in force (${current.index.generatedAt})`,
    };
  }
  const change = diffIndexes(current.index, index);
  const inForce = current.index.domainCount;
  const dropped = change.removed.length;
  const shrink = percentOf(dropped, current.index);
  if (shrink > limits.maxShrinkPercent && !forced) {
    return {
      verdict: 'refuse',
      reason: 'list_shrink',
      detail: `list would drop ${dropped} of ${inForce} domains (${shrink.toFixed(1)} % > --max-shrink ${limits.maxShrinkPercent} %); if this is intended: ${acceptCommand}, then SIGHUP (sha256 ${sha256})`,
      change,
    };
  }
  // No domain disappears, yet mail from them now needs other certificates: what a misused signing
  // key (or a mistake at the ANS) looks like. SISRA → SARA moved ~5 % of the domains in one list.
  const moved = change.rebound.length;
  const rebind = percentOf(moved, current.index);
  if (rebind > limits.maxRebindPercent && !forced) {
    return {
      verdict: 'refuse',
      reason: 'list_rebind',
      detail: `list would move ${moved} of ${inForce} domains onto other certificates (${rebind.toFixed(1)} % > --max-rebind ${limits.maxRebindPercent} %; e.g. ${change.rebound
        .slice(0, 3)
        .map((r) => r.domain)
        .join(', ')}); see it with mssante-policyd diff; if this is intended: ${acceptCommand}, then SIGHUP (sha256 ${sha256})`,
      change,
    };
  }
  return { verdict: 'accept', dropped, added: change.added.length, rebound: moved, change };
}
