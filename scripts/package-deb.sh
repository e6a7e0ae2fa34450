#!/usr/bin/env bash
# Builds dist-pkg/mssante-policyd_<version>_all.deb with Debian's own tools (dpkg-deb) and npm only.
#
#   npm run package:deb            (or: bash scripts/package-deb.sh [OUTDIR])
#
# Layout of the package:
#   /usr/lib/mssante-policyd/          built JS (dist/), the demo list (examples/), package.json, the
#                                      lockfile and the production node_modules (npm ci --omit=dev)
#   /usr/bin/mssante-policyd           wrapper running /usr/bin/node on dist/cli.js
#   /lib/systemd/system/               deploy/systemd/mssante-policyd.service and .socket, as tested
#   /etc/mssante-policyd/config.json   conffile: the production settings, to be confirmed by the operator
#   /etc/mssante-policyd/igc-sante/    the public IGC-Sante CA certificates (conffiles, as config.json names them)
#   /usr/share/mssante-policyd/        lab.sh; prometheus/ (alerts.yml + prometheus.yml) and grafana/ (the
#                                      dashboard), uncompressed, to be used in place (promtool, provisioning)
#   /usr/share/doc/mssante-policyd/    README, SECURITY, examples, deploy snippets, Grafana, alerts, copyright
# Environment: SOURCE_DATE_EPOCH (default: the last commit's date) makes the build reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

OUT=${1:-"$REPO/dist-pkg"}
NAME=mssante-policyd
VERSION=$(node -p 'require("./package.json").version')
DESCRIPTION=$(node -p 'require("./package.json").description')
MAINTAINER=${DEB_MAINTAINER:-"mssante-policyd maintainers <maintainers@users.noreply.b-seed-68b2f66b.example>"}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

for tool in dpkg-deb gzip install find; do
  command -v "$tool" >/dev/null || { echo "package-deb: $tool is required (apt-get install dpkg)" >&2; exit 1; }
done

# The public IGC-Sante CAs shipped in the repository (deploy/igc-sante/, with their fingerprints).
CA_DIR=""
for d in "$REPO/deploy/igc-sante"; do
  if compgen -G "$d/*.pem" >/dev/null; then CA_DIR=$d; break; fi
done
[ -n "$CA_DIR" ] || { echo "package-deb: no IGC-Sante CA certificates (deploy/igc-sante/*.pem)" >&2; exit 1; }
# The production settings, as deploy/config/production.json ships them (a test loads that file).
CONFIG="$REPO/deploy/config/production.json"

# A fresh clone has no node_modules, hence no tsc: install the locked build tools first.
if [ ! -x node_modules/.bin/tsc ]; then
  command -v npm >/dev/null || { echo "package-deb: npm is required (Node.js >= 20)" >&2; exit 1; }
  echo "== node_modules missing (a fresh clone?): npm ci, from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
echo "== build (tsc)"
npm run --silent build

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mssante-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
LIB="$ROOT/usr/lib/$NAME"
DOC="$ROOT/usr/share/doc/$NAME"
install -d "$LIB" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/etc/$NAME" "$ROOT/etc/$NAME/igc-sante" "$ROOT/usr/share/$NAME" "$DOC" "$ROOT/DEBIAN"

