#!/bin/sh
# killswitch-entrypoint: the entrypoint of the killswitch container image.
#
# Runs killswitchd in the container's network namespace and makes it the WireGuard client
# (`killswitch up`) for the wg-quick files mounted in $KILLSWITCH_WIREGUARD_DIR. Application
# containers that join this container's network namespace (compose: network_mode:
# "service:killswitch"; podman/docker: --network container:killswitch) are then local processes
# of the protected namespace: their traffic leaves through the tunnel or not at all.
#
# Fail closed: lockdown is switched on before anything else, so that a missing or bad wg-quick
# file, a refused `up` or a dead server leaves the namespace blocked, never open. On such a
# failure the daemon keeps running (and blocking) and the health check reports unhealthy; the
# entrypoint never exits while the daemon runs. SIGTERM and SIGINT go to the daemon, which stops
# within a second leaving its rules in place; the entrypoint exits with the daemon's status.
#
# `killswitch-entrypoint health` is the image's HEALTHCHECK: exit 0 only when the tunnel is
# connected and `killswitch verify` finds the namespace protected.
#
# Environment (all optional):
#   KILLSWITCH_WIREGUARD_DIR  where the wg-quick files are mounted (default /etc/wireguard)
#   KILLSWITCH_SERVERS        which of them, in failover order: names (NAME or NAME.conf in that
#                             directory) or paths, separated by spaces or commas (default: every
#                             *.conf there, in byte order: name them 10-se.conf, 20-nl.conf, ...)
#   KILLSWITCH_INTERFACE      the tunnel's interface name (default: the first file's name)
#   KILLSWITCH_SOCKET         the daemon's socket (default /run/killswitch/killswitch.sock)
#   KILLSWITCH_STATE_DIR      the daemon's state directory (default /var/lib/killswitch)
#   KILLSWITCH_CONFIG         the daemon's config.toml (default /etc/killswitch/config.toml;
#                             a missing file means the defaults)
#   KILLSWITCH_READY_TIMEOUT  seconds the daemon may take to answer (default 30)
#
# POSIX sh (the image runs it with dash).

set -u

: "${KILLSWITCH_WIREGUARD_DIR:=/etc/wireguard}"
: "${KILLSWITCH_SERVERS:=}"
: "${KILLSWITCH_INTERFACE:=}"
: "${KILLSWITCH_SOCKET:=/run/killswitch/killswitch.sock}"
: "${KILLSWITCH_STATE_DIR:=/var/lib/killswitch}"
: "${KILLSWITCH_CONFIG:=/etc/killswitch/config.toml}"
: "${KILLSWITCH_READY_TIMEOUT:=30}"
# Both binaries read the socket from the environment.
export KILLSWITCH_SOCKET

me=killswitch-entrypoint

say() {
    printf '%s: %s\n' "$me" "$*" >&2
}

# The health check: connected, and verified protected.
health() {
    status=$(killswitch status --json) || {
        say "unhealthy: the daemon does not answer"
        return 1
    }
    case $status in
    *'"state":"connected"'*) ;;
    *)
        say "unhealthy: the tunnel is not connected (killswitch status says why)"
        return 1
        ;;
    esac
    killswitch verify >/dev/null || {
        say "unhealthy: killswitch verify does not find this namespace protected"
        return 1
    }
}

case "${1:-}" in
health)
    health
    exit
    ;;
"") ;;
*)
    say "unknown argument '$1' (none starts the kill switch; 'health' checks it)"
    exit 2
    ;;
esac

case $KILLSWITCH_READY_TIMEOUT in
'' | *[!0-9]*)
    say "KILLSWITCH_READY_TIMEOUT must be a number of seconds, not '$KILLSWITCH_READY_TIMEOUT'"
    exit 2
    ;;
esac

