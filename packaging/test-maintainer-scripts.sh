#!/usr/bin/env bash
# Runs the package's maintainer scripts in the orders dpkg runs them (first installation, upgrade,
# removal, installation again after a removal, purge, and without a running systemd) and checks
# what each one calls and leaves behind.
#
#   test-maintainer-scripts.sh FILES CONTROL
#     FILES    the package's files (dpkg-deb -x), for its unit files
#     CONTROL  its control area (dpkg-deb -e), for the scripts as shipped
#
# Must run in a private mount namespace (check.sh uses `unshare --mount`): it mounts scratch tmpfs
# over /run, /var/lib, /etc/systemd and /lib/systemd/system, which only this namespace sees.
#
# Stubs log every call: systemctl, deb-systemd-invoke, systemd-sysusers, killswitch, killswitchd,
# and adduser, addgroup, groupadd and getent, which must not be called at all. deb-systemd-helper
# is the real one behind a logging wrapper: it keeps its records in the scratch /var/lib and its
# links in the scratch /etc/systemd, so the enable state checked across these sequences is the one
# a real system would have. All of /etc/systemd, not only system/: on purge it also removes empty
# directories under /etc/systemd/user.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "maintainer scripts FAILED: $*" >&2; exit 1; }
[[ $# -eq 2 && -d $1 && -f $2/postinst ]] || fail "usage: $0 FILES CONTROL"
files=$(realpath "$1")
control=$(realpath "$2")
[[ $(readlink /proc/self/ns/mnt) != $(readlink /proc/1/ns/mnt) ]] || fail "not in a private mount namespace; refusing to touch /run"
# Mount points only: nothing is created outside the scratch mounts.
for dir in /run /var/lib /etc/systemd /lib/systemd/system; do
    [[ -d $dir ]] || fail "$dir is missing on this machine"
done
real_helper=$(command -v deb-systemd-helper) || fail "deb-systemd-helper (init-system-helpers) is missing"
real_systemctl=$(command -v systemctl) || fail "systemctl is missing"

mount -t tmpfs scratch /run
mount -t tmpfs scratch /var/lib
mount -t tmpfs scratch /etc/systemd
mkdir /etc/systemd/system
mount -t tmpfs scratch /lib/systemd/system
cp "$files"/lib/systemd/system/*.service /lib/systemd/system/

stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
log=$stubs/calls
for cmd in deb-systemd-invoke systemd-sysusers killswitchd adduser addgroup groupadd getent; do
    printf '#!/bin/sh\necho "%s $*" >> %s\n' "$cmd" "$log" > "$stubs/$cmd"
done
# killswitch: succeeds unless NO_DAEMON is set (then `off` cannot reach a daemon).
printf '#!/bin/sh\necho "killswitch $*" >> %s\n[ -z "$NO_DAEMON" ]\n' "$log" > "$stubs/killswitch"
printf '#!/bin/sh\necho "deb-systemd-helper $*" >> %s\nexec %s "$@"\n' "$log" "$real_helper" > "$stubs/deb-systemd-helper"
# systemctl: only logs, except the `--root=/ preset` deb-systemd-helper runs to enable a unit the
# first time: that one works on files only (the scratch ones), honouring presets, so it is real
# (quiet: it says it links to sysinit.target and multi-user.target, absent from the scratch).
printf '#!/bin/sh\necho "systemctl $*" >> %s\ncase "$*" in\n"--root=/ "*" preset "*) exec %s "$@" 2>/dev/null ;;\nesac\n' \
    "$log" "$real_systemctl" > "$stubs/systemctl"
chmod +x "$stubs"/*

# Runs one maintainer script as dpkg would (its environment, PATH with the stubs) and prints the
# calls it made. A script that fails fails the test.
run() {
    local script=$1
    shift
    : > "$log"
    PATH="$stubs:$PATH" DPKG_MAINTSCRIPT_PACKAGE=killswitch DPKG_MAINTSCRIPT_NAME="$script" \
        sh "$control/$script" "$@" || fail "$script $* exited with $?"
    cat "$log"
}
has() { grep -qx -- "$1" <<<"$2"; }
# Calls no script may make, whatever the sequence.
never() {
    ! grep -E '^(adduser|addgroup|groupadd|getent) ' <<<"$1" || fail "$2: adduser and its kind are not used: $1"
    ! grep -E '^systemctl ' <<<"$1" | grep -Ev 'daemon-reload$|^systemctl --root=/ .* preset ' \
        || fail "$2: systemctl other than daemon-reload (and deb-systemd-helper's preset): $1"
}
early_link=/etc/systemd/system/sysinit.target.wants/killswitch-early.service
daemon_link=/etc/systemd/system/multi-user.target.wants/killswitchd.service
reinstall_note=/run/killswitch-package-reinstall

mkdir -p /run/systemd/system

# First installation: the group, both units enabled, the daemon started (not the early unit).
calls=$(run preinst install)
[[ -z $calls && ! -e $reinstall_note ]] || fail "preinst install did something: $calls"
calls=$(run postinst configure "")
never "$calls" "first installation"
has 'systemd-sysusers killswitch.conf' "$calls" || fail "first installation does not create the group: $calls"
has 'deb-systemd-helper enable killswitch-early.service' "$calls" || fail "early unit not enabled: $calls"
has 'deb-systemd-helper enable killswitchd.service' "$calls" || fail "daemon unit not enabled: $calls"
has 'deb-systemd-invoke start killswitchd.service' "$calls" || fail "daemon not started: $calls"
! grep -q 'deb-systemd-invoke .*killswitch-early' <<<"$calls" || fail "the early unit is for boot, not started: $calls"
[[ -L $early_link && -L $daemon_link ]] || fail "enable links missing after the first installation"

# Upgrade (old prerm, new preinst, old postrm, new postinst): nothing stops, tears down or starts;
# the running daemon is restarted, and only if it runs.
for step in "prerm upgrade 0.2.0" "preinst upgrade 0.1.0" "postrm upgrade 0.2.0"; do
    # shellcheck disable=SC2086 # the step is words on purpose
    calls=$(run $step)
    [[ -z $calls ]] || fail "$step must leave the daemon and its rules alone, it ran: $calls"
done
calls=$(run postinst configure 0.1.0)
never "$calls" "upgrade"
has 'deb-systemd-invoke try-restart killswitchd.service' "$calls" || fail "upgrade does not try-restart the daemon: $calls"
! grep -Eq 'deb-systemd-invoke (stop|start|restart) |^killswitch |^killswitchd ' <<<"$calls" || fail "upgrade stops, starts or tears down: $calls"
[[ -L $early_link && -L $daemon_link ]] || fail "enable links lost in an upgrade"

# An administrator disabled the early unit: an upgrade keeps it that way.
rm "$early_link"
calls=$(run postinst configure 0.1.0)
! has 'deb-systemd-helper enable killswitch-early.service' "$calls" || fail "upgrade re-enables a unit the administrator disabled: $calls"
[[ ! -e $early_link ]] || fail "upgrade re-enabled a unit the administrator disabled"
ln -s /lib/systemd/system/killswitch-early.service "$early_link"

# Removal: the kill switch off through the daemon, then both units stopped; no teardown, since the
# daemon answered. Exactly these calls, in this order: the enable state stays until purge (as with
# debhelper), and the daemon is asked before it is stopped.
stop='deb-systemd-invoke stop killswitchd.service killswitch-early.service'
calls=$(run prerm remove)
[[ $calls == "killswitch off"$'\n'"$stop" ]] || fail "removal: $calls"
# Without a daemon to ask, the rules go directly, after the stop: --teardown refuses to act while
# a daemon runs, and a stopped daemon leaves its rules.
calls=$(NO_DAEMON=1 run prerm remove)
[[ $calls == "killswitch off"$'\n'"$stop"$'\n'"killswitchd --teardown" ]] || fail "removal without a daemon: $calls"
calls=$(run postrm remove)
never "$calls" "postrm remove"
[[ $calls == 'systemctl --system daemon-reload' ]] || fail "postrm remove: $calls"
[[ -L $early_link && -L $daemon_link ]] || fail "removal dropped the enable state (purge does that)"

# Installed again after the removal: dpkg passes the old version as for an upgrade, but the daemon
# was stopped by the removal and must start, as on a first installation.
calls=$(run preinst install 0.1.0)
[[ -e $reinstall_note ]] || fail "preinst install OLD-VERSION leaves no note for postinst"
calls=$(run postinst configure 0.1.0)
never "$calls" "installation after removal"
has 'deb-systemd-invoke start killswitchd.service' "$calls" || fail "installed again after removal, the daemon is not started: $calls"
! has 'deb-systemd-invoke try-restart killswitchd.service' "$calls" || fail "installed again after removal, only try-restart: $calls"
[[ ! -e $reinstall_note ]] || fail "postinst leaves preinst's note behind"
[[ -L $early_link && -L $daemon_link ]] || fail "enable links missing after installing again"
# A failed installation's note goes with it.
run preinst install 0.1.0 >/dev/null
run postrm abort-install 0.1.0 >/dev/null
[[ ! -e $reinstall_note ]] || fail "postrm abort-install leaves preinst's note behind"

# Purge (prerm remove, postrm remove, postrm purge): the settings and all enable state go.
mkdir -p /var/lib/killswitch
touch /var/lib/killswitch/settings.json
run prerm remove >/dev/null
run postrm remove >/dev/null
calls=$(run postrm purge)
never "$calls" "purge"
has 'deb-systemd-helper purge killswitch-early.service killswitchd.service' "$calls" || fail "purge keeps the units' enable state: $calls"
[[ ! -e /var/lib/killswitch ]] || fail "purge keeps the settings"
[[ ! -L $early_link && ! -L $daemon_link ]] || fail "enable links left after purge"
! compgen -G '/var/lib/systemd/deb-systemd-helper-enabled/*killswitch*' >/dev/null \
    && ! compgen -G '/var/lib/systemd/deb-systemd-helper-enabled/*/*killswitch*' >/dev/null \
    || fail "deb-systemd-helper's records left after purge"

# Without a running systemd (an image being built): the units are enabled for the next boot, and
# nothing is started or stopped; removal still takes the rules away.
rmdir /run/systemd/system
calls=$(run postinst configure "")
never "$calls" "installation without systemd"
! grep -Eq '^deb-systemd-invoke |^systemctl .*daemon-reload' <<<"$calls" || fail "without systemd, nothing is started or reloaded: $calls"
[[ -L $early_link && -L $daemon_link ]] || fail "without systemd, the units are not enabled for the next boot"
calls=$(NO_DAEMON=1 run prerm remove)
[[ $calls == $'killswitch off\nkillswitchd --teardown' ]] || fail "removal without systemd: $calls"
