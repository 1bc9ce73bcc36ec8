#!/usr/bin/env bash
# The whole test suite, with all set-up: packages, build, then every test. Kernel tests run in
# network namespaces they create; they need root, and under CI=true they fail rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The end-to-end tests run the binaries of other crates: build them all first.
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-4}"
# The model-based tester (README, "The model-based tester"): level 1, the daemon's core through ten
# thousand random sequences with simulated backends; level 2, the real daemon in namespaces with a
# real tunnel and a capture. A failure prints the sequence, shrunk, and its seed.
cargo build --release --workspace --bins --locked
target/release/killswitch-lab model --sim --sequences 10000 --steps 20 --seed "${MODEL_SEED:-1}"
target/release/killswitch-lab model --sequences 30 --steps 15 --seed "${MODEL_SEED:-1}"
