#!/bin/sh
# Runs inside the image's root at build time (mmdebstrap customize hook).
set -e
echo kslab > /etc/hostname
passwd -d root
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\nlab /lab 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n' > /etc/fstab
mkdir -p /lab /etc/wireguard
systemctl enable systemd-networkd.service systemd-resolved.service ks-agent.service ks-probe.service
systemctl disable NetworkManager.service 2>/dev/null || true
ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
# Nothing in the guest reaches out on its own: no apt timers, no time sync.
systemctl mask apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
chmod +x /usr/local/sbin/* /usr/lib/systemd/system-sleep/ks-lab
