#!/usr/bin/env bash
# Builds target/debian/killswitch_<version>_<arch>.deb with cargo-deb from the release binaries.
# The units are rendered for /usr/sbin first (cargo-deb installs binaries under /usr).
# cargo-deb strips the copies it packages (target/release keeps its symbols). No debug-symbol
# package: the release profile has no debug info (debug = 0), so one would hold only the symbol
# table, and a panic's message names its file and line without it.
set -euo pipefail
cd "$(dirname "$0")/.."
for unit in killswitchd.service killswitch-early.service; do
    sed 's|@SBINDIR@|/usr/sbin|g' "packaging/systemd/$unit" > "target/release/$unit"
done
cargo deb -p killswitch-daemon --no-build "$@"