# The wg-quick files, in failover order, as paths; one per line (paths with spaces are refused
# below: `killswitch up` takes them as separate arguments).
servers() {
    if [ -n "$KILLSWITCH_SERVERS" ]; then
        for server in $(printf '%s' "$KILLSWITCH_SERVERS" | tr ',' ' '); do
            case $server in
            */*) printf '%s\n' "$server" ;;
            *.conf) printf '%s\n' "$KILLSWITCH_WIREGUARD_DIR/$server" ;;
            *) printf '%s\n' "$KILLSWITCH_WIREGUARD_DIR/$server.conf" ;;
            esac
        done
    else
        # A glob sorts by the collation order; byte order is the one documented.
        LC_ALL=C
        for file in "$KILLSWITCH_WIREGUARD_DIR"/*.conf; do
            [ -e "$file" ] && printf '%s\n' "$file"
        done
    fi
}

daemon=
interrupted=0
forward() {
    interrupted=1
    if [ -n "$daemon" ]; then
        kill -s "$1" "$daemon" 2>/dev/null || :
    fi
}
# PID 1 in a container ignores every signal it has no handler for: these handlers are what make
# `docker stop` reach the daemon (rather than SIGKILL after the grace period).
trap 'forward TERM' TERM
trap 'forward INT' INT

# Waits for the daemon to exit and exits with its status. A trapped signal interrupts `wait`; the
# daemon it was forwarded to is then waited for again.
wait_for_daemon() {
    while :; do
        interrupted=0
        if wait "$daemon"; then code=0; else code=$?; fi
        if [ "$interrupted" = 1 ]; then
            # `wait` returned because of the signal (the daemon may still be running, or be a
            # zombie), or the daemon exited just as the signal came (then `wait` had its status
            # and a second one knows no such process: 127).
            if kill -0 "$daemon" 2>/dev/null; then
                continue
            fi
            if wait "$daemon" 2>/dev/null; then code=0; else
                again=$?
                [ "$again" -ne 127 ] && code=$again
            fi
        fi
        say "killswitchd exited with status $code"
        exit "$code"
    done
}

mkdir -p "$(dirname "$KILLSWITCH_SOCKET")" "$KILLSWITCH_STATE_DIR" || {
    say "cannot create $(dirname "$KILLSWITCH_SOCKET") or $KILLSWITCH_STATE_DIR"
    exit 1
}

killswitchd --config "$KILLSWITCH_CONFIG" --state-dir "$KILLSWITCH_STATE_DIR" &
daemon=$!
say "started killswitchd (pid $daemon)"

# Wait (bounded) until the daemon answers: it listens once its first rules are in. POSIX sh
# cannot take sd_notify's datagram, so this asks every 100 ms.
waited=0
until killswitch status >/dev/null 2>&1; do
    if ! kill -0 "$daemon" 2>/dev/null; then
        say "killswitchd exited before it answered on $KILLSWITCH_SOCKET"
        wait_for_daemon
    fi
    if [ "$waited" -ge $((KILLSWITCH_READY_TIMEOUT * 10)) ]; then
        say "killswitchd did not answer on $KILLSWITCH_SOCKET within ${KILLSWITCH_READY_TIMEOUT} s; stopping it"
        kill -s TERM "$daemon" 2>/dev/null || :
        wait "$daemon" 2>/dev/null || :
        exit 1
    fi
    sleep 0.1 2>/dev/null || sleep 1
    waited=$((waited + 1))
done

# Blocked from here on whenever no tunnel is connected, whatever happens next.
if ! killswitch lockdown on; then
    # The daemon answers but will not block: do not leave the namespace unprotected behind a
    # running container. Its rules stay when it stops; the container stops.
    say "could not switch lockdown on: stopping"
    kill -s TERM "$daemon" 2>/dev/null || :
    wait_for_daemon
fi

# Fail closed from here on: every failure keeps the daemon running, blocking.
up() {
    files=$(servers)
    if [ -z "$files" ]; then
        say "no wg-quick file: mount one or more at $KILLSWITCH_WIREGUARD_DIR (*.conf) or set KILLSWITCH_SERVERS; everything stays blocked"
        return 1
    fi
    # One argument per line; a path with a space would be split, so it is refused instead.
    case $files in
    *' '* | *'	'*)
        say "a wg-quick file's path contains a space or tab: rename it; everything stays blocked"
        return 1
        ;;
    esac
    # Word splitting on newlines only.
    old_ifs=$IFS
    IFS='
'
    # shellcheck disable=SC2086 # splitting $files into one argument per file is the point
    set -- $files
    IFS=$old_ifs
    for file; do
        if [ ! -r "$file" ]; then
            say "cannot read $file; everything stays blocked"
            return 1
        fi
    done
    if [ -n "$KILLSWITCH_INTERFACE" ]; then
        set -- --interface "$KILLSWITCH_INTERFACE" "$@"
    fi
    say "killswitch up $*"
    killswitch up "$@"
}

if ! up; then
    # A state directory kept from an earlier run (a volume, a restarted container) makes the
    # daemon resume that run's tunnel: not what this start asked for. `down` under lockdown
    # leaves it blocking, which is what the message says.
    if ! killswitch down >/dev/null; then
        say "killswitch down failed: the daemon may still use an earlier run's tunnel (killswitch status says which)"
    fi
    say "not connecting: the daemon keeps blocking (killswitch status says more)"
fi

wait_for_daemon