echo "== runtime files"
cp -r dist examples "$LIB/"
find "$LIB/dist" -name '*.map' -delete
cp package.json package-lock.json "$LIB/"
echo "== production node_modules from the lockfile (npm ci --omit=dev)"
# --ignore-scripts: nothing runs at build time; every runtime dependency is plain JavaScript.
(cd "$LIB" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
# npm's bookkeeping and the packages' own tests, docs and type declarations are not needed to run.
rm -rf "$LIB/node_modules/.bin"
find "$LIB/node_modules" \( -name '*.md' -o -name '*.markdown' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
  -o -name '.npmignore' -o -name '.eslintrc*' -o -name '.editorconfig' -o -name '.travis.yml' -o -name '.taprc' -o -name 'tsconfig.json' \
  -o -name '.gitattributes' -o -name '*.sh' -o -name 'index.html' \) -type f -delete
find "$LIB/node_modules" -depth -type d \( -name test -o -name tests -o -name __tests__ -o -name benchmarks -o -name .github \
  -o -name .husky -o -name integration -o -name docs \) -exec rm -rf {} +

cat >"$ROOT/usr/bin/$NAME" <<'EOF'
#!/bin/sh
# mssante-policyd: the MSSante whitelist policy daemon (see /usr/share/doc/mssante-policyd/README.md.gz).
exec /usr/bin/node /usr/lib/mssante-policyd/dist/cli.js "$@"
EOF

install -d "$ROOT/usr/share/man/man1"
gzip -9n -c deploy/debian/mssante-policyd.1 >"$ROOT/usr/share/man/man1/$NAME.1.gz"
install -m 0644 deploy/systemd/mssante-policyd.service "$ROOT/lib/systemd/system/"
# The socket unit (socket activation) is shipped, not enabled: systemctl enable --now mssante-policyd.socket.
install -m 0644 deploy/systemd/mssante-policyd.socket "$ROOT/lib/systemd/system/"
install -m 0644 "$CONFIG" "$ROOT/etc/$NAME/config.json"
install -m 0644 "$CA_DIR"/*.pem "$ROOT/etc/$NAME/igc-sante/"
install -m 0755 scripts/lab.sh "$ROOT/usr/share/$NAME/lab.sh"
# Used in place, so never compressed: promtool and Prometheus read the rules beside prometheus.yml
# (rule_files: alerts.yml), Grafana provisions every dashboard JSON of a folder.
install -d "$ROOT/usr/share/$NAME/prometheus" "$ROOT/usr/share/$NAME/grafana"
install -m 0644 deploy/prometheus/alerts.yml deploy/prometheus/prometheus.yml "$ROOT/usr/share/$NAME/prometheus/"
install -m 0644 grafana/mssante-policyd.json "$ROOT/usr/share/$NAME/grafana/"

echo "== documentation"
cp README.md SECURITY.md "$DOC/"
cp -r examples grafana "$DOC/"
cp -r deploy "$DOC/deploy"
rm -rf "$DOC/deploy/debian"
cp "$CA_DIR/README.md" "$ROOT/etc/$NAME/igc-sante/README" 2>/dev/null || true
DATE_RFC2822=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
cat >"$WORK/changelog" <<EOF
$NAME ($VERSION) unstable; urgency=medium

  * Upstream release $VERSION, packaged by scripts/package-deb.sh (the
    project's history is its git log).

 -- $MAINTAINER  $DATE_RFC2822
EOF
gzip -9n -c "$WORK/changelog" >"$DOC/changelog.gz"
# Documentation above 4 KiB is compressed (Debian policy 12.3).
# Not the Postfix files: scripts/lab.sh reads them as they are; nor the Prometheus files, which
# point at each other (prometheus.yml: rule_files: alerts.yml).
find "$DOC" -type f -size +4k ! -path '*/deploy/postfix/*' ! -path '*/deploy/prometheus/*' ! -name '*.gz' ! -name copyright ! -name '*.json' ! -name '*.pem' ! -name '*.xml' -exec gzip -9n {} +
{
  cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $NAME
Source: the project's git repository

Files: *
Copyright: 2026 the $NAME authors
License: MIT

Files: etc/$NAME/igc-sante/*
Copyright: Agence du Numerique en Sante (ANS), IGC-Sante
License: public-data
 Public CA certificates of IGC-Sante, as published by the ANS
 (http://igc-sante.esante.gouv.fr/AC/). Check their fingerprints against the
 ANS site before production use.
EOF
  # One stanza per bundled runtime module, from its own package.json.
  node - "$LIB/node_modules" <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const root = process.argv[2];
const found = [];
const walk = (dir) => {
  for (const name of fs.readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    const full = path.join(dir, name);
    if (name.startsWith('@')) { walk(full); continue; }
    const pj = path.join(full, 'package.json');
    if (!fs.existsSync(pj)) continue;
    const meta = JSON.parse(fs.readFileSync(pj, 'utf8'));
    const license = typeof meta.license === 'string' ? meta.license : (meta.license && meta.license.type) || 'see-package';
    found.push({ rel: path.relative(root, full), name: meta.name, version: meta.version, license });
    if (fs.existsSync(path.join(full, 'node_modules'))) walk(path.join(full, 'node_modules'));
  }
};
walk(root);
for (const m of found) {
  process.stdout.write(`\nFiles: usr/lib/mssante-policyd/node_modules/${m.rel}/*\nCopyright: the authors of ${m.name} ${m.version} (npm)\nLicense: ${m.license}\n`);
}
EOF
  cat <<'EOF'

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.
 .
 Bundled modules under other licenses (ISC, BSD-2-Clause, BSD-3-Clause,
 Apache-2.0) carry their license text in their own directory under
 /usr/lib/mssante-policyd/node_modules/.
EOF
} >"$DOC/copyright"

echo "== control files"
# deploy/debian/running-daemon.sh goes in where a script says #RUNNING_DAEMON# (written once, used by all three).
for script in postinst prerm postrm; do
  sed -e '/^#RUNNING_DAEMON#$/{r deploy/debian/running-daemon.sh' -e 'd;}' "deploy/debian/$script" >"$ROOT/DEBIAN/$script"
  chmod 0755 "$ROOT/DEBIAN/$script"
done
{ echo "/etc/$NAME/config.json"; (cd "$ROOT" && find "etc/$NAME/igc-sante" -type f | sort | sed 's#^#/#'); } >"$ROOT/DEBIAN/conffiles"

# Ownership root:root (dpkg-deb --root-owner-group), modes 0755/0644, executables 0755, dates fixed.
find "$ROOT" -type d -exec chmod 0755 {} +
find "$ROOT" -type f ! -path "$ROOT/DEBIAN/*" -exec chmod 0644 {} +
# Scripts keep their executable bit (a #! line): the CLI and the modules' own command-line tools.
grep -rlZ --include='*.js' -m1 '^#!' "$LIB" | xargs -0 -r chmod 0755
chmod 0755 "$ROOT/usr/share/$NAME/lab.sh" "$ROOT/usr/bin/$NAME" "$ROOT/DEBIAN/postinst" "$ROOT/DEBIAN/prerm" "$ROOT/DEBIAN/postrm"
chmod 0644 "$ROOT/DEBIAN/conffiles"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z | xargs -0 md5sum | sed 's| \./| |') >"$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/md5sums"
INSTALLED_KB=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<EOF
Package: $NAME
Version: $VERSION
Architecture: all
Maintainer: $MAINTAINER
Installed-Size: $INSTALLED_KB
Depends: nodejs (>= 20)
Suggests: postfix | exim4
Section: mail
Priority: optional
Description: $DESCRIPTION
 Answers Postfix policy delegation and Milter requests, and Exim readsocket
 queries, from the signed MSSante whitelist published by the ANS: mail from
 outside the MSSante trust space is refused during the SMTP transaction with
 its reason, mail from inside passes. The list is verified (XML signature
 against the IGC-Sante CAs), kept when a new one fails, and reloaded on SIGHUP.
 .
 Node.js 20 or later is required (Debian 12 ships 18: use the nodejs package
 of NodeSource or of the Node.js project).
EOF
chmod 0644 "$ROOT/DEBIAN/control"
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

install -d "$OUT"
DEB="$OUT/${NAME}_${VERSION}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
