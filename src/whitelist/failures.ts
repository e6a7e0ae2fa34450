/**
 * Every reason a list load can fail, in one registry: the ids (log field `reason`, metric label of
 * `whitelist_load_failures_total`, `/v1/whitelist` lastFailureReason), the stage that produces each,
 * whether another try soon may succeed, and the one-line summary the README table repeats.
 * The per-module failure types and the retry policy derive from here; a test checks the docs.
 */

/** Where in the life cycle (README "The list life cycle") the failure arises. */
export type LoadStage = 'source' | 'document' | 'signature' | 'entries' | 'guard' | 'state' | 'worker';

export interface LoadFailureInfo {
  readonly stage: LoadStage;
  /** Another try in seconds may succeed (network, worker): retried with backoff instead of waiting `--refresh`. */
  readonly transient: boolean;
  readonly summary: string;
}

export const LOAD_FAILURE_INFO = {
  source_unreachable: {
    stage: 'source',
    transient: true,
    summary: 'no connection to the source, or it closed before the body was complete',
  },
  source_timeout: {
    stage: 'source',
    transient: true,
    summary: 'the fetch took longer than --fetch-timeout, or the server went silent',
  },
  source_http_status: {
    stage: 'source',
    transient: true,
    summary: 'an HTTP answer other than 200/304: error status, bad or too many redirects, malformed response',
  },
  source_too_large: {
    stage: 'source',
    transient: false,
    summary: 'the list (declared, read or gunzipped) exceeds --max-list-bytes',
  },
  source_tls: {
    stage: 'source',
    transient: true,
    summary: 'TLS failed: the server certificate does not chain to --ca-file, or the bundle cannot be read',
  },
  source_io: {
    stage: 'source',
    transient: true,
    summary: 'the file cannot be read (missing, not a regular file), or the body cannot be decoded',
  },
  source_empty: { stage: 'source', transient: true, summary: 'the source answered with an empty file or body' },
  xml_malformed: { stage: 'document', transient: false, summary: 'the list is not well-formed XML' },
  doctype_forbidden: {
    stage: 'document',
    transient: false,
    summary: 'the list declares a DOCTYPE (entity expansion is never allowed)',
  },
  xml_not_a_whitelist: {
    stage: 'document',
    transient: false,
    summary: 'well-formed XML, but not a ListeBlancheMSSante with one ListeDomaines',
  },
  encoding_invalid: { stage: 'document', transient: false, summary: 'the bytes are not valid UTF-8' },
  generation_date_invalid: {
    stage: 'document',
    transient: false,
    summary: 'DateDeGeneration is missing, repeated or not YYYY-MM-DDTHH:MM:SSZ',
  },
  signature_missing: { stage: 'signature', transient: false, summary: 'the list holds no XMLDSig Signature' },
  signature_profile: {
    stage: 'signature',
    transient: false,
    summary: 'the signature is not the ANS profile (algorithms, transforms, reference, placement, KeyInfo)',
  },
  signature_digest_mismatch: {
    stage: 'signature',
    transient: false,
    summary: 'the signed content was modified: its digest differs from DigestValue',
  },
  signature_invalid: {
    stage: 'signature',
    transient: false,
    summary: 'SignatureValue does not verify with the signer certificate in KeyInfo',
  },
  signer_untrusted: {
    stage: 'signature',
    transient: false,
    summary: 'the signer is neither a pinned certificate nor issued by a trusted CA meeting the identity constraint',
  },
  signer_constraint: {
    stage: 'signature',
    transient: false,
    summary: 'the signer is issued by a trusted CA but fails the identity constraint',
  },
  signer_key_usage: {
    stage: 'signature',
    transient: false,
    summary: 'the signer certificate may not sign (key usage / extended key usage)',
  },
  signer_not_valid_at_generation: {
    stage: 'signature',
    transient: false,
    summary: "the signer certificate was not valid at the list's DateDeGeneration",
  },
  list_unsigned: {
    stage: 'signature',
    transient: false,
    summary: 'no trusted signer is configured and --allow-unsigned is not set',
  },
  list_empty: { stage: 'entries', transient: false, summary: 'no valid entry in the list' },
  list_too_many_entries: { stage: 'entries', transient: false, summary: 'more entries than --max-list-entries' },
  list_from_future: { stage: 'guard', transient: false, summary: "the list is dated more than 24 h ahead of this host's clock" },
  list_older: {
    stage: 'guard',
    transient: false,
    summary: 'the list is older than the one in force (rollback), unless accepted with check --accept',
  },
  list_shrink: {
    stage: 'guard',
    transient: false,
    summary: 'the list would drop more than --max-shrink % of the domains, unless accepted with check --accept',
  },
  list_rebind: {
    stage: 'guard',
    transient: false,
    summary:
      'the list would move more than --max-rebind % of the domains onto other certificates, unless accepted with check --accept',
  },
  list_too_old: { stage: 'guard', transient: false, summary: 'no stored list and the list is older than --max-list-age' },
  worker_failed: {
    stage: 'worker',
    transient: true,
    summary: 'the verification worker crashed, hit its heap limit or --prepare-timeout, or the daemon is stopping',
  },
  state_unreadable: { stage: 'state', transient: true, summary: 'the stored copy in --state-dir cannot be read' },
  state_unverified: {
    stage: 'state',
    transient: false,
    summary:
      'the stored copy in --state-dir fails the checks a fresh list passes (signature under the current trust settings, profile, entries, dated > 24 h ahead): not put in force, the source is fetched as if the state dir were empty',
  },
  state_write_failed: {
    stage: 'state',
    transient: false,
    summary: 'the accepted list cannot be written to --state-dir (it is put in force all the same)',
  },
} as const satisfies Readonly<Record<string, LoadFailureInfo>>;

export type LoadFailure = keyof typeof LOAD_FAILURE_INFO;

/** The ids a stage can produce: each module's failure type is one of these. */
export type LoadFailureAt<S extends LoadStage> = {
  [K in LoadFailure]: (typeof LOAD_FAILURE_INFO)[K]['stage'] extends S ? K : never;
}[LoadFailure];

/** Every id at run time (registry order): their counters start at 0, so the first failure shows as an increase. */
export const LOAD_FAILURES: readonly LoadFailure[] = Object.freeze(Object.keys(LOAD_FAILURE_INFO) as LoadFailure[]);

/** Failures that another try may not meet. */
export const TRANSIENT_FAILURES: ReadonlySet<LoadFailure> = new Set(
  LOAD_FAILURES.filter((id) => LOAD_FAILURE_INFO[id].transient),
);

/**
 * Refusals of one source's copy rather than of the list the ANS publishes: stale (older than the list in
 * force, older than --max-list-age), damaged or unverifiable (document and signature stages, except
 * list_unsigned, which is this host's settings). With several --whitelist sources the next is tried at
 * once. Not list_shrink / list_rebind (a validly signed list's content: a human decides, check
 * --accept), nor list_from_future (this host's clock), entries or worker failures.
 */
export const TRY_NEXT_SOURCE: ReadonlySet<LoadFailure> = new Set(
  LOAD_FAILURES.filter(
    (id) =>
      ((LOAD_FAILURE_INFO[id].stage === 'document' || LOAD_FAILURE_INFO[id].stage === 'signature') && id !== 'list_unsigned') ||
      id === 'list_older' ||
      id === 'list_too_old',
  ),
);
