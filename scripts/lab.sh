#!/usr/bin/env bash
# mssante-policyd lab kit: everything needed to watch the daemon decide inside a real Postfix, in
# minutes, with no IGC-Sante certificate and no ANS list.
#
#   scripts/lab.sh DIR [--port 10025] [--http-listen 127.0.0.1:9465]
#                      [--cn NAME [--from ADDRESS] [--list FILE --list-signer PEM]]
#   (installed package: /usr/share/mssante-policyd/lab.sh DIR)
#
# --cn NAME also issues named.pem/named.key, a client certificate whose CN is NAME (e.g. a server
# name of the real ANS list), from the lab CA that the lab's Postfix trusts: Postfix hands the daemon
# only the CN, so with the real list in force the lab behaves as that operator's server would. The
# kit then prints the daemon command for that list (--list/--list-signer, else placeholders) and the
# swaks command for it (--from: a sender of a domain the list binds to NAME, else a placeholder).
#
# Makes in DIR (which must not exist yet or be empty):
#   ca.pem                  a test CA standing in for IGC-Sante (NOT IGC-Sante)
#   mx.pem, mx.key          the test MX's server certificate
#   listed.pem/.key         client certificate of an operator that the list names
#   unlisted.pem/.key       client certificate of an operator the list does not name (same CA)
#   signer.pem/.key         the list signer (an end-entity certificate of the test CA)
#   whitelist.xml           a list in the ANS format, signed by xmlsec1 with the ANS profile
#   postfix/main.cf, master.cf   a dedicated Postfix instance (deploy/postfix/test-instance/ and
#                           main.cf.policy), smtpd chrooted, policy service unix:private/mssante-policyd
# and prints the commands to start Postfix and the daemon, and the swaks commands with the answers
# to expect. Needs openssl and xmlsec1; running the instance needs root, postfix and swaks.
set -euo pipefail

usage() {
  echo "usage: $0 DIR [--port PORT] [--http-listen ADDR] [--cn NAME [--from ADDRESS] [--list FILE --list-signer PEM]]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
DIR=$1; shift
PORT=10025
HTTP=127.0.0.1:9465
CN="" FROM="" LIST="" LIST_SIGNER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=${2:?}; shift 2 ;;
    --http-listen) HTTP=${2:?}; shift 2 ;;
    --cn) CN=${2:?}; shift 2 ;;
    --from) FROM=${2:?}; shift 2 ;;
    --list) LIST=${2:?}; shift 2 ;;
    --list-signer) LIST_SIGNER=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[[ "$PORT" =~ ^[0-9]+$ ]] || usage
# A server name, as the list's CNs are: it goes into an openssl subject and into printed commands.
if [ -n "$CN" ] && ! [[ "$CN" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ ]]; then
  echo "lab: --cn takes a server name (letters, digits, dots, hyphens), got: $CN" >&2; exit 2
fi
if [ -z "$CN" ] && [ -n "$FROM$LIST$LIST_SIGNER" ]; then echo "lab: --from, --list and --list-signer go with --cn" >&2; exit 2; fi
if [ -n "$FROM" ] && ! [[ "$FROM" =~ ^[^[:space:]@]+@[A-Za-z0-9.-]+$ ]]; then echo "lab: --from takes an address, got: $FROM" >&2; exit 2; fi
for f in "$LIST" "$LIST_SIGNER"; do
  [ -z "$f" ] || [ -f "$f" ] || { echo "lab: $f: no such file" >&2; exit 1; }
done
[ -n "$LIST" ] && LIST=$(cd "$(dirname "$LIST")" && pwd)/$(basename "$LIST")
[ -n "$LIST_SIGNER" ] && LIST_SIGNER=$(cd "$(dirname "$LIST_SIGNER")" && pwd)/$(basename "$LIST_SIGNER")
for tool in openssl xmlsec1; do
  command -v "$tool" >/dev/null || { echo "lab: $tool is required (apt-get install $tool)" >&2; exit 1; }
done

HERE=$(cd "$(dirname "$0")" && pwd)
# The Postfix files: the repository's deploy/postfix, or the package's copy.
DEPLOY=${MSSANTE_DEPLOY_DIR:-}
for d in "$HERE/../deploy/postfix" /usr/share/doc/mssante-policyd/deploy/postfix; do
  [ -z "$DEPLOY" ] && [ -f "$d/test-instance/main.cf" ] && DEPLOY=$(cd "$d" && pwd)
