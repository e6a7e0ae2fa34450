/**
 * Bytes of a list → a usable list or a failure with a reason id. Pure and synchronous: the daemon
 * runs it in a worker thread, `check` runs it in place. The data indexed is the data that was signed:
 * the signature covers the whole document (Reference URI="") and the entries are read from the one
 * libxml2 tree whose canonical form was digested.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import type { XmlDocument } from 'libxml2-wasm';
import type { LoadFailureAt } from './failures.js';
import { isValidGenerationDate } from './generation-date.js';
import { isSigned, numericCharacterReference } from './list-bytes.js';
import type { KeyInfoSigner, SignerInfo, SignerTrust } from './signature.js';
import { validateEntry, type RejectedEntry, type ValidEntry } from './validate.js';
import { forEachListEntry, parseListDocument } from './xml.js';
import { verifyDocumentSignature } from './xmldsig.js';

export type ListFailure = LoadFailureAt<'document' | 'signature' | 'entries'>;

export interface PrepareOptions {
  /** null: no signer configured (only with allowUnsigned). */
  readonly trust: SignerTrust | null;
  readonly allowUnsigned: boolean;
  readonly maxEntries: number;
}

export interface PreparedList {
  readonly sha256: string;
  readonly bytes: number;
  readonly generatedAt: string;
  readonly signature:
    { readonly verified: true; readonly signer: SignerInfo } | { readonly verified: false; readonly why: string };
  readonly rawEntryCount: number;
  readonly entries: ValidEntry[];
  readonly rejected: RejectedEntry[];
}

export type PrepareResult =
  | { readonly ok: true; readonly list: PreparedList }
  | {
      readonly ok: false;
      readonly reason: ListFailure;
      readonly detail: string;
      readonly sha256: string;
      readonly keyInfo?: KeyInfoSigner;
    };

export function prepareList(bytes: Uint8Array, options: PrepareOptions): PrepareResult {
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const fail = (reason: ListFailure, detail: string): PrepareResult => ({ ok: false, reason, detail, sha256 });
  // Checked on the bytes: the document is never decoded into one JavaScript string (list-bytes.ts).
  if (!isUtf8(bytes)) return fail('encoding_invalid', 'the list is not valid UTF-8');

  const parsed = parseListDocument(bytes);
  const document = parsed.ok ? parsed.document : null;
  try {
    let signature: PreparedList['signature'];
    const signed = isSigned(bytes);
    if (options.trust !== null && (signed || !options.allowUnsigned)) {
      if (!parsed.ok) return fail(parsed.reason, parsed.detail);
      const verdict = verifyDocumentSignature(parsed.document, bytes, options.trust);
      if (!verdict.ok)
        return verdict.keyInfo === undefined
          ? fail(verdict.reason, verdict.detail)
          : ({ ...fail(verdict.reason, verdict.detail), keyInfo: verdict.keyInfo } as PrepareResult);
      signature = { verified: true, signer: verdict.signer };
    } else if (options.allowUnsigned) {
      signature = {
        verified: false,
        why: signed ? 'no --signer configured (--allow-unsigned)' : 'list is not signed (--allow-unsigned)',
      };
    } else {
      return fail('list_unsigned', 'no trusted signer configured and unsigned lists are not allowed');
    }
    if (!parsed.ok) return fail(parsed.reason, parsed.detail);
    if (!signature.verified) {
      const reference = numericCharacterReference(bytes);
      if (reference !== null) return fail('xml_malformed', reference);
    }
    return readUsableList(parsed.document, signature, sha256, bytes.byteLength, options, fail);
  } finally {
    document?.dispose();
  }
}

/**
 * Reads and validates the entries in one pass: each raw entry is dropped once judged, and past
 * --max-list-entries none is kept (the list is refused; reading goes on only for the checks that
 * come first). The failures keep their order: reading, generation date, entry count, no valid entry.
 */
function readUsableList(
  document: XmlDocument,
  signature: PreparedList['signature'],
  sha256: string,
  byteLength: number,
  options: PrepareOptions,
  fail: (reason: ListFailure, detail: string) => PrepareResult,
): PrepareResult {
  const entries: ValidEntry[] = [];
  const rejected: RejectedEntry[] = [];
  const read = forEachListEntry(document, (raw) => {
    if (raw.index >= options.maxEntries) return;
    const result = validateEntry(raw);
    if (result.ok) entries.push(result.entry);
    else rejected.push(result.rejected);
  });
  if (!read.ok) return fail(read.reason, read.detail);
  const { generatedAt, entryCount } = read;
  if (!isValidGenerationDate(generatedAt)) {
    return fail(
      'generation_date_invalid',
      `DateDeGeneration is not YYYY-MM-DDTHH:MM:SSZ (${JSON.stringify(generatedAt.slice(0, 40))})`,
    );
  }
  if (entryCount > options.maxEntries) {
    return fail('list_too_many_entries', `${entryCount} entries exceed the limit of ${options.maxEntries} (--max-list-entries)`);
  }
  if (entries.length === 0) {
    return fail('list_empty', `no valid entry among ${entryCount}`);
  }
  return {
    ok: true,
    list: { sha256, bytes: byteLength, generatedAt, signature, rawEntryCount: entryCount, entries, rejected },
  };
}
