#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then integration tests that start a
# real mosquitto (installed here when missing) and the real relay binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_mosquitto
cargo test --locked --all-targets "$@"
