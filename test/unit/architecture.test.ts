/**
 * The shape of src/, checked on every run (docs/architecture.md, "Rules of the house"):
 * - no import cycle between folders (a file directly in src/ belongs to folder "."): dependencies
 *   point one way, so that trust/ can be read and tested without the list pipeline or the metrics;
 * - no function longer than MAX_FUNCTION_LINES lines: a state machine or an adapter that grows past
 *   it is split into named helpers.
 * - a listener default (limit, timeout, budget) is written in SETTINGS only (docs/architecture.md,
 *   "One place per fact"): in src/frontends/ (the frontend specs included), src/net/, src/frontend-registry.ts
 *   and src/daemon.ts no literal equal to one, no `?? fallback`
 *   of a listener option, no default value for a parameter of a Limits, ServerOptions or DecoderOptions type. The servers and
 *   codecs require their limits; src/listener-defaults.ts derives the defaults from SETTINGS.
 * All read the sources with the TypeScript parser (type-only imports and re-exports count too).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { SETTINGS } from '../../src/config.js';

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

/**
 * The specifiers a file loads when it is itself loaded: import and export-from declarations that
 * are not type-only (an import with one value binding counts; import() is lazy and does not).
 */
export function eagerSpecifiers(file: ts.SourceFile): string[] {
  const out: string[] = [];
  for (const node of file.statements) {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const clause = node.importClause;
      const values =
        clause === undefined ||
        (!clause.isTypeOnly &&
          (clause.name !== undefined ||
            clause.namedBindings === undefined ||
            ts.isNamespaceImport(clause.namedBindings) ||
            clause.namedBindings.elements.some((e) => !e.isTypeOnly)));
      if (values) out.push(node.moduleSpecifier.text);
    } else if (ts.isExportDeclaration(node) && !node.isTypeOnly && node.moduleSpecifier !== undefined) {
      if (ts.isStringLiteral(node.moduleSpecifier)) out.push(node.moduleSpecifier.text);
    }
  }
  return out;
}

