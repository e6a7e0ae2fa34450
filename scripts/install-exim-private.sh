#!/usr/bin/env bash
# Installs Debian's Exim (exim4-daemon-heavy) into a private folder, beside Postfix.
# Debian's exim4 packages conflict with postfix, so the .deb is unpacked (dpkg -x) instead of
# installed; only its shared libraries are installed as packages. The binary looks up its
# compiled-in user Debian-exim before reading any config, so that user is created if missing.
# Idempotent. Needs root (apt-get, useradd). Prints the binary's path on stdout, nothing else.
#
#   usage: scripts/install-exim-private.sh [DIR]      (default DIR: /opt/mssante-exim)
set -euo pipefail

dir=${1:-/opt/mssante-exim}
pkg=exim4-daemon-heavy
export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-exim-private: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (apt-get, useradd)"
  exit 1
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bin=$dir/usr/sbin/exim4
deb_keep=$dir/.deb

if [ ! -s "$deb_keep" ] || [ ! -f "$(cat "$deb_keep")" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # apt-get download runs as _apt: give it a folder it may write to (else a warning and root).
  chmod 755 "$work"; chown _apt "$work" 2>/dev/null || true
  if ! (cd "$work" && apt-get download -q "$pkg" >&2); then
    # A fresh machine has no package lists yet.
    apt-get update -q >&2
    (cd "$work" && apt-get download -q "$pkg" >&2)
  fi
  deb=$(ls "$work"/"$pkg"_*.deb)
  mkdir -p "$dir/debs"
  cp "$deb" "$dir/debs/"
  printf '%s\n' "$dir/debs/$(basename "$deb")" > "$deb_keep"
fi
deb=$(cat "$deb_keep")

if [ ! -x "$bin" ]; then
  log "unpacking $(basename "$deb") into $dir"
  dpkg -x "$deb" "$dir"
fi

# The lib* packages of Depends (first of each alternative, versions dropped): the binary's
# shared libraries. exim4-base and exim4-config are not needed: the tests pass their own -C config.
libs=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep '^lib' || true)
missing=()
for lib in $libs; do
  if ! dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$lib")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
fi

if ! getent passwd Debian-exim >/dev/null; then
  log "creating system user Debian-exim"
  getent group Debian-exim >/dev/null || groupadd --system Debian-exim
  useradd --system --gid Debian-exim --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin Debian-exim
fi

# Fails here, not later in a test, if a library is still missing.
if ldd "$bin" | grep -q 'not found'; then
  log "unresolved libraries:"; ldd "$bin" | grep 'not found' >&2
  exit 1
fi
if ! "$bin" -C /dev/null -bV 2>/dev/null | grep -q '^Exim version'; then
  log "$bin does not run:"; "$bin" -C /dev/null -bV >&2 || true
  exit 1
fi
printf '%s\n' "$bin"
