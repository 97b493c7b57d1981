#!/usr/bin/env bash
# Runs the whole test suite (installing what it needs with apt-get):
#   1. unit and integration tests (tests/it, one binary) against a real
#      mosquitto and the relay built for this machine, the benchmark's smoke
#      run, then the integration tests that need root;
#   2. the gateway tests: the static x86_64 binary, a root holding only
#      BusyBox where the README's crontab line keeps the relay running and
#      where the broker's name resolves through a DNS server the test runs,
#      the package tarball, the Debian package (lintian, installed here with
#      dpkg, run as its systemd unit and its init script say, purged) and
#      the OpenWrt package (its procd script run in a BusyBox root);
#   3. the aarch64, armv7 and mipsel builds (every one required: a build or
#      toolchain that fails fails the run, nothing is skipped) under
#      qemu-user: a representative subset of the integration tests against
#      each, the BusyBox root resolving the broker through DNS, and their
#      tarball, .deb and .ipk packages.
# Each target is built once per run and cached between runs (build-static.sh
# keeps each binary under a key of all its inputs, and cargo's build of std
# and the dependencies for every target, in ~/.cache/ms500-relay, shared by
# all clones): the tests that ask for a binary again get the same file, and
# a later run, from this clone or a fresh one, rebuilds only what changed.
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
# The package tests: lintian judges the .deb, systemd-analyze its unit
# (systemd need not run). lintian and its Perl take most of a minute to
# install: they install while the tests below run, and are waited for
# before the static builds, which may use apt themselves.
packaging_log=$(mktemp)
(ensure_packages lintian systemd) >"$packaging_log" 2>&1 &
packaging_tools=$!
# The metrics test reads METRICS_FILE with the Prometheus client's own parser.
python3 -c 'import prometheus_client' 2>/dev/null ||
    python3 -m pip install -q prometheus-client 2>/dev/null ||
    python3 -m pip install -q --break-system-packages prometheus-client

# Most integration tests spend their time waiting on the relay's own timers
# (idle timeouts of 60 s, keepalives, DEVICE_TIMEOUT), not on the CPU: the
# 184 of them use about 35 s of CPU in a run. Eight at a time instead of one
# per core takes the run from over 5 minutes to under 2 on this 2-core machine.
threads=${RUST_TEST_THREADS:-8}
cargo test --locked --all-targets "$@" -- --test-threads="$threads"
# The integration tests that need root (they mount a tmpfs, or chown files to
# another user) are #[ignore]d for developers, who seldom test as root; CI
# runs this script as root, so here they run, and fail if they cannot.
cargo test --locked --test it "$@" -- --ignored --test-threads="$threads"

if ! wait "$packaging_tools"; then
    cat "$packaging_log" >&2
    echo "could not install lintian and systemd for the package tests" >&2
    exit 1
fi
rm -f "$packaging_log"

# --- the static builds: x86_64, aarch64, armv7, mipsel ------------------------
# Built by one cargo command: the four final link-time optimisations (one
# thread each) then share the machine's cores instead of taking turns. Every
# later build-static.sh call (from the tests below) finds them in the cache.
targets=(x86_64 aarch64 armv7 mipsel)
started=$SECONDS
rc=0
scripts/build-static.sh "${targets[@]}" | grep -E '^(target|size):' || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "${targets[*]}: the static builds failed (build-static.sh's reason is above)" >&2
    exit 1
fi
echo "${targets[*]}: built in $((SECONDS - started)) s"

# --- gateway: the static x86_64 binary, BusyBox-only root, DNS, packages ------
cargo test --locked --test gateway -- --ignored --test-threads=1

# --- aarch64, armv7, mipsel under qemu-user -------------------------------------
# What must work on every target: all 12 types byte-exact whatever the framing,
# a rejection with its reason, a device reply routed back, the spool replayed
# after kill -9, a clean stop on SIGTERM.
subset=(
    --test it --
    --exact
    backend::framing::each_of_the_twelve_types_arrives_byte_exact_on_its_topic
    backend::framing::newline_delimited_json
    backend::framing::many_commands_in_one_write_with_no_separator
    backend::framing::one_byte_writes
    backend::framing::a_command_split_across_writes_with_pauses
    backend::validation::rejection_reasons_go_back_when_ack_mode_is_errors
    device_side::replies::on_5::scs_reply_reaches_the_asking_connection_only_and_uds_moves_the_route
    delivery::spool::kill_9_while_the_broker_is_away_then_restart_delivers_every_accepted_command
    delivery::shutdown::sigterm_stops_cleanly_with_exit_0
)
# A renamed test would silently drop out of an --exact subset: every name
# must still be one the binary lists.
listed=$(cargo test --locked --test it -- --list 2>/dev/null)
for name in "${subset[@]:4}"; do
    printf '%s\n' "$listed" | grep -qx "$name: test" || {
        echo "the qemu subset names $name, which is not a test of tests/it" >&2
        exit 1
    }
done
gateway_subset=(
    packages::tarball::the_tarball_unpacks_and_its_binary_runs
    packages::each_package_unpacks_as_its_manager_does_and_its_binary_runs
    busybox_root::a_busybox_root_finds_the_broker_through_its_dns_server
)
listed=$(cargo test --locked --test gateway -- --ignored --list 2>/dev/null)
for name in "${gateway_subset[@]}"; do
    printf '%s\n' "$listed" | grep -qx "$name: test" || {
        echo "the qemu subset names $name, which is not a test of tests/gateway" >&2
        exit 1
    }
done
for arch in aarch64 armv7 mipsel; do
    case $arch in
        aarch64) qemu=qemu-aarch64-static ;;
        armv7) qemu=qemu-arm-static ;;
        mipsel) qemu=qemu-mipsel-static ;;
    esac
    # Built above: this finds the cached binary and reports it.
    report=$(scripts/build-static.sh "$arch")
    bin=$(printf '%s\n' "$report" | tail -n1)
    echo "$arch: $(printf '%s\n' "$report" | grep '^size:')"
    echo "$arch: testing $bin under $qemu"
    MS500_RELAY_EXE="$qemu $bin" cargo test --locked "${subset[@]}"
    MS500_RELAY_EXE="$qemu $bin" MS500_GATEWAY_ARCH=$arch \
        cargo test --locked --test gateway -- --ignored --test-threads=1 --exact \
        "${gateway_subset[@]}"
done
