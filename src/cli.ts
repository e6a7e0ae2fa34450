#!/usr/bin/env node
/**
 * Commands: serve, check, query. Argument handling and printing only; the work lives elsewhere.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { parseArgs } from 'node:util';
import {
  ConfigError,
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
import { DEFAULT_POLICY_LIMITS } from './listener-defaults.js';
import { configFileOf, runCommand, UsageError } from './cli-usage.js';
import { postfixTables, writeTablesAtomically } from './frontends/socketmap/export.js';
import { SocketmapTables } from './frontends/socketmap/maps.js';
import { packageVersion } from './build-info.js';
import { acceptCommand } from './accept-command.js';
import { parseListenAddress } from './net/listen.js';
import { guardList } from './whitelist/guard.js';
import { listChange } from './whitelist/changes.js';
import { formatChange, formatDomainChanges, printable } from './whitelist/change-report.js';
import type { DomainChange } from './whitelist/change-journal.js';
import { WhitelistIndex } from './whitelist/whitelist-index.js';
import type { PreparedList, PrepareResult } from './whitelist/prepare.js';
import { hasSignerTrust, loadSignerTrust, type KeyInfoSigner, type SignerTrustConfig } from './whitelist/signature.js';
import { redactLocations } from './whitelist/shown-location.js';
import { addAcceptedHash, readAcceptedHashes, readStoredList } from './whitelist/state.js';
import { judgeStoredList } from './whitelist/stored-list.js';
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
  mssante-policyd diff OLD NEW [--config FILE] [--signer PEM | --signer-ca PEM --signer-cn NAME]... [--allow-unsigned] [--json]
                                                     both lists verified as check does; prints the domains added,
                                                     removed and moved to other certificates; exit 0, 1 unusable, 2 usage
  mssante-policyd --version | --help | COMMAND --help
`;

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
      return runCommand('serve', () => serveCommand(rest));
    case 'check':
      return runCommand('check', () => checkCommand(rest));
    case 'query':
      return runCommand('query', () => queryCommand(rest));
    case 'export':
      return runCommand('export', () => exportCommand(rest));
    case 'diff':
      return runCommand('diff', () => diffCommand(rest));
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
    throw new UsageError((error as Error).message);
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
  const config = resolveConfig(flags, process.env, configFileOf(values));
  if (values['print-config'] === true) {
    // The list URL may carry a token (query, userinfo): printed redacted, like everywhere else.
    const shown = (key: string, value: unknown): unknown =>
      key === 'whitelist' || key === 'whitelistSources' ? redactLocations(value) : value;
    process.stdout.write(`${JSON.stringify(config, shown, 2)}\n`);
    return 0;
  }
  const { serve } = await import('./daemon.js');
  // SIGHUP re-reads the same sources: these flags, this environment, the config file as it is then.
  const configFile = typeof values['config'] === 'string' ? values['config'] : (process.env['MSSANTE_POLICYD_CONFIG'] ?? null);
  await serve(config, { flags, env: process.env, configFile });
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
  guard: { against: string; verdict: string; detail?: string; dropped?: number; added?: number; rebound?: number } | null;
  age: { days: number; maxDays: number; verdict: 'fresh' | 'too_old' | 'not_checked' } | null;
  keyInfo: Omit<KeyInfoSigner, 'pem'> | null;
  accepted: boolean;
  /** The command that accepts this list into the state dir, with the settings in force (works as printed). */
  acceptCommand?: string;
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
const CHECK_SETTINGS = [
  ...TRUST_SETTINGS,
  'max-list-age',
  'state-dir',
  'max-shrink',
  'max-rebind',
] as const satisfies readonly SettingKey[];

/** check's exit code when the list is usable but the guard would refuse it against the stored list. */
const CHECK_EXIT_GUARD_REFUSES = 3;

/**
 * The arguments of a command that reads settings like serve: its settings' flags, --config, --help
 * and its own `extra` flags; a bad flag is a UsageError. Values are keyed by flag name.
 */
