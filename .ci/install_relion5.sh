#!/usr/bin/env bash
# RELION 5.1 (Debian sid's `relion` 5.1.0 package) next to the host's RELION 3.1, for the
# RELION 5 integration tests (tests/integration/test_relion5_pipeline.py).
#
# sid needs a newer C library than a Debian 12 host has, so RELION 5.1 goes into its own
# debootstrap root, and each `relion_*` program gets a small script in $BIN that starts it
# with the root's own loader and libraries. Nothing is mounted and nothing runs in a chroot
# at run time: put $BIN first on PATH and RELION 5.1's pipeliner finds its own programs,
# while what it starts for an External job (pupick-relion) runs on the host as usual.
#
# Prints ONE line and exits 0 in every case (installed, reused, or why not), so CI goes on
# and the RELION 5 tests skip with a reason where this did not work.
#
#   RELION5_ROOT  the debootstrap root (default /opt/relion5-chroot; reused when complete)
#   RELION5_BIN   where the wrapper scripts go (default /opt/relion5/bin)
#   RELION5_GUI   1 also installs relion-gui (relion_display, relion_manualpick, the GUI); the
#                 tests do not need it (default 0)
set -uo pipefail

ROOT=${RELION5_ROOT:-/opt/relion5-chroot}
BIN=${RELION5_BIN:-/opt/relion5/bin}
GUI=${RELION5_GUI:-0}
MIRROR=${RELION5_MIRROR:-http://deb.debian.org/debian}
READY="$ROOT/.pupick-relion5-ready"
LOG=${RELION5_LOG:-/tmp/relion5-install.log}

say() { echo "RELION 5.1: $*"; }

write_wrappers() {
  mkdir -p "$BIN" || return 1
  local loader libs exe name
  loader=$(ls "$ROOT"/usr/lib64/ld-linux-x86-64.so.2 2>/dev/null || ls "$ROOT"/lib64/ld-linux-x86-64.so.2 2>/dev/null) || return 1
  libs="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu/openmpi/lib"
  rm -f "$BIN"/relion*
  for exe in "$ROOT"/usr/bin/relion*; do
    [ -x "$exe" ] || continue
    # programs only: the root's Python scripts would need its Python, which the tests do not use
    [ "$(head -c 4 "$exe" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
    name=$(basename "$exe")
    printf '#!/bin/sh\n# RELION 5.1 from %s, run with its own loader (written by pupick .ci/install_relion5.sh)\nexec %s --library-path %s --argv0 %s %s "$@"\n' \
      "$ROOT" "$loader" "$libs" "$name" "$exe" > "$BIN/$name"
    chmod 755 "$BIN/$name"
  done
  [ -x "$BIN/relion_refine" ] || return 1
  VERSION=$("$BIN/relion_refine" --version 2>&1 | grep -m1 'RELION version' | tr -s ' ' | sed 's/ *$//')
  case "$VERSION" in *5.1*) return 0 ;; *) return 1 ;; esac
}

if [ -f "$READY" ] && write_wrappers; then
  say "reused $ROOT, programs in $BIN ($VERSION)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "not installed (needs root for debootstrap); the RELION 5 tests will be skipped"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "not installed (no apt-get on this host); the RELION 5 tests will be skipped"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
(
  set -e
  command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  rm -rf "$ROOT.partial"
  # bounded, so that a stalled mirror costs CI at most this long (a fresh install takes 1.5-4 minutes)
  timeout 1200 debootstrap --variant=minbase sid "$ROOT.partial" "$MIRROR"
  packages="relion openmpi-bin"
  if [ "$GUI" = 1 ]; then packages="$packages relion-gui"; fi
  timeout 1200 chroot "$ROOT.partial" apt-get install -y --no-install-recommends $packages
  chroot "$ROOT.partial" apt-get clean
  rm -rf "$ROOT"
  mv "$ROOT.partial" "$ROOT"
  touch "$READY"
) > "$LOG" 2>&1
status=$?
if [ "$status" = 0 ] && write_wrappers; then
  say "installed in $ROOT, programs in $BIN ($VERSION)"
else
  rm -rf "$ROOT.partial"
  say "could not be installed (debootstrap of Debian sid failed, see $LOG: $(tail -n 1 "$LOG" 2>/dev/null)); the RELION 5 tests will be skipped"
fi
exit 0
