#!/usr/bin/env bash
# Checks the container image's definition without a container engine (none runs on the machines
# that test this project; lab scenario `container-shared` runs the entrypoint itself):
#  1. the entrypoint is POSIX sh (`sh -n`; shellcheck -s sh when installed), and its own logic
#     holds against stub binaries (test-entrypoint.sh: files and order, no file, SIGTERM, exit
#     status, the bounded wait);
#  2. every path the Containerfile COPYs from the build context exists, the binaries it builds
#     (`--bin`) are copied into the image, and ENTRYPOINT and HEALTHCHECK name the file the
#     entrypoint is copied to;
#  3. those binaries build, and the shared libraries they load are all in the run-time image: each one's
#     Debian package (on a Debian build machine, dpkg -S) is installed by the Containerfile or is
#     part of debian:bookworm-slim (libc6, libgcc-s1).
# hadolint, when installed, lints the Containerfile too.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "container check FAILED: $*" >&2; exit 1; }
file=packaging/container/Containerfile
entrypoint=packaging/container/entrypoint.sh

# 1. The entrypoint.
sh -n "$entrypoint" || fail "$entrypoint: not valid sh"
if command -v shellcheck >/dev/null 2>&1; then
    shellcheck -s sh "$entrypoint" || fail "shellcheck finds problems in $entrypoint"
elif [ "${CI:-}" = true ]; then
    fail "shellcheck is not installed (scripts/setup.sh installs it); under CI a missing lint fails"
else
    echo "shellcheck not installed: skipped (apt-get install shellcheck)"
fi
[ -x "$entrypoint" ] || fail "$entrypoint is not executable (the image runs it as it is copied)"
bash packaging/container/test-entrypoint.sh || fail "the entrypoint's own tests"
if command -v hadolint >/dev/null 2>&1; then
    hadolint "$file" || fail "hadolint finds problems in $file"
fi

# 2. What the Containerfile names. COPY lines without --from take paths from the build context
# (the repository's root); the last word is the destination.
while read -r -a words; do
    [ "${words[0]:-}" = COPY ] || continue
    [[ "${words[1]}" == --from=* ]] && continue
    for source in "${words[@]:1:${#words[@]}-2}"; do
        [ -e "$source" ] || fail "$file copies $source, which does not exist"
    done
done < "$file"
grep -q '^COPY packaging/container/entrypoint.sh /usr/local/bin/killswitch-entrypoint$' "$file" \
    || fail "$file does not copy the entrypoint to /usr/local/bin/killswitch-entrypoint"
grep -q '^ENTRYPOINT \["/usr/local/bin/killswitch-entrypoint"\]$' "$file" \
    || fail "$file: ENTRYPOINT is not the entrypoint"
grep -q 'CMD \["/usr/local/bin/killswitch-entrypoint", "health"\]' "$file" \
    || fail "$file: HEALTHCHECK does not run the entrypoint's health check"
# The binaries the build stage builds (`--bin NAME`): each must be copied into the image, and
# building them here (step 3, debug profile: the same libraries are linked) fails for a name the
# workspace does not have.
mapfile -t bins < <(grep -o -- '--bin [a-z-]*' "$file" | awk '{print $2}')
[ "${#bins[@]}" -gt 0 ] || fail "$file builds no --bin"
for bin in "${bins[@]}"; do
    grep -q "/src/target/release/$bin" "$file" || fail "$file builds $bin but does not copy it"
done

# 3. Run-time libraries.
if command -v dpkg >/dev/null 2>&1 && grep -q bookworm /etc/os-release; then
    cargo build --locked "${bins[@]/#/--bin=}"
    installed=$(sed -n '/^FROM docker.io\/library\/debian/,$p' "$file" \
        | grep -o 'install -y --no-install-recommends [a-z0-9 .+-]*' | cut -d' ' -f4-)
    for bin in "${bins[@]}"; do
        for lib in $(ldd "target/debug/$bin" | awk '$3 ~ /^\// {print $3}'); do
            # With merged /usr, dpkg knows a library by one of its two paths: try both.
            package=$( { dpkg -S "$lib" || dpkg -S "$(readlink -f "$lib")"; } 2>/dev/null \
                | head -1 | cut -d: -f1) || :
            [ -n "$package" ] || fail "no Debian package holds $lib ($bin needs it)"
            case " $installed libc6 libgcc-s1 " in
            *" $package "*) ;;
            *) fail "$bin needs $lib from $package, which the run-time image does not install" ;;
            esac
        done
    done
else
    echo "not a Debian bookworm machine: the run-time library check was skipped"
fi
echo "container check passed"
