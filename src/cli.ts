#!/usr/bin/env node
/**
 * Commands: serve, check, query. Argument handling and printing only; the work lives elsewhere.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { parseArgs } from 'node:util';
import {
  ConfigError,
  PACKAGE_ROOT,
  SETTINGS,
  flagValuesOf,
  resolveConfig,
  resolveSettings,
  settingParseOptions,
  settingsHelp,
  type FlagValues,
  type ResolvedSettings,
  type SettingKey,
} from './config.js';
import { encodeRequest, PolicyDecoder } from './frontends/policy/codec.js';
import { postfixTables, writeTablesAtomically } from './frontends/socketmap/export.js';
import { SocketmapTables } from './frontends/socketmap/maps.js';
import { parseListenAddress } from './net/listen.js';
import { guardList } from './whitelist/guard.js';
import { WhitelistIndex } from './whitelist/whitelist-index.js';
import type { PreparedList, PrepareResult } from './whitelist/prepare.js';
import { hasSignerTrust, loadSignerTrust, type KeyInfoSigner, type SignerTrustConfig } from './whitelist/signature.js';
import { addAcceptedHash, readAcceptedHashes, readStoredList } from './whitelist/state.js';
import type { ValidEntry } from './whitelist/validate.js';

const USAGE = `mssante-policyd — MSSante whitelist policy daemon (Postfix policy, Milter, Exim)

Usage:
  mssante-policyd serve [flags]                      run the daemon
  mssante-policyd check FILE [--config FILE] [--signer PEM | --signer-ca PEM --signer-cn NAME]... [--allow-unsigned]
                             [--json] [--state-dir DIR [--accept]]
                                                     validate a whitelist file; exit 0 usable, 1 unusable,
                                                     3 usable but the guard would refuse it against the stored list
  mssante-policyd query [--config FILE] [--policy ADDR] name=value...  send one policy request, print the answer
  mssante-policyd export --format postfix --out DIR FILE [--config FILE] [--signer PEM | --signer-ca PEM --signer-cn NAME]...
                                                     write the socketmap tables as files for postmap
  mssante-policyd --version | --help | COMMAND --help
`;

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(`${PACKAGE_ROOT}/package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/**
 * The list code brings libxml2 (WebAssembly, ~13 MiB and ~0.1 s to load): every command but `serve`
 * loads it here; `serve` keeps it in its list worker (whitelist/prepare-worker.ts).
 */
let prepareList: typeof import('./whitelist/prepare.js').prepareList = () => {
  throw new Error('the list code is not loaded');
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== 'serve') ({ prepareList } = await import('./whitelist/prepare.js'));
  switch (command) {
    case 'serve':
      return serveCommand(rest);
    case 'check':
      return checkCommand(rest);
    case 'query':
      return queryCommand(rest);
    case 'export':
      return exportCommand(rest);
    case '--version':
    case '-v':
      process.stdout.write(`${packageVersion()}\n`);
      return 0;
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      return 2;
  }
}

// ---------------------------------------------------------------- serve

