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

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust 1.95 or newer (https://rustup.rs)" >&2
  exit 1
fi
