#!/usr/bin/env bash
# Tests the container entrypoint's own logic against stub `killswitchd` and `killswitch` binaries
# (no root, no network: the stubs only record how they were called): which wg-quick files `up`
# gets and in which order, what it does without any, that SIGTERM reaches the daemon and the
# entrypoint exits with the daemon's status, and that the readiness wait is bounded. Lab scenario
# `container-shared` runs the same script with the real binaries.
set -euo pipefail
cd "$(dirname "$0")"
entrypoint=$PWD/entrypoint.sh
fail() { echo "entrypoint test FAILED: $*" >&2; exit 1; }

scratch=$(mktemp -d)
# On any exit: the entrypoints still running, and every daemon stub (by the pid each recorded;
# one whose entrypoint died would be left behind otherwise).
cleanup() {
    local pids
    mapfile -t pids < <(jobs -p; cat "$scratch"/case*/daemon.pid 2>/dev/null)
    [ "${#pids[@]}" -eq 0 ] || kill "${pids[@]}" 2>/dev/null || :
    rm -rf "$scratch"
}
trap cleanup EXIT
mkdir "$scratch/bin"
# The daemon stub: records its pid, answers once it "listens", exits with $STUB_EXIT on SIGTERM.
cat > "$scratch/bin/killswitchd" <<'EOF'
#!/bin/sh
trap 'exit "${STUB_EXIT:-0}"' TERM
echo "$$" > "$STUB/daemon.pid"
[ -n "${STUB_NEVER_READY:-}" ] || : > "$STUB/listening"
while :; do sleep 0.05; done
EOF
# The CLI stub: records every call; `status` fails until the daemon stub "listens".
cat > "$scratch/bin/killswitch" <<'EOF'
#!/bin/sh
printf '%s\n' "$*" >> "$STUB/calls"
case $1 in status) [ -e "$STUB/listening" ] ;; esac
EOF
chmod +x "$scratch/bin/"*

# Runs the entrypoint in the background with $1 as its wg-quick directory and the rest as
# environment assignments; sets $pid and $case.
n=0
start() {
    n=$((n + 1))
    case=$scratch/case$n
    mkdir -p "$case"
    env PATH="$scratch/bin:$PATH" STUB="$case" KILLSWITCH_WIREGUARD_DIR="$1" \
        KILLSWITCH_SOCKET="$case/sock" KILLSWITCH_STATE_DIR="$case/state" "${@:2}" \
        sh "$entrypoint" 2> "$case/log" &
    pid=$!
}
# Waits (bounded) until the CLI stub was called with exactly $1, or the log holds $1.
wait_for() {
    for _ in $(seq 100); do
        grep -qxF -- "$1" "$case/calls" 2>/dev/null && return 0
        grep -qF -- "$1" "$case/log" 2>/dev/null && return 0
        sleep 0.05
    done
    fail "case $n: no '$1'; calls: $(cat "$case/calls" 2>/dev/null); log: $(cat "$case/log")"
}
# Sends SIGTERM and checks the entrypoint's exit status is $1.
stop_expecting() {
    kill -TERM "$pid"
    code=0
    wait "$pid" || code=$?
    [ "$code" = "$1" ] || fail "case $n: exit status $code after SIGTERM, expected $1; log: $(cat "$case/log")"
}

wg=$scratch/wg
mkdir "$wg"
printf '[Interface]\n' > "$wg/20-nl.conf"
printf '[Interface]\n' > "$wg/10-se.conf"

# Every *.conf, in byte order, after lockdown.
start "$wg"
wait_for "up $wg/10-se.conf $wg/20-nl.conf"
grep -n . "$case/calls" | grep -q '^[0-9]*:lockdown on$' || fail "case $n: no lockdown on"
[ "$(grep -n 'lockdown on' "$case/calls" | cut -d: -f1)" -lt "$(grep -n '^up ' "$case/calls" | cut -d: -f1)" ] \
    || fail "case $n: up before lockdown on"
stop_expecting 0

# KILLSWITCH_SERVERS picks and orders; the interface name is passed on.
start "$wg" KILLSWITCH_SERVERS="20-nl, 10-se.conf" KILLSWITCH_INTERFACE=wg9
wait_for "up --interface wg9 $wg/20-nl.conf $wg/10-se.conf"
stop_expecting 0

# No file: no `up`, still running (the daemon blocks), and the daemon's status comes back.
mkdir "$scratch/empty"
start "$scratch/empty" STUB_EXIT=3
wait_for "no wg-quick file"
grep -q '^up' "$case/calls" && fail "case $n: up without a file"
kill -0 "$pid" 2>/dev/null || fail "case $n: the entrypoint exited without a wg-quick file"
stop_expecting 3

# A named file that is not there: no `up`.
start "$wg" KILLSWITCH_SERVERS=missing
wait_for "cannot read $wg/missing.conf"
grep -q '^up' "$case/calls" && fail "case $n: up with a missing file"
# An earlier run's tunnel (a kept state directory) is not resumed: the daemon is told `down`.
wait_for "down"
stop_expecting 0

# A daemon that never answers: the wait ends after KILLSWITCH_READY_TIMEOUT with status 1.
start "$wg" STUB_NEVER_READY=1 KILLSWITCH_READY_TIMEOUT=1
code=0
wait "$pid" || code=$?
[ "$code" = 1 ] || fail "case $n: exit status $code for a daemon that never answers, expected 1"
grep -q "did not answer" "$case/log" || fail "case $n: no clear error: $(cat "$case/log")"

# Bad arguments and settings.
code=0; sh "$entrypoint" bogus 2>/dev/null || code=$?
[ "$code" = 2 ] || fail "an unknown argument exits $code, expected 2"
code=0; KILLSWITCH_READY_TIMEOUT=soon sh "$entrypoint" 2>/dev/null || code=$?
[ "$code" = 2 ] || fail "a bad KILLSWITCH_READY_TIMEOUT exits $code, expected 2"
echo "entrypoint test passed ($n cases)"