async function serveCommand(args: string[]): Promise<number> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {
    config: { type: 'string' },
    'print-config': { type: 'boolean' },
    help: { type: 'boolean' },
  };
  for (const s of SETTINGS) {
    options[s.key] =
      s.kind === 'bool' ? { type: 'boolean' } : s.kind === 'list' ? { type: 'string', multiple: true } : { type: 'string' };
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (error) {
    process.stderr.write(`serve: ${(error as Error).message}\n`);
    return 2;
  }
  const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (values['help'] === true) {
    process.stdout.write(
      `mssante-policyd serve [flags]\n\n  --config FILE\n      JSON file of settings keyed by flag name (flag > env > file > default)\n  --print-config\n      print the effective configuration and exit\n${settingsHelp()}\n`,
    );
    return 0;
  }
  const flags: FlagValues = new Map();
  for (const s of SETTINGS) {
    const v = values[s.key];
    if (v !== undefined) flags.set(s.key, v);
  }
  let config;
  try {
    config = resolveConfig(
      flags,
      process.env,
      typeof values['config'] === 'string' ? values['config'] : (process.env['MSSANTE_POLICYD_CONFIG'] ?? null),
    );
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`serve: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  if (values['print-config'] === true) {
    process.stdout.write(`${JSON.stringify(config, null, 2)}\n`);
    return 0;
  }
  const { serve } = await import('./daemon.js');
  await serve(config);
  return process.exitCode === undefined ? -1 : Number(process.exitCode);
}

// ---------------------------------------------------------------- check

export interface CheckReport {
  file: string;
  usable: boolean;
  sha256: string;
  failure: { reason: string; detail: string } | null;
  signature: { verified: boolean; signer?: unknown; why?: string } | null;
  generatedAt: string | null;
  entries: { total: number; accepted: number; skipped: number };
  domains: number;
  certificates: number;
  skipped: Array<{ index: number; domain: string | null; reason: string; detail: string }>;
  dnSpellingVariants: Array<{ normalised: string; spellings: string[] }>;
  guard: { against: string; verdict: string; detail?: string; dropped?: number; added?: number } | null;
  age: { days: number; maxDays: number; verdict: 'fresh' | 'too_old' | 'not_checked' } | null;
  keyInfo: Omit<KeyInfoSigner, 'pem'> | null;
  accepted: boolean;
}

/** The list-trust settings that check and export read exactly as serve does (same table, coercion, limits). */
const TRUST_SETTINGS = [
  'signer',
  'signer-ca',
  'signer-cn',
  'signer-subject',
  'allow-unsigned',
  'max-list-entries',
] as const satisfies readonly SettingKey[];
const CHECK_SETTINGS = [...TRUST_SETTINGS, 'max-list-age', 'state-dir', 'max-shrink'] as const satisfies readonly SettingKey[];

/** check's exit code when the list is usable but the guard would refuse it against the stored list. */
const CHECK_EXIT_GUARD_REFUSES = 3;

/** Reads a command's settings through serve's table; prints the error and returns null when one is bad. */
function commandSettings(command: string, keys: readonly SettingKey[], values: Record<string, unknown>): ResolvedSettings | null {
  try {
    const configFile = typeof values['config'] === 'string' ? values['config'] : (process.env['MSSANTE_POLICYD_CONFIG'] ?? null);
    return resolveSettings(keys, flagValuesOf(keys, values), process.env, configFile);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${command}: ${error.message}\n`);
      return null;
    }
    throw error;
  }
}

function trustConfigOf(settings: ResolvedSettings): SignerTrustConfig {
  return {
    signer: settings.get<string[]>('signer'),
    signerCa: settings.get<string[]>('signer-ca'),
    signerCn: settings.get<string[]>('signer-cn'),
    signerSubject: settings.get<string[]>('signer-subject'),
  };
}

const CHECK_USAGE =
  'mssante-policyd check FILE [--config FILE] [--signer PEM]... [--signer-ca PEM --signer-cn NAME|--signer-subject DN]...\n' +
  '      [--allow-unsigned] [--max-list-age DAYS] [--save-signer PEM] [--json] [--state-dir DIR [--accept]]\n' +
  '      [--max-shrink PCT] [--max-list-entries N]\n' +
  '  Verifies the signature, validates every entry, reports skipped entries and DN spellings,\n' +
  "  prints the signer (which pin or CA + constraint matched, SHA-256, days to expiry) and the list's age\n" +
  '  (--max-list-age, default 30; 0: not judged). --save-signer writes the KeyInfo certificate of a list\n' +
  '  whose signature verifies, trusted or not: compare its SHA-256 with one obtained by another channel.\n' +
  "  With --state-dir (or the config file's state-dir) compares with the stored list (guard); --accept\n" +
  '  records this list so the daemon lets it through the guard on its next load (SIGHUP).\n' +
  "  Settings are read like serve's (flag > env > --config file > default, same limits).\n" +
  `  Exit 0: usable; 1: unusable; ${CHECK_EXIT_GUARD_REFUSES}: usable, but the guard would refuse it against the stored list.\n`;