/** The chain of eager imports from `root` to a module named `target` (a package or a src path), or null. */
export function eagerChain(root: string, reaches: (specifier: string, resolved: string | null) => boolean): string[] | null {
  const seen = new Set<string>([root]);
  const queue: Array<{ path: string; chain: string[] }> = [{ path: root, chain: [relative(ROOT, root)] }];
  while (queue.length > 0) {
    const { path, chain } = queue.shift()!;
    for (const specifier of eagerSpecifiers(parse(path))) {
      const resolved = specifier.startsWith('.') ? resolve(dirname(path), specifier).replace(/\.js$/, '.ts') : null;
      if (reaches(specifier, resolved)) return [...chain, specifier];
      if (resolved === null || seen.has(resolved)) continue;
      seen.add(resolved);
      queue.push({ path: resolved, chain: [...chain, relative(ROOT, resolved)] });
    }
  }
  return null;
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

/** The settings the listeners take, and the option names the servers and codecs take them under. */
const LISTENER_SETTINGS = [
  'max-connections',
  'max-connection-bytes',
  'heap-watermark',
  'idle-timeout',
  'milter-idle-timeout',
  'request-timeout',
  'max-line-bytes',
  'max-request-bytes',
  'max-attributes',
  'max-milter-packet-bytes',
  'max-socketmap-request-bytes',
] as const;
const LISTENER_OPTIONS = new Set([
  'maxConnections',
  'maxConnectionBytes',
  'heapWatermarkPercent',
  'idleTimeoutMs',
  'requestTimeoutMs',
  'packetTimeoutMs',
  'limits',
  'maxLineBytes',
  'maxRequestBytes',
  'maxAttributes',
  'maxPacketBytes',
]);
/** Folders where the listeners live; SETTINGS (config.ts) and listener-defaults.ts are the allowed places. */
const LISTENER_FOLDERS = ['frontends', 'net'];
/** Files of src/ itself that start or list the frontends: checked like those folders. */
const LISTENER_FILES = ['frontend-registry.ts', 'daemon.ts'];

/** The value of a numeric literal or of a constant expression of them (`65_536 + 1024`, `330 * 1000`), else null. */
function constantValue(node: ts.Expression): number | null {
  // Hex, octal and binary literals are protocol bit masks and flags, not limits.
  if (ts.isNumericLiteral(node)) return /^0[xob]/i.test(node.getText()) ? null : Number(node.text);
  if (ts.isParenthesizedExpression(node)) return constantValue(node.expression);
  if (ts.isBinaryExpression(node)) {
    const left = constantValue(node.left);
    const right = constantValue(node.right);
    if (left === null || right === null) return null;
    switch (node.operatorToken.kind) {
      case ts.SyntaxKind.PlusToken:
        return left + right;
      case ts.SyntaxKind.MinusToken:
        return left - right;
      case ts.SyntaxKind.AsteriskToken:
        return left * right;
    }
  }
  return null;
}

/**
 * Listener defaults written in a file: literals equal to a listener setting's default (in its unit, or
 * in ms for a seconds setting; values under 1024 are too common to tell — the other two rules cover
 * them), `options.X ?? fallback` for a listener option X, and default values of Limits/ServerOptions/DecoderOptions parameters.
 */
export function listenerDefaultsIn(file: ts.SourceFile, defaults: ReadonlyMap<number, string>): string[] {
  const out: string[] = [];
  const where = (node: ts.Node): string => `${file.fileName}:${file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1}`;
  const visit = (node: ts.Node): void => {
    if (ts.isExpression(node) && (ts.isNumericLiteral(node) || ts.isBinaryExpression(node))) {
      const value = constantValue(node);
      if (value !== null && value >= 1024 && defaults.has(value)) {
        out.push(`${where(node)} ${node.getText(file)}: the default of ${defaults.get(value)}, written outside SETTINGS`);
        return;
      }
    }
    if (
      ts.isBinaryExpression(node) &&
      node.operatorToken.kind === ts.SyntaxKind.QuestionQuestionToken &&
      ts.isPropertyAccessExpression(node.left) &&
      LISTENER_OPTIONS.has(node.left.name.text)
    ) {
      out.push(`${where(node)} ${node.getText(file)}: a fallback for the listener option ${node.left.name.text}`);
    }
    if (
      ts.isParameter(node) &&
      node.initializer !== undefined &&
      node.type !== undefined &&
      /(Limits|ServerOptions|DecoderOptions)$/.test(node.type.getText(file))
    ) {
      out.push(`${where(node)} ${node.getText(file)}: a default for ${node.type.getText(file)}`);
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return out;
}

/** Default value → setting, for every listener setting (seconds also in ms, as the servers take them). */
function listenerDefaultValues(): Map<number, string> {
  const values = new Map<number, string>();
  for (const key of LISTENER_SETTINGS) {
    const setting = SETTINGS.find((s) => s.key === key);
    assert.ok(setting !== undefined && typeof setting.default === 'number', `${key} is a numeric setting`);
    values.set(setting.default, `--${key}`);
    if (setting.kind === 'seconds') values.set(setting.default * 1000, `--${key} (in ms)`);
  }
  return values;
}

/** The "What may import what" table of docs/architecture.md: folder → the folders it may import. */
export function allowedImports(markdown: string): Map<string, Set<string>> {
  const start = markdown.indexOf('| folder | may import |');
  assert.ok(start !== -1, 'docs/architecture.md has the "| folder | may import |" table');
  const allowed = new Map<string, Set<string>>();
  for (const line of markdown.slice(start).split('\n').slice(2)) {
    const cells = line
      .trim()
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim());
    if (cells.length !== 2) break;
    const folder = /^`([^`]+)`$/.exec(cells[0]!)?.[1];
    assert.ok(folder !== undefined, `a folder in backquotes: ${line}`);
    allowed.set(folder, new Set([...cells[1]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!)));
  }
  return allowed;
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

  it('imports only what docs/architecture.md allows each folder ("What may import what")', () => {
    const allowed = allowedImports(readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8'));
    const graph = folderGraph(files);
    const unknown = [...graph.keys()].filter((folder) => !allowed.has(folder));
    assert.deepEqual(unknown, [], 'folders without a row in docs/architecture.md "What may import what"');
    const forbidden = [...graph].flatMap(([from, edges]) =>
      [...edges].filter(([to]) => !allowed.get(from)!.has(to)).map(([to, why]) => `${from} → ${to} (${why.join('; ')})`),
    );
    assert.deepEqual(forbidden, [], `imports docs/architecture.md does not allow:\n${forbidden.join('\n')}`);
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

  it('writes each listener default in SETTINGS only (the servers and codecs require their limits)', () => {
    const defaults = listenerDefaultValues();
    const found = files
      .filter((path) => LISTENER_FOLDERS.includes(folderOf(path).split('/')[0]!) || LISTENER_FILES.includes(relative(SRC, path)))
      .flatMap((path) => listenerDefaultsIn(parse(path), defaults).map((line) => line.replace(`${ROOT}/`, '')));
    assert.deepEqual(
      found,
      [],
      `listener defaults outside SETTINGS (take them from the caller; tests: src/listener-defaults.ts):\n${found.join('\n')}`,
    );
  });

  it("keeps libxml2's WebAssembly out of the serving process's main thread (only the list worker loads it), and ioredis out of a daemon without --store", () => {
    // cli.ts, then daemon.ts (imported by `serve`): libxml2-wasm costs ~20 MiB of RSS where it is
    // loaded, and its memory never shrinks; the worker's exit gives it back (prepare-worker.ts).
    for (const root of ['cli.ts', 'daemon.ts']) {
      const chain = eagerChain(join(SRC, root), (specifier) => specifier === 'libxml2-wasm');
      assert.equal(chain, null, `src/${root} loads libxml2-wasm: ${chain?.join(' → ')}`);
    }
    // Nor the Redis client: the store module loads it only with --store (store/open.ts).
    for (const root of ['cli.ts', 'daemon.ts']) {
      const chain = eagerChain(join(SRC, root), (specifier) => specifier === 'ioredis');
      assert.equal(chain, null, `src/${root} loads ioredis without --store: ${chain?.join(' → ')}`);
    }
    // The worker does, through the list code: the check finds that chain.
    assert.notEqual(
      eagerChain(join(SRC, 'whitelist', 'prepare-worker-thread.ts'), (specifier) => specifier === 'libxml2-wasm'),
      null,
    );
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
    const eager = ts.createSourceFile(
      'eager.ts',
      [
        "import type { A } from './type-only.js';",
        "import { type B } from './type-bindings.js';",
        "import { type C, d } from './one-value.js';",
        "import './side-effect.js';",
        "import * as e from './namespace.js';",
        "export type { F } from './type-export.js';",
        "export { g } from './value-export.js';",
        "const h = await import('./lazy.js');",
      ].join('\n'),
      ts.ScriptTarget.Latest,
      true,
    );
    assert.deepEqual(eagerSpecifiers(eager), ['./one-value.js', './side-effect.js', './namespace.js', './value-export.js']);
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
    const listener = ts.createSourceFile(
      'server.ts',
      [
        'const a = { idleTimeoutMs: 330_000, grace: 1024 };', // 330 s in ms; 1024 is no listener default
        'const b = 65_536 + 1024;', // --max-milter-packet-bytes, folded
        'const c = options.maxConnections ?? 1000;',
        'function d(limits: PolicyLimits = X, n = 5): void {}',
        'const e = options.logger ?? null;',
      ].join('\n'),
      ts.ScriptTarget.Latest,
      true,
    );
    assert.deepEqual(
      listenerDefaultsIn(listener, listenerDefaultValues()).map((line) => line.replace(/: .*/, '')),
      ['server.ts:1 330_000', 'server.ts:2 65_536 + 1024', 'server.ts:3 options.maxConnections ?? 1000', 'server.ts:4 limits'],
    );
  });
});
