#!/usr/bin/env bash
# Runs the relay in the foreground against a local broker on 127.0.0.1:1883,
# starting mosquitto there (and installing it) when nothing listens yet; a
# mosquitto started here stops when the relay exits.
# Extra arguments go to the relay, e.g. scripts/run.sh -c my.conf
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

cargo build --release --locked

if ! port_open 1883; then
    ensure_mosquitto
    echo "starting mosquitto on 127.0.0.1:1883 (stopped when the relay exits)" >&2
    conf=$(mktemp /tmp/ms500-mosquitto.XXXXXX)
    printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >"$conf"
    "$(mosquitto_bin)" -c "$conf" >/tmp/ms500-relay-mosquitto.log 2>&1 &
    broker=$!
    for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done
    # The relay replaces this shell below (so signals reach it directly);
    # this watcher stops the broker once that process is gone.
    relay_pid=$$
    (
        trap '' INT TERM
        while kill -0 "$relay_pid" 2>/dev/null; do sleep 1; done
        kill "$broker" 2>/dev/null
        rm -f "$conf"
    ) >/dev/null 2>&1 &
fi

if [ $# -eq 0 ]; then set -- -c relay.conf; fi
exec target/release/ms500-relay "$@"