async function checkCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        ...settingParseOptions(CHECK_SETTINGS),
        config: { type: 'string' },
        'save-signer': { type: 'string' },
        json: { type: 'boolean' },
        accept: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    process.stderr.write(`check: ${(error as Error).message}\n`);
    return 2;
  }
  const v = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (v['help'] === true || parsed.positionals.length !== 1) {
    process.stdout.write(CHECK_USAGE);
    return v['help'] === true ? 0 : 2;
  }
  const file = parsed.positionals[0] as string;
  const settings = commandSettings('check', CHECK_SETTINGS, v);
  if (settings === null) return 2;
  const trustConfig = trustConfigOf(settings);
  const allowUnsigned = settings.get<boolean>('allow-unsigned');
  if (!hasSignerTrust(trustConfig) && !allowUnsigned) {
    process.stderr.write(
      'check: give --signer PEM (the pinned list signer) or --signer-ca PEM --signer-cn NAME, or --allow-unsigned to check the content only\n',
    );
    return 2;
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    process.stderr.write(`check: cannot read ${file}: ${(error as Error).message}\n`);
    return 1;
  }
  let trust: ReturnType<typeof loadSignerTrust> | null;
  try {
    trust = hasSignerTrust(trustConfig) ? loadSignerTrust(trustConfig) : null;
  } catch (error) {
    process.stderr.write(`check: ${(error as Error).message}\n`);
    return 2;
  }
  const maxEntries = settings.get<number>('max-list-entries');
  const result: PrepareResult = prepareList(bytes, { trust, allowUnsigned, maxEntries });
  const report = initialCheckReport(file, result);
  const saveSigner = v['save-signer'];
  if (typeof saveSigner === 'string' && !saveSignerCertificate(saveSigner, result)) return 1;
  if (result.ok) {
    describeList(report, result.list);
    const stop = await judgeAgainstStateDir(report, result.list, settings, v['accept'] === true);
    if (stop !== null) return stop;
  }
  if (v['json'] === true) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(formatCheckReport(report));
  if (!report.usable) return 1;
  // `check && systemctl reload` must not go ahead when the daemon would refuse this very list.
  return report.guard?.verdict === 'refuse' && !report.accepted ? CHECK_EXIT_GUARD_REFUSES : 0;
}

/** The report of a prepared list, before what only a usable list has: its outcome and the KeyInfo found. */
function initialCheckReport(file: string, result: PrepareResult): CheckReport {
  const report: CheckReport = {
    file,
    usable: result.ok,
    sha256: result.ok ? result.list.sha256 : result.sha256,
    failure: result.ok ? null : { reason: result.reason, detail: result.detail },
    signature: null,
    generatedAt: null,
    entries: { total: 0, accepted: 0, skipped: 0 },
    domains: 0,
    certificates: 0,
    skipped: [],
    dnSpellingVariants: [],
    guard: null,
    age: null,
    keyInfo: null,
    accepted: false,
  };
  const keyInfo = result.ok ? null : (result.keyInfo ?? null);
  if (keyInfo !== null) {
    const { pem: _pem, ...shown } = keyInfo;
    report.keyInfo = shown;
  }
  return report;
}

/** --save-signer: writes the KeyInfo certificate whose signature verifies; false (said on stderr) when there is none. */
function saveSignerCertificate(path: string, result: PrepareResult): boolean {
  const keyInfo = result.ok ? null : (result.keyInfo ?? null);
  const pem = result.ok ? (result.list.signature.verified ? result.list.signature.signer.pem : null) : (keyInfo?.pem ?? null);
  if (pem == null) {
    process.stderr.write('check: --save-signer: no KeyInfo certificate whose signature verifies in this list\n');
    return false;
  }
  writeFileSync(path, pem);
  return true;
}

