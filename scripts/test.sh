#!/usr/bin/env bash
# The whole test suite, with all set-up: packages, build, then every test. Kernel tests run in
# network namespaces they create; they need root, and under CI=true they fail rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The end-to-end tests run the binaries of other crates: build them all first.
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-4}"
