#!/usr/bin/env bash
# Builds the VM lab's guest image: Debian bookworm with systemd, systemd-resolved, NetworkManager
# (masked unless a scenario wants it), nftables, wireguard-tools and the kernel, root on a raw ext4
# image made without loop devices. Usage: build-image.sh OUTDIR DEPENDS
#   OUTDIR   gets base.raw, vmlinuz, initrd.img and manifest (written to OUTDIR.tmp, then renamed)
#   DEPENDS  the project .deb's Depends line: installed now, so that `dpkg -i` in a guest with no
#            network proves the package declares everything it needs. `adduser` is deliberately
#            not added unless the package depends on it.
# The project's own binaries are not in the image: they arrive as a .deb over the 9p share, so the
# image (and its cache key) does not change with every commit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
depends=$2
tmp=$out.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
# Package names from a Depends line: drop versions, take the first of each set of alternatives.
deps=$(tr ',' '\n' <<<"$depends" | sed 's/|.*//; s/(.*)//; s/ //g' | grep -v '^$' | paste -sd, -)
include=systemd,systemd-sysv,systemd-resolved,udev,dbus,kmod,initramfs-tools,linux-image-amd64
include+=,iproute2,nftables,wireguard-tools,network-manager,iputils-ping,procps,netcat-openbsd
include+=,$deps
# The machine's own apt sources (a deb822 file): mmdebstrap pastes a MIRROR that is a file into
# the chroot as its sources list.
sources=/etc/apt/sources.list.d/debian.sources
[[ -f $sources ]] || sources=/etc/apt/sources.list
mmdebstrap --quiet --variant=minbase --mode=root \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/gpu/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/media/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/sound/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/infiniband/*' \
    --include="$include" \
    --customize-hook="cp -a '$here/guest/.' \"\$1/\"" \
    --customize-hook='chroot "$1" sh /usr/local/lib/ks-lab/setup-guest.sh' \
    --customize-hook="cp -L \"\$1/vmlinuz\" '$tmp/vmlinuz'; cp -L \"\$1/initrd.img\" '$tmp/initrd.img'" \
    bookworm "$tmp/rootfs" "$sources"
mkfs.ext4 -q -L root -d "$tmp/rootfs" "$tmp/base.raw" 2G
{
    echo "kernel: $(ls "$tmp/rootfs/lib/modules")"
    echo "built: $(date -u +%FT%TZ)"
    chroot "$tmp/rootfs" dpkg-query -W -f '${Package} ${Version}\n' systemd nftables network-manager wireguard-tools
} > "$tmp/manifest"
rm -rf "$tmp/rootfs"
rm -rf "$out"
mv "$tmp" "$out"