/** What a usable list holds: signature, generation date, entry counts, skipped entries, DN spellings. */
function describeList(report: CheckReport, list: PreparedList): void {
  const index = new WhitelistIndex({ generatedAt: list.generatedAt }, list.entries, list.rejected);
  report.signature = list.signature.verified
    ? { verified: true, signer: list.signature.signer }
    : { verified: false, why: list.signature.why };
  report.generatedAt = list.generatedAt;
  report.entries = { total: list.rawEntryCount, accepted: list.entries.length, skipped: list.rejected.length };
  report.domains = index.domainCount;
  report.certificates = index.certificateCount;
  report.skipped = list.rejected.map((r) => ({ ...r }));
  report.dnSpellingVariants = dnSpellingVariants(list.entries);
}

/**
 * The daemon's verdicts on a usable list: the guard against the stored list, the age, and --accept.
 * Returns the exit code when the command must stop there, else null.
 */
async function judgeAgainstStateDir(
  report: CheckReport,
  list: PreparedList,
  settings: ResolvedSettings,
  accept: boolean,
): Promise<number | null> {
  const maxEntries = settings.get<number>('max-list-entries');
  const maxListAgeDays = settings.get<number>('max-list-age');
  // The default ./var is not assumed to be the daemon's: compare only with a state dir named.
  const stateDir = settings.origin('state-dir') === 'default' ? undefined : settings.get<string>('state-dir');
  const maxShrink = settings.get<number>('max-shrink');
  const { current, against } = storedListInForce(stateDir, maxEntries);
  const acceptedHashes = stateDir === undefined ? new Set<string>() : readAcceptedHashes(stateDir);
  report.guard = { against, ...guardList(current, list, maxShrink, acceptedHashes, Date.now(), maxListAgeDays) };
  const ageDays = Math.floor((Date.now() - Date.parse(list.generatedAt)) / 86_400_000);
  report.age = {
    days: ageDays,
    maxDays: maxListAgeDays,
    verdict: maxListAgeDays === 0 ? 'not_checked' : ageDays > maxListAgeDays ? 'too_old' : 'fresh',
  };
  if (accept) {
    if (stateDir === undefined) {
      process.stderr.write("check: --accept needs --state-dir (the daemon's state directory)\n");
      return 2;
    }
    await addAcceptedHash(stateDir, list.sha256);
    report.accepted = true;
  }
  // Too old is the daemon's verdict at a first start (list_too_old), unless this very list is accepted.
  if (report.age.verdict === 'too_old' && current === null && !report.accepted && !acceptedHashes.has(list.sha256)) {
    report.usable = false;
    report.failure = {
      reason: 'list_too_old',
      detail: `generated ${list.generatedAt}, ${ageDays} days ago (--max-list-age ${maxListAgeDays})`,
    };
  }
  return null;
}

/** The DN keys the list spells several ways, with every spelling (first entry's display form). */
function dnSpellingVariants(entries: readonly ValidEntry[]): CheckReport['dnSpellingVariants'] {
  const spellings = new Map<string, Set<string>>();
  for (const e of entries) {
    const set = spellings.get(e.dnKey) ?? new Set<string>();
    set.add(e.dnRaw);
    spellings.set(e.dnKey, set);
  }
  const variants: CheckReport['dnSpellingVariants'] = [];
  for (const e of entries) {
    const set = spellings.get(e.dnKey);
    if (set !== undefined && set.size > 1) {
      variants.push({ normalised: e.dnDisplay, spellings: [...set] });
      spellings.delete(e.dnKey);
    }
  }
  return variants;
}

