/**
 * Every design document the code, tests, scripts and deploy files cite is inside the repository
 * (docs/), and every `docs/mssante-rules.md §N` they cite exists: a maintainer with only the
 * repository can follow each citation.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../../support/fixtures.js';

const CITING = ['src', 'test', 'scripts', 'deploy', 'bench', '.ci'];
const DESIGN_DOCS = ['mssante-rules', 'architecture', 'interface', 'style'];

function textFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'results' ? [] : textFiles(path);
    return /\.(ts|mjs|js|sh|md|cf|conf|acl|mc|service|yml|json|1)$|^run$/.test(entry.name) ? [path] : [];
  });
}

describe('design-document citations', () => {
  const files = CITING.flatMap((dir) => textFiles(join(REPO_ROOT, dir)));
  const rules = readFileSync(join(REPO_ROOT, 'docs/mssante-rules.md'), 'utf8');
  const sections = new Set([...rules.matchAll(/^## (\d+)\. /gm)].map((m) => m[1]));

  it('reads the files it checks', () => {
    assert.ok(files.length > 100, `only ${files.length} files`);
    assert.ok(sections.size >= 7, 'docs/mssante-rules.md has its numbered sections');
  });

  it('cites design documents in docs/ only, and each exists', () => {
    const outside: string[] = [];
    for (const path of files) {
      const text = readFileSync(path, 'utf8');
      for (const m of text.matchAll(/([\w./-]*?)\b(mssante-rules|architecture|interface|style)(?:\.md|\b(?= §))/g)) {
        if (!DESIGN_DOCS.includes(m[2]!)) continue;
        const cited = `${m[1]}${m[2]}.md`;
        if (m[1] !== 'docs/' || !existsSync(join(REPO_ROOT, 'docs', `${m[2]}.md`)))
          outside.push(`${relative(REPO_ROOT, path)}: ${cited}`);
      }
    }
    assert.deepEqual(outside, [], 'citations of design documents that are not docs/<name>.md in this repository');
  });

  it('cites only sections docs/mssante-rules.md has', () => {
    const missing: string[] = [];
    for (const path of files) {
      const text = readFileSync(path, 'utf8');
      for (const m of text.matchAll(/mssante-rules\.md((?:,? ?§\d+)+)/g))
        for (const s of m[1]!.matchAll(/§(\d+)/g))
          if (!sections.has(s[1])) missing.push(`${relative(REPO_ROOT, path)}: §${s[1]}`);
    }
    assert.deepEqual(missing, []);
  });
});
