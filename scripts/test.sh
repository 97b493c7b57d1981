#!/usr/bin/env bash
# Runs the whole test suite (installing what it needs with apt-get):
#   1. unit and integration tests (tests/it, one binary) against a real
#      mosquitto and the relay built for this machine, the benchmark's smoke
#      run, then the integration tests that need root;
#   2. the gateway tests: the static x86_64 binary, a root holding only
#      BusyBox where the README's crontab line keeps the relay running, and
#      the package tarball;
#   3. the aarch64 build (required) and the armv7 build (when Debian's
#      toolchain for it installs) under qemu-user: a representative subset of
#      the integration tests against each, and their packages.
# Each target is built once; later runs reuse the toolchains and the builds.
# Extra arguments go to the first `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_mosquitto
ensure_packages openssl file busybox-static qemu-user-static faketime
# The device link on an MQTT 3.1.1-only broker: RabbitMQ 3.10's MQTT plugin.
ensure_packages rabbitmq-server
# local_users.rs creates an unprivileged user (useradd) and acts as her (setpriv).
ensure_packages passwd util-linux
# The metrics test reads METRICS_FILE with the Prometheus client's own parser.
python3 -c 'import prometheus_client' 2>/dev/null ||
    python3 -m pip install -q prometheus-client 2>/dev/null ||
    python3 -m pip install -q --break-system-packages prometheus-client

cargo test --locked --all-targets "$@"
# The integration tests that need root (they mount a tmpfs, or chown files to
# another user) are #[ignore]d for developers, who seldom test as root; CI
# runs this script as root, so here they run, and fail if they cannot.
cargo test --locked --test it "$@" -- --ignored

# --- gateway: the static x86_64 binary, BusyBox-only root, package ------------
cargo test --locked --test gateway -- --ignored --test-threads=1

# --- ARM builds under qemu-user ------------------------------------------------
# What must work on every target: all 12 types byte-exact whatever the framing,
# a rejection with its reason, a device reply routed back, the spool replayed
# after kill -9, a clean stop on SIGTERM.
subset=(
    --test it --
    --exact
    publish::each_of_the_twelve_types_arrives_byte_exact_on_its_topic
    publish::newline_delimited_json
    publish::many_commands_in_one_write_with_no_separator
    publish::one_byte_writes
    publish::a_command_split_across_writes_with_pauses
    rejections::rejection_reasons_go_back_when_ack_mode_is_errors
    device_side::scs_reply_reaches_the_asking_connection_only_and_uds_moves_the_route
    durability::kill_9_while_the_broker_is_away_then_restart_delivers_every_accepted_command
    cli::sigterm_stops_cleanly_with_exit_0
)
for arch in aarch64 armv7; do
    case $arch in
        aarch64) qemu=qemu-aarch64-static ;;
        armv7) qemu=qemu-arm-static ;;
    esac
    rc=0
    report=$(scripts/build-static.sh "$arch") || rc=$?
    if [ "$rc" -eq 3 ] && [ "$arch" = armv7 ]; then
        echo "armv7: skipped: its toolchain cannot be installed here (build-static.sh says why above)"
        continue
    elif [ "$rc" -ne 0 ]; then
        echo "$arch: the static build failed (exit $rc)" >&2
        exit 1
    fi
    bin=$(printf '%s\n' "$report" | tail -n1)
    echo "$arch: testing $bin under $qemu"
    MS500_RELAY_EXE="$qemu $bin" cargo test --locked "${subset[@]}"
    MS500_RELAY_EXE="$qemu $bin" MS500_PACKAGE_ARCH=$arch \
        cargo test --locked --test gateway -- --ignored --exact the_package_unpacks_and_its_binary_runs
done