done
[ -n "$DEPLOY" ] || { echo "lab: deploy/postfix/test-instance not found" >&2; exit 1; }
# How to run the daemon: MSSANTE_POLICYD_CMD, else the installed command, else the repository's build.
CMD=${MSSANTE_POLICYD_CMD:-}
if [ -z "$CMD" ]; then
  if command -v mssante-policyd >/dev/null; then CMD=mssante-policyd
  elif [ -f "$HERE/../dist/cli.js" ]; then CMD="node $(cd "$HERE/.." && pwd)/dist/cli.js"
  else CMD="mssante-policyd"; fi
fi

if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then echo "lab: $DIR is not empty" >&2; exit 1; fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
case "$DIR" in *[[:space:]]*) echo "lab: no spaces in DIR, please (Postfix and the printed commands)" >&2; exit 1 ;; esac
cd "$DIR"
# Postfix's unprivileged processes and virtual(8) (as nobody) traverse it.
chmod 0755 "$DIR"

ext() { printf '[ext]\n%s\n' "$1" >"$DIR/.ext"; }
leaf() { # name subject extensions
  openssl genrsa -out "$1.key" 2048 2>/dev/null
  openssl req -new -key "$1.key" -subj "$2" -utf8 -out "$1.csr" 2>/dev/null
  ext "$3"$'\n''authorityKeyIdentifier=keyid'
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -sha256 \
    -extfile "$DIR/.ext" -extensions ext -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}
TLS='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth'

echo "== certificates (test CA, NOT IGC-Sante)" >&2
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -days 365 -sha256 -utf8 \
  -subj "/C=FR/O=MSSANTE-POLICYD LAB/CN=AC LAB MSSANTE-POLICYD (NOT IGC-SANTE)" \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' -out ca.pem 2>/dev/null
leaf mx "/C=FR/ST=Paris (75)/O=DESTINATAIRE LAB/OU=318310021300000/CN=mx.destinataire.lab.mssante.test" \
  "$TLS"$'\n''subjectAltName=DNS:mx.destinataire.lab.mssante.test'
leaf listed "/C=FR/ST=Paris (75)/O=OPERATEUR INSCRIT/OU=318310021300001/CN=mx.op-inscrit.lab.mssante.test" "$TLS"
leaf unlisted "/C=FR/ST=Paris (75)/O=OPERATEUR NON INSCRIT/OU=318310021300002/CN=mx.op-non-inscrit.lab.mssante.test" "$TLS"
if [ -n "$CN" ]; then
  # Same CN as the real operator's, issued by the lab CA: Postfix verifies it against ca.pem.
  leaf named "/C=FR/O=MSSANTE-POLICYD LAB (NOT IGC-SANTE)/CN=$CN" "$TLS"
fi
leaf signer "/C=FR/O=MSSANTE-POLICYD LAB/OU=318310021300003/CN=signer.lab.mssante.test" \
  $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=emailProtection'
