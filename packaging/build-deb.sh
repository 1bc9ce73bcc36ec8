#!/usr/bin/env bash
# Builds target/debian/killswitch_<version>_<arch>.deb with cargo-deb from the release binaries.
# The units are rendered for /usr/sbin first (cargo-deb installs binaries under /usr), and the man
# pages and shell completions are generated from the binaries' clap definitions by
# killswitch-docgen (built with them), the man pages gzipped as Debian wants them. Their date is
# SOURCE_DATE_EPOCH's (the last commit's unless set), so that the same commit makes the same pages.
# cargo-deb strips the copies it packages (target/release keeps its symbols). No debug-symbol
# package: the release profile has no debug info (debug = 0), so one would hold only the symbol
# table, and a panic's message names its file and line without it.
set -euo pipefail
cd "$(dirname "$0")/.."
for unit in killswitchd.service killswitch-early.service; do
    sed 's|@SBINDIR@|/usr/sbin|g' "packaging/systemd/$unit" > "target/release/$unit"
done
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
rm -rf target/release/share
target/release/killswitch-docgen target/release/share >/dev/null
gzip -9n target/release/share/man/man1/killswitch.1 target/release/share/man/man8/killswitchd.8
cargo deb -p killswitch-daemon --no-build "$@"
