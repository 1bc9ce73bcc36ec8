#!/usr/bin/env bash
# Checks the packaging on this machine (as root, no systemd needed):
#  1. the Debian package builds and holds the binaries, units, config and sysusers file;
#  2. the units pass `systemd-analyze verify`;
#  3. `make install DESTDIR=...` installs the same, with the unit paths rendered;
#  4. the maintainer scripts do what installation, upgrade, removal and purge need, run against
#     stubs in a private mount namespace (so that /run, /var/lib and the systemd directories the
#     scripts see are scratch tmpfs, never this machine's): test-maintainer-scripts.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "packaging check FAILED: $*" >&2; exit 1; }

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet
cargo build --release --workspace --bins --locked
bash packaging/build-deb.sh >/dev/null
deb=$(ls -t target/debian/killswitch_*.deb | head -1)
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/sbin/killswitchd ./usr/bin/killswitch ./lib/systemd/system/killswitchd.service \
         ./lib/systemd/system/killswitch-early.service ./etc/killswitch/config.toml \
         ./usr/lib/sysusers.d/killswitch.conf; do
    grep -qx "$f" <<<"$contents" || fail "$deb lacks $f"
done
depends=$(dpkg-deb -f "$deb" Depends)
[[ $depends == *libnftnl11* ]] || fail "the package does not depend on libnftnl"
[[ $depends == *'systemd | systemd-standalone-sysusers | systemd-sysusers'* ]] || fail "no dependency for systemd-sysusers: $depends"
grep -qx '/etc/killswitch/config.toml' <(dpkg-deb -I "$deb" conffiles) || fail "config.toml is not a conffile"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root/deb"
grep -qx 'ExecStart=/usr/sbin/killswitchd' "$root/deb/lib/systemd/system/killswitchd.service" || fail "unit ExecStart"
grep -qx 'ExecStart=/usr/sbin/killswitchd --early-boot' "$root/deb/lib/systemd/system/killswitch-early.service" || fail "early unit ExecStart"
echo "package: $deb ($(du -h "$deb" | cut -f1)), contents ok"

mkdir -p "$root/units"
for unit in killswitchd.service killswitch-early.service; do
    sed "s|@SBINDIR@|$PWD/target/release|g" "packaging/systemd/$unit" > "$root/units/$unit"
done
systemd-analyze verify "$root/units/killswitchd.service" "$root/units/killswitch-early.service" || fail "systemd-analyze verify"
exposure=$(systemd-analyze security --offline=yes "$root/units/killswitchd.service" | tail -1)
echo "units: verified; $exposure"

make -s install DESTDIR="$root/make" PREFIX=/usr >/dev/null
for f in usr/sbin/killswitchd usr/bin/killswitch etc/systemd/system/killswitchd.service \
         etc/systemd/system/killswitch-early.service etc/killswitch/config.toml usr/lib/sysusers.d/killswitch.conf; do
    [[ -e "$root/make/$f" ]] || fail "make install did not install $f"
done
grep -qx 'ExecStart=/usr/sbin/killswitchd' "$root/make/etc/systemd/system/killswitchd.service" || fail "make install unit path"
echo "make install: ok"

dpkg-deb -e "$deb" "$root/control"
unshare --mount --propagation private bash packaging/test-maintainer-scripts.sh "$root/deb" "$root/control"
echo "maintainer scripts: ok"
