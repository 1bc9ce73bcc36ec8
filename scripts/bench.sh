#!/usr/bin/env bash
# The benchmarks: killswitch against the alternatives, in namespaces, ratios from one run.
# Prints markdown (the tables of BENCHMARKS.md). `--quick` runs a few iterations only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
exec target/release/killswitch-bench "$@"
