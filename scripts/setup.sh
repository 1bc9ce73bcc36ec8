#!/usr/bin/env bash
# Installs what killswitch needs to build and to run its lab, on Debian/Ubuntu. Idempotent.
# Needs root (apt). Safe to run on a developer machine: it installs packages, nothing else.
set -euo pipefail

packages=(
  pkg-config libnftnl-dev libmnl-dev # building the nftables backend
  nftables iproute2                  # nft (tests read tables back with it), ip netns / veth
  wireguard-tools wireguard-go       # the lab's real WireGuard tunnel (userspace, no kernel module)
  iptables                           # the benchmarks' iptables kill-switch baseline
  dbus-daemon                        # a private bus for the systemd-resolved and logind tests
  iperf3                             # the benchmarks' data-path throughput
  openvpn                            # the lab's OpenVPN quickstart (a real OpenVPN tunnel)
  python3-firewall python3-nftables  # libraries of the lab's firewalld (the daemon itself: below)
  shellcheck                         # the container entrypoint's lint (packaging/container/check.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: missing packages ${missing[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "setup: installed ${missing[*]}"
fi

# firewalld and ufw for the lab's `firewalld` and `ufw` scenarios, which run them inside a lab
# namespace only. Their packages are downloaded and unpacked, never installed: on a machine with
# systemd, installing them would enable and start them on the machine's own network. Cached per
# version; offline after the first run. firewalld must be the version of python3-firewall.
lab_tools=/var/cache/killswitch/lab-tools
unpack_lab_tool() { # PACKAGE VERSION
  local dir="$lab_tools/$1_$2"
  if [[ ! -e "$dir/.unpacked" ]]; then
    if [[ $EUID -ne 0 ]]; then
      echo "setup: $1 $2 is not in $lab_tools; run as root (sudo) to download it" >&2
      exit 1
    fi
    local download
    download=$(mktemp -d)
    chown _apt "$download" 2>/dev/null || true # apt downloads as _apt where it can
    (cd "$download" && apt-get download -qq "$1=$2")
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$download"/*.deb "$dir"
    rm -rf "$download"
    touch "$dir/.unpacked"
    echo "setup: unpacked $1 $2 into $dir"
  fi
  [[ "$(readlink "$lab_tools/$1")" == "$1_$2" ]] || ln -sfn "$1_$2" "$lab_tools/$1"
}
candidate() { apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1; }
if [[ -z "$(candidate ufw)" && $EUID -eq 0 ]]; then
  apt-get update -qq
fi
mkdir -p "$lab_tools" 2>/dev/null || true
unpack_lab_tool firewalld "$(dpkg-query -W -f='${Version}' python3-firewall)"
unpack_lab_tool ufw "$(candidate ufw)"

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust 1.95 or newer (https://rustup.rs)" >&2
  exit 1
fi
