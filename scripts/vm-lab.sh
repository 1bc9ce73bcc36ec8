#!/usr/bin/env bash
# The VM lab: the Debian package on a real Debian guest (systemd, kernel WireGuard) under QEMU,
# judged by a capture outside the guest. Does all the set-up on a fresh Debian machine (apt
# packages, the build, the .deb, the guest image) and needs root. Never touches this machine's own
# network: the guest's only link is a tap inside a network namespace the lab creates and removes.
#
#   sudo bash scripts/vm-lab.sh [--json] [--rebuild-image] [--stop-after=NAME] [--only-networkmanager]
#
# About 15-18 minutes on two cores under emulation, plus 1.5-3 for the guest image when it is not
# cached. --stop-after=NAME ends the first guest's chain after scenario NAME (install,
# up-kernel-wireguard, stop-start, reboot-lockdown, control-early-disabled, reboot-guarded, remove,
# purge, upgrade-under-traffic, suspend-resume); --only-networkmanager runs only the second guest.
# Both are for working on the lab: the report then fails, since not every scenario ran.
# The guest image is cached under /var/cache/killswitch/vm-lab (or
# $KILLSWITCH_VM_CACHE), keyed by its recipe (scripts/vm/), the package's dependencies and the
# archive's versions of the kernel, systemd, nftables, NetworkManager and wireguard-tools; the two
# newest images are kept. The upgrade scenario starts from the last package that passed this lab on
# this machine, or, on a fresh machine, from this build repackaged with a lower version.
# One VM lab runs at a time on a machine (a lock in the cache directory): two emulated guests on
# the same cores would time each other out, and they share the image cache.
# Exit status: 0 passed, 1 a scenario failed (or the lab could not run), 2 bad arguments or not
# root, 128 + the signal's number when interrupted (the lab cleans up first).
set -euo pipefail
cd "$(dirname "$0")/.."
json=
rebuild=
extra=()
for arg in "$@"; do
    case $arg in
    --json) json=--json ;;
    --rebuild-image) rebuild=1 ;;
    --stop-after=* | --only-networkmanager) extra+=("$arg") ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "vm-lab: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done
if [[ $EUID -ne 0 ]]; then
    echo "vm-lab: needs root (apt, a network namespace with a tap, mmdebstrap); try sudo" >&2
    exit 2
fi
log() { [[ -n $json ]] || echo "vm-lab: $*" >&2; }
started=$(date +%s)

bash scripts/setup.sh >&2
# QEMU (TCG: this machine's /dev/kvm cannot run a stock kernel), the image builder, and the DHCP
# server of the NetworkManager guest's link. On a machine with a newer backports qemu-utils, apt
# removes it (it breaks bookworm's qemu-system-common); the lab needs no qemu-img.
vm_packages=(qemu-system-x86 mmdebstrap e2fsprogs dnsmasq-base)
missing=()
for p in "${vm_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet

log "building"
cargo build --release --workspace --bins --locked --quiet
bash packaging/build-deb.sh >/dev/null
version=$(cargo metadata --no-deps --format-version 1 --locked |
    sed -n 's/.*"name":"killswitch-daemon","version":"\([^"]*\)".*/\1/p')
cache=${KILLSWITCH_VM_CACHE:-/var/cache/killswitch/vm-lab}
mkdir -p "$cache/images" "$cache/debs" target/vm-lab
exec 9>"$cache/lock"
if ! flock -n 9; then
    log "another VM lab is running on this machine; waiting for it to finish"
    flock 9
fi
# A copy: cargo-deb empties target/debian when it builds the next package.
deb=target/vm-lab/killswitch.deb
cp "$(ls -t target/debian/killswitch_*_amd64.deb | head -1)" "$deb"
# The upgrade's starting point: the last package that passed, unless it is this very one (a
# rebuild of the same commit), which cannot test an upgrade.
if [[ -f $cache/debs/last-passed.deb ]] && ! cmp -s "$cache/debs/last-passed.deb" "$deb"; then
    previous=$cache/debs/last-passed.deb
    origin="the last package that passed this lab on this machine ($(dpkg-deb -f "$previous" Version))"
else
    previous=target/vm-lab/previous.deb
    bash packaging/build-deb.sh --deb-version "$version~prev" --output "$previous" >/dev/null
    origin="this build repackaged as $version~prev (no other package has passed this lab on this machine)"
fi

depends=$(dpkg-deb -f "$deb" Depends)
key=$( {
    find scripts/vm -type f | sort | xargs sha256sum
    echo "$depends"
    apt-cache policy linux-image-amd64 systemd nftables network-manager wireguard-tools | grep Candidate
} | sha256sum | cut -c1-16)
image=$cache/images/$key
cached=--image-cached
if [[ -n $rebuild || ! -f $image/base.raw ]]; then
    cached=
    log "building the guest image $key (about 3 minutes)"
    t=$(date +%s)
    if ! bash scripts/vm/build-image.sh "$image" "$depends" > target/vm-lab/image-build.log 2>&1; then
        echo "vm-lab: building the guest image failed (infrastructure: is the Debian archive reachable?); see target/vm-lab/image-build.log:" >&2
        tail -20 target/vm-lab/image-build.log >&2
        exit 1
    fi
    log "guest image built in $(($(date +%s) - t)) s"
    # Keep the two newest images.
    ls -1t "$cache/images" | tail -n +3 | while read -r old; do rm -rf "${cache:?}/images/$old"; done
fi

rm -rf target/vm-lab/run
status=0
target/release/killswitch-lab vm --image "$image" --deb "$deb" --previous-deb "$previous" \
    --previous-origin "$origin" --artefacts target/vm-lab/run $json $cached "${extra[@]}" || status=$?
if ((status == 0)); then
    cp "$deb" "$cache/debs/last-passed.deb"
fi
log "took $(($(date +%s) - started)) s"
exit $status