/** The list stored in `stateDir` (the daemon's list in force), for the guard; none without a state dir. */
function storedListInForce(
  stateDir: string | undefined,
  maxEntries: number,
): { current: { index: WhitelistIndex; sha256: string } | null; against: string } {
  if (stateDir === undefined)
    return { current: null, against: "no list in force (give --state-dir to compare with the daemon's)" };
  const stored = readStoredList(stateDir);
  // The stored list passed every check when it was put in force; read for its content only, so
  // that it is named (and compared) even when it was signed by another signer than this list.
  const storedPrepared = stored === null ? null : prepareList(stored.bytes, { trust: null, allowUnsigned: true, maxEntries });
  if (storedPrepared === null || !storedPrepared.ok) return { current: null, against: `${stateDir} (no stored list)` };
  const index = new WhitelistIndex({ generatedAt: storedPrepared.list.generatedAt }, storedPrepared.list.entries, []);
  return { current: { index, sha256: storedPrepared.list.sha256 }, against: `${stateDir} (generated ${index.generatedAt})` };
}

const DAY_MS = 86_400_000;

function formatCheckReport(r: CheckReport): string {
  const lines: string[] = [`file: ${r.file}`, `sha256: ${r.sha256}`];
  if (r.keyInfo !== null) {
    const k = r.keyInfo;
    lines.push(
      `KeyInfo signer (its signature verifies, but it is not trusted): ${k.subject}; issuer ${k.issuer}; valid ${k.validFrom} → ${k.validTo}`,
    );
    lines.push(
      `KeyInfo signer SHA-256: ${k.fingerprint256} (compare with a fingerprint obtained by another channel before trusting it)`,
    );
  }
  if (r.signature?.verified) {
    const s = r.signature.signer as {
      subject: string;
      issuer: string;
      validFrom: string;
      validTo: string;
      trustedBy: string;
      matched?: string;
      fingerprint256: string;
    };
    lines.push(
      `signature: VALID (signer ${s.subject.replace(/\n/g, ', ')}; issuer ${s.issuer.replace(/\n/g, ', ')}; valid ${s.validFrom} → ${s.validTo}; trusted as ${s.trustedBy})`,
    );
    lines.push(`signer matched: ${s.matched ?? s.trustedBy}`);
    lines.push(`signer SHA-256: ${s.fingerprint256}`);
    const days = Math.floor((Date.parse(s.validTo) - Date.now()) / DAY_MS);
    lines.push(
      days >= 0
        ? `signer expiry: ${s.validTo}, in ${days} days${days < 30 ? ' (WARNING: pin its successor now, see README "Trusting the list signer")' : ''}`
        : `signer expiry: ${s.validTo}, expired ${-days} days ago (lists it signed before that stay valid; newer ones come from a successor)`,
    );
  } else if (r.signature !== null) {
    lines.push(`signature: NOT CHECKED (${r.signature.why})`);
  }
  if (r.age !== null) {
    const a = r.age;
    lines.push(
      a.verdict === 'not_checked'
        ? `age: ${a.days} days (not judged: --max-list-age 0)`
        : a.verdict === 'fresh'
          ? `age: ${a.days} days: FRESH (--max-list-age ${a.maxDays})`
          : `age: ${a.days} days: TOO OLD (--max-list-age ${a.maxDays}); a daemon with no list in force refuses it (list_too_old) unless accepted with --state-dir DIR --accept`,
    );
  }
  if (!r.usable) {
    lines.push(`UNUSABLE: ${r.failure?.reason} — ${r.failure?.detail}`);
  }
  if (r.generatedAt === null) return `${lines.join('\n')}\n`;
  lines.push(`generated: ${r.generatedAt}`);
  lines.push(`entries: ${r.entries.total} in file, ${r.entries.accepted} accepted, ${r.entries.skipped} skipped`);
  lines.push(`domains: ${r.domains} distinct; certificates: ${r.certificates} distinct after normalisation`);
  for (const s of r.skipped) lines.push(`  skipped #${s.index} ${s.domain ?? '(no name)'}: ${s.reason} — ${s.detail}`);
  if (r.dnSpellingVariants.length > 0) {
    lines.push(`DN spelling variants normalised: ${r.dnSpellingVariants.length} certificates written several ways`);
    for (const group of r.dnSpellingVariants) {
      lines.push(`  ${group.normalised}`);
      for (const sp of group.spellings) lines.push(`    ${JSON.stringify(sp)}`);
    }
  }
  if (r.guard !== null)
    lines.push(`guard against ${r.guard.against}: ${r.guard.verdict}${r.guard.detail ? ` — ${r.guard.detail}` : ''}`);
  if (r.accepted) lines.push('accepted: the daemon will let this list through the guard on its next load (send SIGHUP)');
  if (r.usable && r.guard?.verdict === 'refuse' && !r.accepted) {
    lines.push(
      `USABLE, BUT THE GUARD WOULD REFUSE IT (exit ${CHECK_EXIT_GUARD_REFUSES}): the daemon keeps the stored list; after review, --accept`,
    );
  } else if (r.usable) {
    lines.push('USABLE');
  }
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------- export

const EXPORT_HELP = `mssante-policyd export --format postfix --out DIR FILE [--config FILE] [--signer PEM | --signer-ca PEM --signer-cn NAME]...
      [--tls-policy-value V] [--transport-value V] [--max-list-entries N]
  Verifies FILE like check and serve do (settings read like serve's: flag > env > --config file > default) (signature required: there is no --allow-unsigned here), then
  writes into DIR, each file atomically: mssante-domain, mssante-tls-policy, mssante-transport (for
  postmap) and mssante-recipient-access.regexp (a regexp: table). Exit 0 written; 1 list unusable.
`;

const EXPORT_SETTINGS = [...TRUST_SETTINGS, 'tls-policy-value', 'transport-value'] as const satisfies readonly SettingKey[];

async function exportCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        ...settingParseOptions(EXPORT_SETTINGS),
        config: { type: 'string' },
        format: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    process.stderr.write(`export: ${(error as Error).message}\n`);
    return 2;
  }
  const v = parsed.values as Record<string, string | boolean | string[] | undefined>;
  const out = v['out'];
  if (v['help'] === true || parsed.positionals.length !== 1 || typeof out !== 'string') {
    process.stdout.write(EXPORT_HELP);
    return v['help'] === true ? 0 : 2;
  }
  if (v['format'] !== 'postfix') {
    process.stderr.write('export: --format postfix is the only format\n');
    return 2;
  }
  const settings = commandSettings('export', EXPORT_SETTINGS, v);
  if (settings === null) return 2;
  if (settings.get<boolean>('allow-unsigned')) {
    process.stderr.write('export: the tables are written from a verified list only; --allow-unsigned is not accepted\n');
    return 2;
  }
  const trustConfig = trustConfigOf(settings);
  if (!hasSignerTrust(trustConfig)) {
    process.stderr.write(
      'export: give --signer PEM or --signer-ca PEM --signer-cn NAME: the tables are written from a verified list only\n',
    );
    return 2;
  }
  const file = parsed.positionals[0] as string;
  let bytes: Buffer;
  let tables: SocketmapTables;
  let trust;
  try {
    bytes = readFileSync(file);
    trust = loadSignerTrust(trustConfig);
    tables = new SocketmapTables({
      tlsPolicy: settings.get<string>('tls-policy-value'),
      transport: settings.get<string>('transport-value'),
    });
  } catch (error) {
    process.stderr.write(`export: ${(error as Error).message}\n`);
    return 2;
  }
  const maxEntries = settings.get<number>('max-list-entries');
  const result = prepareList(bytes, { trust, allowUnsigned: false, maxEntries });
  if (!result.ok) {
    process.stderr.write(`export: ${file} is unusable: ${result.reason} — ${result.detail}\n`);
    return 1;
  }
  const list = result.list;
  const index = new WhitelistIndex({ generatedAt: list.generatedAt }, list.entries, list.rejected);
  const header = `Written by mssante-policyd export from ${file}\nsha256 ${list.sha256}, generated ${list.generatedAt}, ${index.domainCount} domains; do not edit`;
  const written = writeTablesAtomically(out, postfixTables(index, tables.values, header));
  for (const path of written) process.stdout.write(`${path}\n`);
  const signer = list.signature.verified ? list.signature.signer.subject.replace(/\n/g, ', ') : 'nobody';
  process.stdout.write(`${index.domainCount} domains, list generated ${list.generatedAt}, signed by ${signer}\n`);
  return 0;
}

