/**
 * The shape of src/, checked on every run (architecture.md, "Rules of the house"):
 * - no import cycle between folders (a file directly in src/ belongs to folder "."): dependencies
 *   point one way, so that trust/ can be read and tested without the list pipeline or the metrics;
 * - no function longer than MAX_FUNCTION_LINES lines: a state machine or an adapter that grows past
 *   it is split into named helpers.
 * Both read the sources with the TypeScript parser (type-only imports and re-exports count too).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SRC = join(ROOT, 'src');
const MAX_FUNCTION_LINES = 120;

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out.sort();
}

function parse(path: string): ts.SourceFile {
  return ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
}

/** Every module specifier of a file: import/export declarations, `import x = require()`, import() and import types. */
export function moduleSpecifiers(file: ts.SourceFile): string[] {
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if (
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
      node.moduleSpecifier !== undefined &&
      ts.isStringLiteral(node.moduleSpecifier)
    ) {
      out.push(node.moduleSpecifier.text);
    } else if (
      ts.isImportEqualsDeclaration(node) &&
      ts.isExternalModuleReference(node.moduleReference) &&
      ts.isStringLiteral(node.moduleReference.expression)
    ) {
      out.push(node.moduleReference.expression.text);
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] !== undefined &&
      ts.isStringLiteralLike(node.arguments[0])
    ) {
      out.push(node.arguments[0].text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push(node.argument.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return out;
}

/** `src/trust/dn.ts` → `trust`, `src/frontends/policy/codec.ts` → `frontends/policy`, `src/daemon.ts` → `.`. */
function folderOf(path: string): string {
  const dir = relative(SRC, dirname(path)).split(sep).join('/');
  return dir === '' ? '.' : dir;
}

/** Folder → folders it imports from (relative specifiers resolving inside src/ only). */
export function folderGraph(files: readonly string[]): Map<string, Map<string, string[]>> {
  const graph = new Map<string, Map<string, string[]>>();
  for (const path of files) {
    const from = folderOf(path);
    const edges = graph.get(from) ?? new Map<string, string[]>();
    graph.set(from, edges);
    for (const specifier of moduleSpecifiers(parse(path))) {
      if (!specifier.startsWith('.')) continue;
      const target = resolve(dirname(path), specifier);
      if (relative(SRC, target).startsWith('..')) continue;
      const to = folderOf(target);
      if (to === from) continue;
      const why = edges.get(to) ?? [];
      why.push(`${relative(ROOT, path)} → ${specifier}`);
      edges.set(to, why);
    }
  }
  return graph;
}

/** The strongly connected components of more than one folder (Tarjan), each with the imports that close it. */
export function folderCycles(graph: ReadonlyMap<string, ReadonlyMap<string, readonly string[]>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  let next = 0;
  const strongConnect = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        strongConnect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1) {
      component.sort();
      const members = new Set(component);
      const imports = component.flatMap((from) =>
        [...(graph.get(from) ?? new Map<string, string[]>())].filter(([to]) => members.has(to)).flatMap(([, why]) => why),
      );
      cycles.push([component.join(' ↔ '), ...imports]);
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) strongConnect(v);
  return cycles;
}

/** A readable name for a function-like node: `name`, `Class.method`, `const name = () =>`, or `(anonymous)`. */
function functionName(node: ts.FunctionLikeDeclaration): string {
  if (node.name !== undefined) {
    const own = node.name.getText();
    const owner = node.parent;
    return ts.isClassLike(owner) && owner.name !== undefined ? `${owner.name.text}.${own}` : own;
  }
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent))
    return parent.name.getText();
  return '(anonymous)';
}

/** Every function, method, accessor, constructor, arrow function and function expression with a body, and its length in lines. */
export function functionLengths(file: ts.SourceFile): Array<{ name: string; line: number; lines: number }> {
  const out: Array<{ name: string; line: number; lines: number }> = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
      const fn: ts.FunctionLikeDeclaration = node;
      const first = file.getLineAndCharacterOfPosition(fn.getStart(file)).line;
      const last = file.getLineAndCharacterOfPosition(fn.getEnd()).line;
      out.push({ name: functionName(fn), line: first + 1, lines: last - first + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return out;
}

describe('architecture', () => {
  const files = sourceFiles(SRC);

  it('reads the sources it checks', () => {
    assert.ok(files.length > 30, `only ${files.length} files under src/`);
    const graph = folderGraph(files);
    // The known shape: the daemon wires everything; trust/ depends on nothing of ours.
    assert.ok(graph.get('.')?.has('trust'));
    assert.deepEqual([...(graph.get('trust')?.keys() ?? [])], []);
  });

  it('has no import cycle between folders', () => {
    const cycles = folderCycles(folderGraph(files));
    assert.deepEqual(cycles, [], `folder cycles:\n${cycles.map((c) => c.join('\n  ')).join('\n')}`);
  });

  it(`has no function longer than ${MAX_FUNCTION_LINES} lines`, () => {
    const long = files.flatMap((path) =>
      functionLengths(parse(path))
        .filter((f) => f.lines > MAX_FUNCTION_LINES)
        .map((f) => `${relative(ROOT, path)}:${f.line} ${f.name}: ${f.lines} lines`),
    );
    assert.deepEqual(long, []);
  });

  it('the checks see what they must see', () => {
    const sample = ts.createSourceFile(
      'sample.ts',
      [
        "import type { A } from '../a/x.js';",
        "export { b } from './b.js';",
        "const c = await import('../c/y.js');",
        "let d: import('../d/z.js').D;",
        'function f() {',
        '  const g = () => {',
        '    return 1;',
        '  };',
        '  return g;',
        '}',
        'class K {',
        '  m(): void {}',
        '}',
      ].join('\n'),
      ts.ScriptTarget.Latest,
      true,
    );
    assert.deepEqual(moduleSpecifiers(sample), ['../a/x.js', './b.js', '../c/y.js', '../d/z.js']);
    assert.deepEqual(
      functionLengths(sample).map((f) => `${f.name}:${f.line}:${f.lines}`),
      ['f:5:6', 'g:6:3', 'K.m:12:1'],
    );
    const cyclic = new Map([
      ['a', new Map([['b', ['a.ts → ../b/x.js']]])],
      ['b', new Map([['c', ['b.ts → ../c/x.js']]])],
      ['c', new Map([['a', ['c.ts → ../a/x.js']]])],
      ['d', new Map([['a', ['d.ts → ../a/x.js']]])],
    ]);
    assert.deepEqual(folderCycles(cyclic), [['a ↔ b ↔ c', 'a.ts → ../b/x.js', 'b.ts → ../c/x.js', 'c.ts → ../a/x.js']]);
  });
});