rm -f .ext ca.srl
chmod 0644 ./*.pem
chmod 0600 ./*.key

echo "== whitelist.xml signed by signer.pem (xmlsec1, the ANS profile)" >&2
LISTED_DN=$(openssl x509 -in listed.pem -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
entry() { # domain dn
  cat <<EOF
        <Domaine>
            <Nom>$1</Nom>
            <Description>Lab: $1</Description>
            <DNCertificatOperateur>$2</DNCertificatOperateur>
            <ResponsableContact>01 02 03 04 05, responsable@$1</ResponsableContact>
            <SupportContact>01 02 03 04 06, support@$1</SupportContact>
            <DateMAJ>$NOW</DateMAJ>
        </Domaine>
EOF
}
DS=http://www.w3.org/2000/09/xmldsig#
C14N=http://www.w3.org/2001/10/xml-exc-c14n#
{
  printf '<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">\n'
  printf '    <DateDeGeneration>%s</DateDeGeneration>\n    <ListeDomaines>\n' "$NOW"
  entry op-inscrit.lab.mssante.test "$LISTED_DN"
  entry destinataire.lab.mssante.test "$LISTED_DN"
  printf '    </ListeDomaines>\n'
  printf '<Signature xmlns="%s"><SignedInfo><CanonicalizationMethod Algorithm="%s"/>' "$DS" "$C14N"
  printf '<SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><Reference URI=""><Transforms>'
  printf '<Transform Algorithm="%senveloped-signature"/><Transform Algorithm="%s"/></Transforms>' "$DS" "$C14N"
  printf '<DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/></Reference></SignedInfo>'
  printf '<SignatureValue/><KeyInfo><X509Data><X509Certificate/></X509Data></KeyInfo></Signature></ListeBlancheMSSante>'
} >unsigned.xml
xmlsec1 --sign --privkey-pem signer.key,signer.pem --output whitelist.xml unsigned.xml 2>/dev/null
rm -f unsigned.xml

echo "== Postfix instance in $DIR/postfix" >&2
# data_directory is left to Postfix, which creates it owned by postfix.
mkdir -p postfix/spool mail
chown 65534:65534 mail 2>/dev/null || true
site() { sed -e "s|^$1 = .*|$1 = $2|"; }
{
  site queue_directory "$DIR/postfix/spool" <"$DEPLOY/test-instance/main.cf" |
    site data_directory "$DIR/postfix/data" |
    site maillog_file "$DIR/postfix/maillog" |
    site maillog_file_prefixes "$DIR" |
    site virtual_mailbox_base "$DIR/mail"
  echo
  echo "# ---- deploy/postfix/main.cf.policy ----"
  site smtpd_tls_CAfile "$DIR/ca.pem" <"$DEPLOY/main.cf.policy" |
    site smtpd_tls_cert_file "$DIR/mx.pem" |
    site smtpd_tls_key_file "$DIR/mx.key" |
    site mssante_policy_service "unix:private/mssante-policyd"
} >postfix/main.cf
sed -e "s|^10025 |$(printf '%-13s' "$PORT") |" "$DEPLOY/test-instance/master.cf" >postfix/master.cf

SOCKET="$DIR/postfix/spool/private/mssante-policyd"
TO=dr.test@destinataire.lab.mssante.test
SWAKS="swaks --server 127.0.0.1 --port $PORT --to $TO --ehlo client.lab.test --tls"
cat <<EOF
mssante-policyd lab in $DIR

1. Start the test Postfix instance (as root; it listens on 127.0.0.1:$PORT only):
   postfix -c $DIR/postfix start

2. Start the daemon on the policy socket inside smtpd's chroot (group postfix may connect):
   $CMD serve --whitelist $DIR/whitelist.xml --signer $DIR/signer.pem --state-dir $DIR/state --policy-listen unix:$SOCKET --socket-group postfix --http-listen $HTTP

3. Send mail as the sending operators would, and compare with the answers to expect:
   # a. listed operator, its own domain: accepted, delivered into $DIR/mail/destinataire/dr.test/new/
   # expect: 250
   $SWAKS --tls-cert $DIR/listed.pem --tls-key $DIR/listed.key --from alice@op-inscrit.lab.mssante.test
   # b. an operator certificate of the same CA that the list does not name: refused at RCPT TO
   # expect: 550 5.7.1 Certificat du serveur emetteur absent de la liste blanche MSSante / sending server certificate not in the MSSante whitelist
   $SWAKS --tls-cert $DIR/unlisted.pem --tls-key $DIR/unlisted.key --from bob@op-non-inscrit.lab.mssante.test
   # c. listed operator, a sender domain the list does not hold: refused at RCPT TO
   # expect: 550 5.7.1 Domaine expediteur absent de la liste blanche MSSante / sender domain not in the MSSante whitelist
   $SWAKS --tls-cert $DIR/listed.pem --tls-key $DIR/listed.key --from carol@autre.lab.mssante.test
   # d. no client certificate at all: refused at RCPT TO
   # expect: 550 5.7.1 Certificat client verifie absent / no verified client certificate
   $SWAKS --from dave@op-inscrit.lab.mssante.test

   Ask the daemon directly:  $CMD query --policy unix:$SOCKET encryption_protocol=TLSv1.3 ccert_subject=mx.op-inscrit.lab.mssante.test sender=x@op-inscrit.lab.mssante.test
   Postfix's log: $DIR/postfix/maillog

4. Stop: postfix -c $DIR/postfix stop, and Ctrl-C the daemon. Then rm -rf $DIR.
EOF
if [ -n "$CN" ]; then
  cat <<EOF

5. A server of the real list: $DIR/named.pem (CN=$CN, issued by the lab CA, NOT IGC-Sante).
   Stop the daemon of step 2 and start it on the real list instead (same socket; --max-list-age 0
   lets an old copy of the list in; its signature is still checked):
   $CMD serve --whitelist ${LIST:-REAL-LIST.xml} --signer ${LIST_SIGNER:-REAL-LIST-SIGNER.pem} --max-list-age 0 --state-dir $DIR/state-real --policy-listen unix:$SOCKET --socket-group postfix --http-listen $HTTP
   # e. $CN sending from a domain the list binds to it: accepted and delivered
   # expect with the real list: 250
   $SWAKS --tls-cert $DIR/named.pem --tls-key $DIR/named.key --from ${FROM:-someone@A-DOMAIN-OF-$CN}
EOF
fi
