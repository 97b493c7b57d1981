#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests that start a real
# mosquitto (installed here when missing) and the real relay binary, the
# benchmark's smoke run, then the slow static-binary build on its own (it
# would otherwise compete for the two cores with timing-sensitive tests).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_mosquitto
command -v openssl >/dev/null || {
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y -qq openssl >/dev/null
}
cargo test --locked --all-targets "$@"
if [ -f tests/static_build.rs ]; then
    cargo test --locked --test static_build -- --ignored
fi
