#!/usr/bin/env bash
# Runs the maintainer scripts against stubs. Must run in a private mount namespace (check.sh uses
# `unshare --mount`): it mounts scratch tmpfs over /run and /var/lib, which only this namespace sees.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "maintainer scripts FAILED: $*" >&2; exit 1; }
[[ $(readlink /proc/self/ns/mnt) != $(readlink /proc/1/ns/mnt) ]] || fail "not in a private mount namespace; refusing to touch /run"

mount -t tmpfs scratch /run
mount -t tmpfs scratch /var/lib
mkdir -p /run/systemd/system /var/lib/killswitch
stubs=$(mktemp -d)
log=$stubs/calls
for cmd in systemctl addgroup killswitchd; do
    printf '#!/bin/sh\necho "%s $*" >> %s\n' "$cmd" "$log" > "$stubs/$cmd"
done
# getent: the group exists unless GROUP_MISSING is set.
printf '#!/bin/sh\necho "getent $*" >> %s\n[ -z "$GROUP_MISSING" ]\n' "$log" > "$stubs/getent"
# killswitch: succeeds unless NO_DAEMON is set (then `off` cannot reach a daemon).
printf '#!/bin/sh\necho "killswitch $*" >> %s\n[ -z "$NO_DAEMON" ]\n' "$log" > "$stubs/killswitch"
chmod +x "$stubs"/*
scripts=packaging/debian

run() { : > "$log"; PATH="$stubs:$PATH" "$@"; cat "$log"; }

calls=$(GROUP_MISSING=1 run sh $scripts/postinst configure "")
grep -q '^addgroup --system killswitch$' <<<"$calls" || fail "fresh install does not create the group: $calls"
grep -q '^systemctl enable killswitch-early.service killswitchd.service$' <<<"$calls" || fail "units not enabled: $calls"
grep -q '^systemctl start killswitchd.service$' <<<"$calls" || fail "daemon not started: $calls"

calls=$(run sh $scripts/prerm upgrade 0.1.0)
[[ -z $calls ]] || fail "prerm upgrade must leave the daemon and its rules alone, it ran: $calls"
calls=$(run sh $scripts/postinst configure 0.1.0)
grep -q '^systemctl try-restart killswitchd.service$' <<<"$calls" || fail "upgrade does not restart the daemon: $calls"
grep -Eq 'systemctl (stop|start) |killswitch off|teardown|addgroup' <<<"$calls" && fail "upgrade stops, starts or tears down: $calls"

calls=$(run sh $scripts/prerm remove)
grep -q '^killswitch off$' <<<"$calls" || fail "removal does not switch the kill switch off: $calls"
grep -q 'teardown' <<<"$calls" && fail "teardown although the daemon answered: $calls"
grep -q '^systemctl stop killswitchd.service$' <<<"$calls" || fail "removal does not stop the daemon: $calls"
calls=$(NO_DAEMON=1 run sh $scripts/prerm remove)
grep -q '^killswitchd --teardown$' <<<"$calls" || fail "without a daemon, removal does not tear the rules down: $calls"

touch /var/lib/killswitch/settings.json
run sh $scripts/postrm purge >/dev/null
[[ ! -e /var/lib/killswitch ]] || fail "purge keeps the settings"