// ---------------------------------------------------------------- query

async function queryCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        policy: { type: 'string' },
        ...settingParseOptions(['policy-listen']),
        config: { type: 'string' },
        timeout: { type: 'string' },
        help: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    process.stderr.write(`query: ${(error as Error).message}\n`);
    return 2;
  }
  if (parsed.values.help === true || parsed.positionals.length === 0) {
    process.stdout.write(
      'mssante-policyd query [--config FILE] [--policy ADDR] [--timeout SECONDS] name=value...\n' +
        '  Sends one Postfix policy request (request=smtpd_access_policy and protocol_state=RCPT are added\n' +
        "  unless given) and prints the action. ADDR: host:port or unix:/path; default the daemon's\n" +
        '  policy-listen as serve reads it (--policy-listen, env, --config file), else 127.0.0.1:10040.\n' +
        '  Example: query encryption_protocol=TLSv1.2 ccert_subject=mx.op.fr sender=a@op.mssante.fr\n',
    );
    return parsed.values.help === true ? 0 : 2;
  }
  const attrs = new Map<string, string>([
    ['request', 'smtpd_access_policy'],
    ['protocol_state', 'RCPT'],
  ]);
  for (const p of parsed.positionals) {
    const eq = p.indexOf('=');
    if (eq <= 0) {
      process.stderr.write(`query: ${JSON.stringify(p)} is not name=value\n`);
      return 2;
    }
    attrs.set(p.slice(0, eq), p.slice(eq + 1));
  }
  let policyListen: string | null;
  try {
    const values = parsed.values as Record<string, unknown>;
    const flags = flagValuesOf(['policy-listen'], values);
    if (typeof values['policy'] === 'string') flags.set('policy-listen', values['policy']);
    const configFile = typeof values['config'] === 'string' ? values['config'] : (process.env['MSSANTE_POLICYD_CONFIG'] ?? null);
    policyListen = resolveSettings(['policy-listen'], flags, process.env, configFile).get<string | null>('policy-listen');
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`query: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  if (policyListen === null) {
    process.stderr.write('query: the policy listener is off in this configuration: give --policy ADDR\n');
    return 2;
  }
  const timeoutText = parsed.values.timeout ?? '10';
  if (!/^\d{1,4}$/.test(timeoutText) || Number(timeoutText) < 1) {
    process.stderr.write(`query: --timeout: expected a whole number of seconds (1-9999), got ${JSON.stringify(timeoutText)}\n`);
    return 2;
  }
  let address;
  try {
    address = parseListenAddress(policyListen);
  } catch (error) {
    process.stderr.write(`query: ${(error as Error).message}\n`);
    return 2;
  }
  const timeoutMs = Number(timeoutText) * 1000;
  try {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = address.kind === 'unix' ? createConnection(address.path) : createConnection(address.port, address.host);
      const decoder = new PolicyDecoder();
      socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
      socket.on('connect', () => socket.write(encodeRequest(attrs)));
      socket.on('data', (chunk) => {
        const replies = decoder.push(chunk);
        const action = replies[0]?.get('action');
        if (action !== undefined) {
          socket.end();
          resolve(action);
        }
      });
      socket.on('error', reject);
      socket.on('close', () =>
        reject(new Error('connection closed without an answer (malformed request, or the daemon refused it)')),
      );
    });
    process.stdout.write(`action=${answer}\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`query: ${(error as Error).message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`mssante-policyd: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
