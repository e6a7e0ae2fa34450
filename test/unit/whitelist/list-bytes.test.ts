/**
 * The byte scans answer what the regular expressions on the decoded string answered before (the
 * worker no longer decodes the document into one string): compared on generated texts made of the
 * tokens that matter, ASCII and not.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { declaresDoctype, isSigned, numericCharacterReference } from '../../../src/whitelist/list-bytes.js';
import { DSIG } from '../../../src/whitelist/signature.js';

/** The string tests as they were (signature.ts, xml.ts before the byte scans). */
const oldDoctype = (xml: string): boolean => /<!DOCTYPE/i.test(xml);
const oldIsSigned = (xml: string): boolean => xml.includes(DSIG) && /<(?:[A-Za-z_][\w.-]*:)?Signature[\s/>]/.test(xml);
function oldReference(text: string): boolean {
  for (let i = text.indexOf('&#'); i !== -1; i = text.indexOf('&#', i + 2)) {
    if (/^&#(?:13|x[dD]);/.exec(text.slice(i, i + 8)) === null) return true;
  }
  return false;
}

const TOKENS = [
  '<',
  '>',
  '/',
  '!',
  ':',
  ' ',
  '\t',
  '\n',
  '\r',
  '\v',
  '\f',
  '-',
  '.',
  '_',
  '0',
  '9',
  'a',
  'Z',
  'é',
  '€',
  '𝔸',
  'ı',
  'DOCTYPE',
  'doctype',
  'DocType',
  'DOCTYP',
  '<!',
  '<!--',
  'Signature',
  'ds',
  'ds:',
  '1ds:',
  '_x:',
  'a.b-c:',
  DSIG,
  '&#',
  '13;',
  '13',
  'x0D;',
  'xd;',
  'xD;',
  'x0d',
  '97;',
  '&#13;',
  '&#xd;',
  '&#x0D;',
  '&#1',
  '&amp;',
];
const text = fc.array(fc.constantFrom(...TOKENS), { maxLength: 40 }).map((parts) => parts.join(''));
const bytes = (s: string): Buffer => Buffer.from(s, 'utf8');

describe('list byte scans', () => {
  it('declaresDoctype answers /<!DOCTYPE/i', () => {
    fc.assert(
      fc.property(text, (s) => declaresDoctype(bytes(s)) === oldDoctype(s)),
      { numRuns: 20_000 },
    );
    assert.equal(declaresDoctype(bytes('<?xml version="1.0"?>\n<!doctype x>')), true);
    assert.equal(declaresDoctype(bytes('<!-- <!DOCTYPE --><a/>')), true, 'anywhere, even in a comment');
    assert.equal(declaresDoctype(bytes('<!DOCTYP')), false);
    assert.equal(declaresDoctype(bytes('<!DOCTYPE'.replace('D', 'Ď'))), false);
  });

  it('isSigned answers the start-tag test it replaced', () => {
    fc.assert(
      fc.property(text, (s) => isSigned(bytes(s)) === oldIsSigned(s)),
      { numRuns: 20_000 },
    );
    assert.equal(isSigned(bytes(`<ds:Signature xmlns:ds="${DSIG}">`)), true);
    assert.equal(isSigned(bytes(`<Signature xmlns="${DSIG}"/>`)), true);
    assert.equal(isSigned(bytes(`<1ds:Signature xmlns:ds="${DSIG}">`)), false, 'a prefix starts with a letter or _');
    assert.equal(isSigned(bytes('<Signature>')), false, 'no XMLDSig namespace anywhere');
  });

  it('isSigned differs only after a non-ASCII space, which no well-formed tag holds', () => {
    const nbsp = `<Signature\u00a0xmlns="${DSIG}"/>`;
    assert.equal(oldIsSigned(nbsp), true);
    assert.equal(isSigned(bytes(nbsp)), false);
  });

  it('numericCharacterReference refuses what the string scan refused, and only &#13; / &#xD; pass', () => {
    fc.assert(
      fc.property(text, (s) => (numericCharacterReference(bytes(s)) !== null) === oldReference(s)),
      { numRuns: 20_000 },
    );
    assert.equal(numericCharacterReference(bytes('a&#13;b&#xd;c&#xD;')), null);
    assert.match(numericCharacterReference(bytes('<Nom>&#101;vil.fr</Nom>')) ?? '', /character reference "&#101;vil\."/);
    assert.match(numericCharacterReference(bytes('&#x0D;')) ?? '', /only &#13;/);
  });

  it('reads a view of the bytes it is given, wherever they sit in their buffer', () => {
    const backing = Buffer.from(`xxxx<!DOCTYPE a><ds:Signature xmlns:ds="${DSIG}"/>&#97;yyyy`);
    const inner = new Uint8Array(backing.buffer, backing.byteOffset + 4, backing.length - 8);
    assert.equal(declaresDoctype(inner), true);
    assert.equal(isSigned(inner), true);
    assert.notEqual(numericCharacterReference(inner), null);
    assert.equal(declaresDoctype(inner.subarray(1)), false);
  });
});
