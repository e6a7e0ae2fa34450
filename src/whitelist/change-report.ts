/**
 * The readable text of a list change (`diff`) and of a domain's history (`query --explain`).
 * Names come from lists and the journal: printed one per line, JSON-quoted when they hold anything
 * but printable text, so that a crafted DN cannot forge lines on an operator's terminal.
 */
import type { DomainChange } from './change-journal.js';
import type { ListChange, ListRef } from './changes.js';

/** A name as printed: as is when plain, JSON-quoted when it holds control or non-ASCII-printable characters. */
export function printable(name: string): string {
  return /^[\x20-\x7e\u00a0-\u024f]*$/.test(name) ? name : JSON.stringify(name);
}

function ref(label: string, r: ListRef): string {
  return `${label} (sha256 ${r.sha256}, generated ${r.generatedAt})`;
}

function percent(count: number, of: number): string {
  return of === 0 ? '' : ` (${((count * 100) / of).toFixed(1)} % of the ${of} domains of the old list)`;
}

/** `diff`'s text: every name, grouped by kind; `fromDomains` gives the percentages the guard judges. */
export function formatChange(change: ListChange, labels: { from: string; to: string }, fromDomains: number): string {
  const lines = [`from: ${ref(labels.from, change.from)}`, `to:   ${ref(labels.to, change.to)}`];
  if (change.appliedAt !== null) lines.push(`applied: ${change.appliedAt}`);
  lines.push(`domains added: ${change.added.length}`);
  for (const d of change.added) lines.push(`  + ${printable(d)}`);
  lines.push(`domains removed: ${change.removed.length}${percent(change.removed.length, fromDomains)}`);
  for (const d of change.removed) lines.push(`  - ${printable(d)}`);
  lines.push(`domains moved to other certificates: ${change.rebound.length}${percent(change.rebound.length, fromDomains)}`);
  for (const r of change.rebound) {
    lines.push(`  ~ ${printable(r.domain)}`);
    for (const dn of r.from) lines.push(`      was: ${printable(dn)}`);
    for (const dn of r.to) lines.push(`      now: ${printable(dn)}`);
  }
  lines.push(`certificate identities added: ${change.operatorsAdded.length}`);
  for (const dn of change.operatorsAdded) lines.push(`  + ${printable(dn)}`);
  lines.push(`certificate identities removed: ${change.operatorsRemoved.length}`);
  for (const dn of change.operatorsRemoved) lines.push(`  - ${printable(dn)}`);
  return `${lines.join('\n')}\n`;
}

/** One line (two for a move) per change of a domain, newest first. */
export function formatDomainChanges(changes: readonly DomainChange[]): string[] {
  const lines: string[] = [];
  for (const c of changes) {
    const what = c.kind === 'added' ? 'added' : c.kind === 'removed' ? 'REMOVED' : 'MOVED to other certificates';
    lines.push(
      `  ${c.appliedAt ?? '?'}: ${what} by the list generated ${c.to.generatedAt} (sha256 ${c.to.sha256.slice(0, 12)}…, before: ${c.from.generatedAt})`,
    );
    if (c.kind === 'rebound') {
      lines.push(`      was: ${(c.dnsFrom ?? []).map(printable).join(' | ')}`);
      lines.push(`      now: ${(c.dnsTo ?? []).map(printable).join(' | ')}`);
    }
  }
  return lines;
}
