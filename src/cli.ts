#!/usr/bin/env node
/**
 * Commands: serve, check, query. Argument handling and printing only; the work lives elsewhere.
 */
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { parseArgs } from 'node:util';
import { ConfigError, PACKAGE_ROOT, SETTINGS, flagValuesOf, resolveConfig, resolveSettings, settingParseOptions, settingsHelp, type FlagValues, type SettingKey } from './config.js';
import { encodeRequest, PolicyDecoder } from './frontends/policy/codec.js';
import { parseListenAddress } from './net/listen.js';
import { guardList } from './whitelist/guard.js';
import { WhitelistIndex } from './whitelist/index.js';
import { prepareList, type PrepareResult } from './whitelist/prepare.js';
import { loadSignerTrust } from './whitelist/signature.js';
import { addAcceptedHash, readAcceptedHashes, readStoredList } from './whitelist/state.js';

const USAGE = `mssante-policyd — MSSante whitelist policy daemon (Postfix policy, Milter, Exim)

Usage:
  mssante-policyd serve [flags]                      run the daemon
  mssante-policyd check FILE [--config FILE] [--signer PEM]... [--allow-unsigned] [--json] [--state-dir DIR [--accept]]
                                                     validate a whitelist file; exit 0 usable, 1 unusable,
                                                     3 usable but the guard would refuse it against the stored list
  mssante-policyd query [--config FILE] [--policy ADDR] name=value...  send one policy request, print the answer
  mssante-policyd --version | --help | COMMAND --help
`;

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(`${PACKAGE_ROOT}/package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serveCommand(rest);
    case 'check':
      return checkCommand(rest);
    case 'query':
      return queryCommand(rest);
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
    options[s.key] = s.kind === 'bool' ? { type: 'boolean' } : s.kind === 'list' ? { type: 'string', multiple: true } : { type: 'string' };
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
    process.stdout.write(`mssante-policyd serve [flags]\n\n  --config FILE\n      JSON file of settings keyed by flag name (flag > env > file > default)\n  --print-config\n      print the effective configuration and exit\n${settingsHelp()}\n`);
    return 0;
  }
  const flags: FlagValues = new Map();
  for (const s of SETTINGS) {
    const v = values[s.key];
    if (v !== undefined) flags.set(s.key, v);
  }
  let config;
  try {
    config = resolveConfig(flags, process.env, typeof values['config'] === 'string' ? values['config'] : process.env['MSSANTE_POLICYD_CONFIG'] ?? null);
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

interface CheckReport {
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
  accepted: boolean;
}

/** The serve settings check reads, through the same table, coercion and limits. */
const CHECK_SETTINGS = ['signer', 'allow-unsigned', 'state-dir', 'max-shrink', 'max-list-entries'] as const satisfies readonly SettingKey[];

/** check's exit code when the list is usable but the guard would refuse it against the stored list. */
const CHECK_EXIT_GUARD_REFUSES = 3;

async function checkCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        ...settingParseOptions(CHECK_SETTINGS),
        config: { type: 'string' },
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
    process.stdout.write(
      'mssante-policyd check FILE [--config FILE] [--signer PEM]... [--allow-unsigned] [--json] [--state-dir DIR [--accept]]\n' +
        '                           [--max-shrink PCT] [--max-list-entries N]\n' +
        '  Verifies the signature, validates every entry, reports skipped entries and DN spellings,\n' +
        "  and with --state-dir (or the config file's state-dir) compares with the stored list (guard).\n" +
        '  --accept records this list so the daemon lets it through the guard on its next load (SIGHUP).\n' +
        '  Settings are read like serve\'s (flag > env > --config file > default, same limits).\n' +
        `  Exit 0: usable; 1: unusable; ${CHECK_EXIT_GUARD_REFUSES}: usable, but the guard would refuse it against the stored list.\n`,
    );
    return v['help'] === true ? 0 : 2;
  }
  const file = parsed.positionals[0] as string;
  let settings;
  try {
    const configFile = typeof v['config'] === 'string' ? v['config'] : process.env['MSSANTE_POLICYD_CONFIG'] ?? null;
    settings = resolveSettings(CHECK_SETTINGS, flagValuesOf(CHECK_SETTINGS, v), process.env, configFile);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`check: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const signers = settings.get<string[]>('signer');
  const allowUnsigned = settings.get<boolean>('allow-unsigned');
  if (signers.length === 0 && !allowUnsigned) {
    process.stderr.write('check: give --signer PEM (trusted list signer or CA), or --allow-unsigned to check the content only\n');
    return 2;
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    process.stderr.write(`check: cannot read ${file}: ${(error as Error).message}\n`);
    return 1;
  }
  let trust = null;
  try {
    trust = signers.length > 0 ? loadSignerTrust(signers) : null;
  } catch (error) {
    process.stderr.write(`check: ${(error as Error).message}\n`);
    return 2;
  }
  const maxEntries = settings.get<number>('max-list-entries');
  const result: PrepareResult = prepareList(bytes, { trust, allowUnsigned, maxEntries });
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
    accepted: false,
  };
  if (result.ok) {
    const list = result.list;
    const index = new WhitelistIndex({ generatedAt: list.generatedAt }, list.entries, list.rejected);
    report.signature = list.signature.verified ? { verified: true, signer: list.signature.signer } : { verified: false, why: list.signature.why };
    report.generatedAt = list.generatedAt;
    report.entries = { total: list.rawEntryCount, accepted: list.entries.length, skipped: list.rejected.length };
    report.domains = index.domainCount;
    report.certificates = index.certificateCount;
    report.skipped = list.rejected.map((r) => ({ ...r }));
    const spellings = new Map<string, Set<string>>();
    for (const e of list.entries) {
      const set = spellings.get(e.dnKey) ?? new Set<string>();
      set.add(e.dnRaw);
      spellings.set(e.dnKey, set);
    }
    for (const e of list.entries) {
      const set = spellings.get(e.dnKey);
      if (set !== undefined && set.size > 1) {
        report.dnSpellingVariants.push({ normalised: e.dnDisplay, spellings: [...set] });
        spellings.delete(e.dnKey);
      }
    }
    // The default ./var is not assumed to be the daemon's: compare only with a state dir named.
    const stateDir = settings.origin('state-dir') === 'default' ? undefined : settings.get<string>('state-dir');
    const maxShrink = settings.get<number>('max-shrink');
    let current = null;
    let against = 'no list in force (give --state-dir to compare with the daemon\'s)';
    if (stateDir !== undefined) {
      const stored = readStoredList(stateDir);
      // The stored list passed every check when it was put in force; read for its content only, so
      // that it is named (and compared) even when it was signed by another signer than this list.
      const storedPrepared = stored === null ? null : prepareList(stored.bytes, { trust: null, allowUnsigned: true, maxEntries });
      if (storedPrepared !== null && storedPrepared.ok) {
        current = { index: new WhitelistIndex({ generatedAt: storedPrepared.list.generatedAt }, storedPrepared.list.entries, []), sha256: storedPrepared.list.sha256 };
        against = `${stateDir} (generated ${current.index.generatedAt})`;
      } else {
        against = `${stateDir} (no stored list)`;
      }
    }
    report.guard = { against, ...guardList(current, list, maxShrink, stateDir === undefined ? new Set() : readAcceptedHashes(stateDir), Date.now()) };
    if (v['accept'] === true) {
      if (stateDir === undefined) {
        process.stderr.write("check: --accept needs --state-dir (the daemon's state directory)\n");
        return 2;
      }
      await addAcceptedHash(stateDir, list.sha256);
      report.accepted = true;
    }
  }
  if (v['json'] === true) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(formatCheckReport(report));
  if (!report.usable) return 1;
  // `check && systemctl reload` must not go ahead when the daemon would refuse this very list.
  return report.guard?.verdict === 'refuse' && !report.accepted ? CHECK_EXIT_GUARD_REFUSES : 0;
}

