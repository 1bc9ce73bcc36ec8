#!/usr/bin/env bash
# The main job: build, start a sandboxed network (namespaces), connect through a real WireGuard
# tunnel, run every leak scenario and print the report. Never touches this machine's own network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
exec target/release/killswitch-lab "$@"
