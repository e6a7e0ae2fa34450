/**
 * Bytes of a list → a usable list or a failure with a reason id. Pure and synchronous: the daemon
 * runs it in a worker thread, `check` runs it in place. The data indexed is the data that was signed:
 * the signature covers the whole document (Reference URI="") and the entries are read from the one
 * libxml2 tree whose canonical form was digested.
 */
import { createHash } from 'node:crypto';
import type { LoadFailureAt } from './failures.js';
import { isValidGenerationDate } from './generation-date.js';
import { isSigned, type KeyInfoSigner, type SignerInfo, type SignerTrust } from './signature.js';
import { validateEntries, type RejectedEntry, type ValidEntry } from './validate.js';
import { numericCharacterReference, parseListDocument, readListEntries, type RawList } from './xml.js';
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

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

export function prepareList(bytes: Uint8Array, options: PrepareOptions): PrepareResult {
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const fail = (reason: ListFailure, detail: string): PrepareResult => ({ ok: false, reason, detail, sha256 });
  let xml: string;
  try {
    xml = utf8.decode(bytes);
  } catch {
    return fail('encoding_invalid', 'the list is not valid UTF-8');
  }

  const parsed = parseListDocument(xml, bytes);
  const document = parsed.ok ? parsed.document : null;
  try {
    let signature: PreparedList['signature'];
    const signed = isSigned(xml);
    if (options.trust !== null && (signed || !options.allowUnsigned)) {
      if (!parsed.ok) return fail(parsed.reason, parsed.detail);
      const verdict = verifyDocumentSignature(parsed.document, xml, options.trust);
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
      const reference = numericCharacterReference(xml);
      if (reference !== null) return fail('xml_malformed', reference);
    }
    const read = readListEntries(parsed.document);
    if (!read.ok) return fail(read.reason, read.detail);
    return usableList(read.list, signature, sha256, bytes.byteLength, options, fail);
  } finally {
    document?.dispose();
  }
}

function usableList(
  list: RawList,
  signature: PreparedList['signature'],
  sha256: string,
  byteLength: number,
  options: PrepareOptions,
  fail: (reason: ListFailure, detail: string) => PrepareResult,
): PrepareResult {
  const { generatedAt, entries: raws } = list;
  if (!isValidGenerationDate(generatedAt)) {
    return fail(
      'generation_date_invalid',
      `DateDeGeneration is not YYYY-MM-DDTHH:MM:SSZ (${JSON.stringify(generatedAt.slice(0, 40))})`,
    );
  }
  if (raws.length > options.maxEntries) {
    return fail('list_too_many_entries', `${raws.length} entries exceed the limit of ${options.maxEntries} (--max-list-entries)`);
  }
  const { entries, rejected } = validateEntries(raws);
  if (entries.length === 0) {
    return fail('list_empty', `no valid entry among ${raws.length}`);
  }
  return {
    ok: true,
    list: { sha256, bytes: byteLength, generatedAt, signature, rawEntryCount: raws.length, entries, rejected },
  };
}