function formatCheckReport(r: CheckReport): string {
  const lines: string[] = [`file: ${r.file}`, `sha256: ${r.sha256}`];
  if (!r.usable) {
    lines.push(`UNUSABLE: ${r.failure?.reason} — ${r.failure?.detail}`);
    return `${lines.join('\n')}\n`;
  }
  if (r.signature?.verified) {
    const s = r.signature.signer as { subject: string; issuer: string; validFrom: string; validTo: string; trustedBy: string };
    lines.push(`signature: VALID (signer ${s.subject.replace(/\n/g, ', ')}; issuer ${s.issuer.replace(/\n/g, ', ')}; valid ${s.validFrom} → ${s.validTo}; trusted as ${s.trustedBy})`);
  } else {
    lines.push(`signature: NOT CHECKED (${r.signature?.why})`);
  }
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
  if (r.guard !== null) lines.push(`guard against ${r.guard.against}: ${r.guard.verdict}${r.guard.detail ? ` — ${r.guard.detail}` : ''}`);
  if (r.accepted) lines.push('accepted: the daemon will let this list through the guard on its next load (send SIGHUP)');
  if (r.guard?.verdict === 'refuse' && !r.accepted) {
    lines.push(`USABLE, BUT THE GUARD WOULD REFUSE IT (exit ${CHECK_EXIT_GUARD_REFUSES}): the daemon keeps the stored list; after review, --accept`);
    return `${lines.join('\n')}\n`;
  }
  lines.push('USABLE');
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------- query

async function queryCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { policy: { type: 'string' }, ...settingParseOptions(['policy-listen']), config: { type: 'string' }, timeout: { type: 'string' }, help: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (error) {
    process.stderr.write(`query: ${(error as Error).message}\n`);
    return 2;
  }
  if (parsed.values.help === true || parsed.positionals.length === 0) {
    process.stdout.write(
      'mssante-policyd query [--config FILE] [--policy ADDR] [--timeout SECONDS] name=value...\n' +
        '  Sends one Postfix policy request (request=smtpd_access_policy and protocol_state=RCPT are added\n' +
        '  unless given) and prints the action. ADDR: host:port or unix:/path; default the daemon\'s\n' +
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
    const configFile = typeof values['config'] === 'string' ? values['config'] : process.env['MSSANTE_POLICYD_CONFIG'] ?? null;
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
      socket.on('close', () => reject(new Error('connection closed without an answer (malformed request, or the daemon refused it)')));
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

