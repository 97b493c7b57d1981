#!/usr/bin/env bash
# Builds a statically linked release binary of the relay on this x86_64 glibc
# toolchain, so it can be copied to a gateway whatever libc that one has.
#
#   scripts/build-static.sh            (from any directory)
#
# The target is given explicitly: with --target, RUSTFLAGS only apply to the
# target's code, so build scripts and proc-macros (run on this host) stay
# dynamic as they must. The binary lands in
# target/x86_64-unknown-linux-gnu/release/ (target/release/ is untouched).
# Checks that the result is static, prints its size, and prints its absolute
# path as the LAST line of stdout (for scripts: `bin=$(scripts/build-static.sh | tail -n1)`).
# Exits non-zero when the build fails or the result is not static.
#
# Note: glibc's name lookup (getaddrinfo, used for a MQTT_BROKER given as a
# host name) is linked in statically too; the linker warns about it. Files
# (/etc/hosts) and DNS lookups work; other NSS sources (LDAP, mDNS, ...)
# would need the gateway's glibc to match this one. Give an IP address to be
# independent of that.
set -euo pipefail

target=x86_64-unknown-linux-gnu
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(uname -m)" != "x86_64" ]; then
    echo "build-static.sh: this script builds for $target; this machine is $(uname -m)" >&2
    exit 2
fi

echo "building a static release binary for $target (this takes a while)..." >&2
# Build output goes to stderr so that stdout holds only the report below.
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" >&2

bin="$repo/target/$target/release/ms500-relay"
if [ ! -x "$bin" ]; then
    echo "build-static.sh: the build did not produce $bin" >&2
    exit 1
fi

# Static or not: `file` says "statically linked" (or "static-pie linked"); ldd
# says "not a dynamic executable" (or "statically linked" for a static PIE).
verdict=""
if command -v file >/dev/null 2>&1; then
    verdict=$(file -b "$bin")
    case "$verdict" in
        *"statically linked"* | *"static-pie linked"*) static=yes ;;
        *) static=no ;;
    esac
else
    verdict=$(ldd "$bin" 2>&1 || true)
    case "$verdict" in
        *"not a dynamic executable"* | *"statically linked"*) static=yes ;;
        *) static=no ;;
    esac
fi
if [ "$static" != yes ]; then
    echo "build-static.sh: $bin is not statically linked:" >&2
    echo "$verdict" >&2
    exit 1
fi

bytes=$(stat -c %s "$bin")
size=$(awk -v b="$bytes" 'BEGIN { printf "%.2f MB, %.2f MiB", b / 1e6, b / 1048576 }')
echo "static: $verdict"
echo "size: $bytes bytes ($size)"
echo "$bin"