function parseCommandArgs(
  args: string[],
  keys: readonly SettingKey[],
  extra: Record<string, { type: 'string' | 'boolean' }>,
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  try {
    const parsed = parseArgs({
      args,
      options: { ...settingParseOptions(keys), config: { type: 'string' }, help: { type: 'boolean' }, ...extra },
      allowPositionals: true,
      strict: true,
    });
    return { values: parsed.values, positionals: parsed.positionals };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Reads a command's settings through serve's table (a bad one throws ConfigError: exit 2). */
function commandSettings(keys: readonly SettingKey[], values: Record<string, unknown>): ResolvedSettings {
  return resolveSettings(keys, flagValuesOf(keys, values), process.env, configFileOf(values));
}

function trustConfigOf(settings: ResolvedSettings): SignerTrustConfig {
  return {
    signer: settings.get('signer'),
    signerCa: settings.get('signer-ca'),
    signerCn: settings.get('signer-cn'),
    signerSubject: settings.get('signer-subject'),
  };
}

const CHECK_USAGE =
  'mssante-policyd check FILE [--config FILE] [--signer PEM]... [--signer-ca PEM --signer-cn NAME|--signer-subject DN]...\n' +
  '      [--allow-unsigned] [--max-list-age DAYS] [--save-signer PEM] [--json] [--state-dir DIR [--accept]]\n' +
  '      [--max-shrink PCT] [--max-rebind PCT] [--max-list-entries N]\n' +
  '  Verifies the signature, validates every entry, reports skipped entries and DN spellings,\n' +
  "  prints the signer (which pin or CA + constraint matched, SHA-256, days to expiry) and the list's age\n" +
  '  (--max-list-age, default 30; 0: not judged). --save-signer writes the KeyInfo certificate of a list\n' +
  '  whose signature verifies, trusted or not: compare its SHA-256 with one obtained by another channel.\n' +
  "  With --state-dir (or the config file's state-dir) compares with the stored list (guard), verified\n" +
  '  as the daemon verifies it at start-up (a copy it would set aside is not compared with); --accept\n' +
  '  records this list so the daemon lets it through the guard on its next load (SIGHUP).\n' +
  "  Settings are read like serve's (flag > env > --config file > default, same limits).\n" +
  `  Exit 0: usable; 1: unusable; ${CHECK_EXIT_GUARD_REFUSES}: usable, but the guard would refuse it against the stored list.\n`;

async function checkCommand(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(args, CHECK_SETTINGS, {
    'save-signer': { type: 'string' },
    json: { type: 'boolean' },
    accept: { type: 'boolean' },
  });
  const v = parsed.values;
  if (v['help'] === true) {
    process.stdout.write(CHECK_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) throw new UsageError(null, CHECK_USAGE);
  const file = parsed.positionals[0] as string;
  const settings = commandSettings(CHECK_SETTINGS, v);
  const trustConfig = trustConfigOf(settings);
  const allowUnsigned = settings.get('allow-unsigned');
  if (!hasSignerTrust(trustConfig) && !allowUnsigned) {
    throw new UsageError(
      'give --signer PEM (the pinned list signer) or --signer-ca PEM --signer-cn NAME, or --allow-unsigned to check the content only',
    );
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
    throw new UsageError((error as Error).message);
  }
  const maxEntries = settings.get('max-list-entries');
  const result: PrepareResult = prepareList(bytes, { trust, allowUnsigned, maxEntries });
  const report = initialCheckReport(file, result);
  const saveSigner = v['save-signer'];
  if (typeof saveSigner === 'string' && !saveSignerCertificate(saveSigner, result)) return 1;
  if (result.ok) {
    describeList(report, result.list);
    const stop = await judgeAgainstStateDir(report, result.list, settings, v['accept'] === true, configFileOf(v));
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
  configFile: string | null,
): Promise<number | null> {
  const maxEntries = settings.get('max-list-entries');
  const maxListAgeDays = settings.get('max-list-age');
  // The default ./var is not assumed to be the daemon's: compare only with a state dir named.
  const stateDir = settings.origin('state-dir') === 'default' ? undefined : settings.get('state-dir');
  const maxShrink = settings.get('max-shrink');
  const { current, against } = storedListInForce(stateDir, settings);
  const acceptedHashes = stateDir === undefined ? new Set<string>() : readAcceptedHashes(stateDir);
  const accepting = acceptCommand({
    file: report.file,
    configFile,
    trust: trustConfigOf(settings),
    allowUnsigned: settings.get('allow-unsigned'),
    maxListEntries: maxEntries,
    stateDir: stateDir ?? null,
  });
  report.acceptCommand = accepting;
  const candidate = {
    index: new WhitelistIndex({ generatedAt: list.generatedAt, sha256: list.sha256 }, list.entries, []),
    sha256: list.sha256,
  };
  const limits = { maxShrinkPercent: maxShrink, maxRebindPercent: settings.get('max-rebind'), maxListAgeDays };
  // The change itself is `diff`'s to print: the report keeps the verdict and its counts.
  const verdict = guardList(current, candidate, limits, acceptedHashes, Date.now(), accepting);
  const { change: _change, ...shown } = { change: null, ...verdict };
  report.guard = { against, ...shown };
  const ageDays = Math.floor((Date.now() - Date.parse(list.generatedAt)) / 86_400_000);
  report.age = {
    days: ageDays,
    maxDays: maxListAgeDays,
    verdict: maxListAgeDays === 0 ? 'not_checked' : ageDays > maxListAgeDays ? 'too_old' : 'fresh',
  };
  if (accept) {
    if (stateDir === undefined) throw new UsageError("--accept needs --state-dir (the daemon's state directory)");
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

/**
 * The list stored in `stateDir` (the daemon's list in force), for the guard; none without a state dir.
 * The copy is verified as the daemon verifies it at start-up (stored-list.ts), under this command's
 * trust settings: a copy the daemon would set aside (state_unverified) is not compared with, so a list
 * planted in the state dir cannot make check call a genuine list a rollback or a mass rebinding.
 */
function storedListInForce(
  stateDir: string | undefined,
  settings: ResolvedSettings,
): { current: { index: WhitelistIndex; sha256: string } | null; against: string } {
  if (stateDir === undefined)
    return { current: null, against: "no list in force (give --state-dir to compare with the daemon's)" };
  const stored = readStoredList(stateDir);
  if (stored === null) return { current: null, against: `${stateDir} (no stored list)` };
  const trustConfig = trustConfigOf(settings);
  const prepared = prepareList(stored.bytes, {
    trust: hasSignerTrust(trustConfig) ? loadSignerTrust(trustConfig) : null,
    allowUnsigned: settings.get('allow-unsigned'),
    maxEntries: settings.get('max-list-entries'),
  });
  const verdict = judgeStoredList(prepared, readAcceptedHashes(stateDir), Date.now());
  if (!verdict.ok)
    return {
      current: null,
      against: `${stateDir} (stored list refused, the daemon sets it aside at start-up as ${verdict.reason}: ${verdict.detail})`,
    };
  const list = verdict.list;
  const index = new WhitelistIndex({ generatedAt: list.generatedAt, sha256: list.sha256 }, list.entries, []);
  return { current: { index, sha256: list.sha256 }, against: `${stateDir} (generated ${index.generatedAt})` };
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
          : `age: ${a.days} days: TOO OLD (--max-list-age ${a.maxDays}); a daemon with no list in force refuses it (list_too_old) unless accepted: ${r.acceptCommand ?? 'check FILE --state-dir DIR --accept'}`,
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
      `USABLE, BUT THE GUARD WOULD REFUSE IT (exit ${CHECK_EXIT_GUARD_REFUSES}): the daemon keeps the stored list; after review: ${r.acceptCommand ?? '--accept'}`,
    );
  } else if (r.usable) {
    lines.push('USABLE');
  }
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------- export

/**
 * The age rule as check and the daemon apply it: a list older than --max-list-age is refused unless
 * the state dir named (--state-dir or the config file's) holds a list in force, or records this very
 * list as accepted (check --accept). Returns why it is too old, or null.
 */
function listTooOld(list: PreparedList, settings: ResolvedSettings): string | null {
  const maxDays = settings.get('max-list-age');
  const ageDays = Math.floor((Date.now() - Date.parse(list.generatedAt)) / DAY_MS);
  if (maxDays === 0 || ageDays <= maxDays) return null;
  const stateDir = settings.origin('state-dir') === 'default' ? undefined : settings.get('state-dir');
  if (stateDir !== undefined) {
    if (readAcceptedHashes(stateDir).has(list.sha256)) return null;
    if (storedListInForce(stateDir, settings).current !== null) return null;
  }
  return `generated ${list.generatedAt}, ${ageDays} days ago (--max-list-age ${maxDays})`;
}

const EXPORT_HELP = `mssante-policyd export --format postfix --out DIR FILE [--config FILE] [--signer PEM | --signer-ca PEM --signer-cn NAME]...
      [--tls-policy-value V] [--transport-value V] [--max-list-entries N] [--max-list-age DAYS] [--state-dir DIR]
  Verifies FILE like check and serve do (settings read like serve's: flag > env > --config file > default) (signature required: there is no --allow-unsigned here), then
  writes into DIR, each file atomically: mssante-domain, mssante-tls-policy, mssante-transport (for
  postmap) and mssante-recipient-access.regexp (a regexp: table). The age rule is check's: a list older
  than --max-list-age (default 30; 0: not judged) is refused unless the --state-dir named holds a list
  in force or records this one as accepted. Exit 0 written; 1 list unusable.
`;

const EXPORT_SETTINGS = [
  ...TRUST_SETTINGS,
  'tls-policy-value',
  'transport-value',
  'max-list-age',
  'state-dir',
] as const satisfies readonly SettingKey[];

async function exportCommand(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(args, EXPORT_SETTINGS, { format: { type: 'string' }, out: { type: 'string' } });
  const v = parsed.values;
  const out = v['out'];
  if (v['help'] === true) {
    process.stdout.write(EXPORT_HELP);
    return 0;
  }
  if (parsed.positionals.length !== 1 || typeof out !== 'string') throw new UsageError(null, EXPORT_HELP);
  if (v['format'] !== 'postfix') throw new UsageError('--format postfix is the only format');
  const settings = commandSettings(EXPORT_SETTINGS, v);
  if (settings.get('allow-unsigned'))
    throw new UsageError('the tables are written from a verified list only; --allow-unsigned is not accepted');
  const trustConfig = trustConfigOf(settings);
  if (!hasSignerTrust(trustConfig))
    throw new UsageError(
      'give --signer PEM or --signer-ca PEM --signer-cn NAME: the tables are written from a verified list only',
    );
  const file = parsed.positionals[0] as string;
  let bytes: Buffer;
  let tables: SocketmapTables;
  let trust;
  try {
    bytes = readFileSync(file);
    trust = loadSignerTrust(trustConfig);
    tables = new SocketmapTables({
      tlsPolicy: settings.get('tls-policy-value'),
      transport: settings.get('transport-value'),
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const maxEntries = settings.get('max-list-entries');
  const result = prepareList(bytes, { trust, allowUnsigned: false, maxEntries });
  if (!result.ok) {
    process.stderr.write(`export: ${file} is unusable: ${result.reason} — ${result.detail}\n`);
    return 1;
  }
  const list = result.list;
  const tooOld = listTooOld(list, settings);
  if (tooOld !== null) {
    process.stderr.write(
      `export: ${file} is unusable: list_too_old — ${tooOld}; a daemon with no list in force refuses it too. ` +
        'If it is intended: --max-list-age 0, or --state-dir of a daemon where check --accept recorded it\n',
    );
    return 1;
  }
  const index = new WhitelistIndex({ generatedAt: list.generatedAt }, list.entries, list.rejected);
  const header = `Written by mssante-policyd export from ${file}\nsha256 ${list.sha256}, generated ${list.generatedAt}, ${index.domainCount} domains; do not edit`;
  const written = writeTablesAtomically(out, postfixTables(index, tables.values, header));
  for (const path of written) process.stdout.write(`${path}\n`);
  const signer = list.signature.verified ? list.signature.signer.subject.replace(/\n/g, ', ') : 'nobody';
  process.stdout.write(`${index.domainCount} domains, list generated ${list.generatedAt}, signed by ${signer}\n`);
  return 0;
}

// ---------------------------------------------------------------- diff

const DIFF_HELP = `mssante-policyd diff OLD NEW [--config FILE] [--signer PEM | --signer-ca PEM --signer-cn NAME]... [--allow-unsigned]
      [--max-list-entries N] [--json]
  Verifies both lists as check does (signature, entries; settings read like serve's: flag > env >
  --config file > default), then prints what the daemon would journal when NEW replaces OLD: domains
  added, removed, moved to other certificates (the set of normalised certificate identities bound to
  the domain changed: a DN spelled another way is not a move), certificate identities added and removed.
  --json prints the change as one object, as GET /v1/whitelist/changes serves each (appliedAt null).
  Exit 0: printed; 1: a list is unreadable or unusable; 2: bad usage or trust settings.
`;

async function diffCommand(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(args, TRUST_SETTINGS, { json: { type: 'boolean' } });
  const v = parsed.values;
  if (v['help'] === true) {
    process.stdout.write(DIFF_HELP);
    return 0;
  }
  if (parsed.positionals.length !== 2) throw new UsageError(null, DIFF_HELP);
  const settings = commandSettings(TRUST_SETTINGS, v);
  const trustConfig = trustConfigOf(settings);
  const allowUnsigned = settings.get('allow-unsigned');
  if (!hasSignerTrust(trustConfig) && !allowUnsigned) {
    throw new UsageError('give --signer PEM or --signer-ca PEM --signer-cn NAME (or --allow-unsigned to compare contents only)');
  }
  let trust: ReturnType<typeof loadSignerTrust> | null;
  try {
    trust = hasSignerTrust(trustConfig) ? loadSignerTrust(trustConfig) : null;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const indexes: WhitelistIndex[] = [];
  for (const file of parsed.positionals) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (error) {
      process.stderr.write(`diff: cannot read ${file}: ${(error as Error).message}\n`);
      return 1;
    }
    const result = prepareList(bytes, { trust, allowUnsigned, maxEntries: settings.get('max-list-entries') });
    if (!result.ok) {
      process.stderr.write(`diff: ${file} is unusable: ${result.reason} — ${result.detail}\n`);
      return 1;
    }
    const list = result.list;
    indexes.push(new WhitelistIndex({ generatedAt: list.generatedAt, sha256: list.sha256 }, list.entries, list.rejected));
  }
  const [before, after] = indexes as [WhitelistIndex, WhitelistIndex];
  const change = listChange(before, after, null);
  if (v['json'] === true) process.stdout.write(`${JSON.stringify(change, null, 2)}\n`);
  else {
    const [from, to] = parsed.positionals as [string, string];
    process.stdout.write(formatChange(change, { from, to }, before.domainCount));
  }
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
        explain: { type: 'boolean' },
        http: { type: 'string' },
        ...settingParseOptions(['http-listen']),
        help: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (parsed.values.help === true || parsed.positionals.length === 0) {
    const usage =
      'mssante-policyd query [--config FILE] [--policy ADDR] [--timeout SECONDS] name=value...\n' +
      '  Sends one Postfix policy request (request=smtpd_access_policy and protocol_state=RCPT are added\n' +
      "  unless given) and prints the action. ADDR: host:port or unix:/path; default the daemon's\n" +
      '  policy-listen as serve reads it (--policy-listen, env, --config file), else 127.0.0.1:10040.\n' +
      "  --explain [--http ADDR]: also asks the daemon's HTTP side (default: its http-listen) what the list in\n" +
      "  force says of the sender's domain: its certificates, since which list (the change journal), its last changes.\n" +
      '  Example: query encryption_protocol=TLSv1.2 ccert_subject=mx.op.fr sender=a@op.mssante.fr\n';
    if (parsed.values.help !== true) throw new UsageError(null, usage);
    process.stdout.write(usage);
    return 0;
  }
  const attrs = new Map<string, string>([
    ['request', 'smtpd_access_policy'],
    ['protocol_state', 'RCPT'],
  ]);
  for (const p of parsed.positionals) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new UsageError(`${JSON.stringify(p)} is not name=value`);
    attrs.set(p.slice(0, eq), p.slice(eq + 1));
  }
  const values = parsed.values as Record<string, unknown>;
  const flags = flagValuesOf(['policy-listen'], values);
  if (typeof values['policy'] === 'string') flags.set('policy-listen', values['policy']);
  const policyListen = resolveSettings(['policy-listen'], flags, process.env, configFileOf(values)).get('policy-listen');
  if (policyListen === null) throw new UsageError('the policy listener is off in this configuration: give --policy ADDR');
  const timeoutText = parsed.values.timeout ?? '10';
  if (!/^\d{1,4}$/.test(timeoutText) || Number(timeoutText) < 1)
    throw new UsageError(`--timeout: expected a whole number of seconds (1-9999), got ${JSON.stringify(timeoutText)}`);
  let address;
  try {
    address = parseListenAddress(policyListen);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const timeoutMs = Number(timeoutText) * 1000;
  try {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = address.kind === 'unix' ? createConnection(address.path) : createConnection(address.port, address.host);
      const decoder = new PolicyDecoder(DEFAULT_POLICY_LIMITS);
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
    if (parsed.values.explain === true) return await explainQuery(attrs, parsed.values, timeoutMs);
    return 0;
  } catch (error) {
    process.stderr.write(`query: ${(error as Error).message}\n`);
    return 1;
  }
}

interface DomainAnswer {
  domain?: string;
  listSha256?: string | null;
  binding?: string[];
  since?: string | null;
  changes?: DomainChange[];
}

/** query --explain: the sender domain's binding, since when, and its last changes, from the daemon's HTTP side. */
async function explainQuery(attrs: Map<string, string>, values: Record<string, unknown>, timeoutMs: number): Promise<number> {
  let base: string;
  try {
    const flags = flagValuesOf(['http-listen'], values);
    if (typeof values['http'] === 'string') flags.set('http-listen', values['http']);
    const listen = resolveSettings(['http-listen'], flags, process.env, configFileOf(values)).get('http-listen');
    const address = listen === null ? null : parseListenAddress(listen);
    if (address === null || address.kind !== 'tcp')
      throw new ConfigError('--explain needs the HTTP listener on host:port: give --http ADDR');
    base = `http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const sender = attrs.get('sender') ?? '';
  const domain = sender.slice(sender.lastIndexOf('@') + 1);
  if (domain === '') {
    process.stdout.write('explain: no sender domain to explain (sender=user@domain)\n');
    return 0;
  }
  try {
    const res = await fetch(`${base}/v1/whitelist/domains/${encodeURIComponent(domain)}`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = (await res.json()) as DomainAnswer;
    const lines: string[] = [];
    if (res.status === 200) {
      lines.push(`explain: ${printable(domain)} is in the list in force (sha256 ${body.listSha256 ?? '?'})`);
      lines.push(`  bound to: ${(body.binding ?? []).map(printable).join(' | ')}`);
      lines.push(`  since: ${body.since ?? 'before the change journal (older than every change it holds)'}`);
    } else if (res.status === 404) {
      lines.push(`explain: ${printable(domain)} is NOT in the list in force`);
    } else {
      process.stderr.write(`query: ${base} answered ${res.status}\n`);
      return 1;
    }
    const changes = body.changes ?? [];
    lines.push(changes.length === 0 ? '  changes: none in the journal' : '  last changes (newest first):');
    lines.push(...formatDomainChanges(changes));
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`query: --explain: ${base}: ${(error as Error).message}\n`);
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
