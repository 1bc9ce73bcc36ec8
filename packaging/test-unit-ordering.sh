#!/usr/bin/env bash
# Checks the early-boot unit's place in the boot transaction against this machine's own unit
# files, with systemd-analyze (no running systemd needed):
#  1. a boot (multi-user.target) with killswitch-early.service and killswitchd.service enabled, and
#     nftables and the network managers this machine has, has no ordering cycle;
#  2. killswitch-early.service is finished before sysinit.target, basic.target, network-pre.target,
#     systemd-sysctl.service (which switches forwarding on for a gateway) and each network manager
#     this machine has (systemd-networkd, NetworkManager, ifupdown's networking.service).
# Ordering is not something systemd-analyze prints offline, so 2. is shown the other way round: a
# probe unit ordered after X and before killswitch-early.service makes a cycle exactly when X is
# ordered after killswitch-early.service, and systemd reports the cycles it has to break.
#
#   test-unit-ordering.sh UNITS   (UNITS: a directory with the two rendered unit files)
set -euo pipefail
fail() { echo "unit ordering FAILED: $*" >&2; exit 1; }
[[ $# -eq 1 && -f $1/killswitch-early.service && -f $1/killswitchd.service ]] || fail "usage: $0 UNITS"
system=/lib/systemd/system
[[ -f $system/sysinit.target ]] || fail "no systemd unit files in $system"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/units/sysinit.target.wants" "$dir/units/multi-user.target.wants" "$dir/start"
cp "$1/killswitch-early.service" "$1/killswitchd.service" "$dir/units/"
ln -s ../killswitch-early.service "$dir/units/sysinit.target.wants/"
ln -s ../killswitchd.service "$dir/units/multi-user.target.wants/"
[[ -f $system/nftables.service ]] && ln -s "$system/nftables.service" "$dir/units/sysinit.target.wants/"
managers=()
for unit in systemd-networkd.service NetworkManager.service networking.service; do
    if [[ -f $system/$unit ]]; then
        managers+=("$unit")
        ln -s "$system/$unit" "$dir/units/multi-user.target.wants/"
    fi
done

# The ordering cycles systemd finds (and breaks) when it starts the unit in the file $1 and all it
# pulls in, from the units in $dir/units and this machine's (not its enablement in /etc: the result
# must not depend on it).
cycles() {
    SYSTEMD_UNIT_PATH="$dir/units:$system" systemd-analyze verify "$1" 2>&1 | grep 'ordering cycle' || true
}

printf '[Unit]\nDescription=boot\nWants=multi-user.target\n' > "$dir/start/boot.target"
found=$(cycles "$dir/start/boot.target")
[[ -z $found ]] || fail "ordering cycle in the boot transaction:"$'\n'"$found"

printf '[Unit]\nDescription=probe\nWants=multi-user.target probe.service\n' > "$dir/start/probe.target"
for later in sysinit.target basic.target network-pre.target systemd-sysctl.service "${managers[@]}"; do
    printf '[Unit]\nDefaultDependencies=no\nAfter=%s\nBefore=killswitch-early.service\n[Service]\nExecStart=/bin/true\n' \
        "$later" > "$dir/units/probe.service"
    [[ -n $(cycles "$dir/start/probe.target") ]] || fail "$later is not ordered after killswitch-early.service"
done
echo "unit ordering: no cycle; killswitch-early.service before sysinit.target, basic.target, network-pre.target, systemd-sysctl.service${managers[*]:+ and ${managers[*]}}"
