#!/usr/bin/env bash
# A guided tour of the relay for a newcomer, in under a minute (after the build):
# a private mosquitto, the relay, a simulated camera cam-01, one command of each
# of the 12 types, a camera that goes offline and gets its firmware update when
# it comes back, the relay's log and its status. Everything runs on loopback
# ports picked at random and is stopped and removed at the end, on Ctrl-C or on
# any error.
#
#   scripts/demo.sh                                  builds target/release/ms500-relay
#   MS500_RELAY_BIN=target/debug/ms500-relay scripts/demo.sh     uses that binary
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

section() { printf '\n== %s ==\n' "$*"; }
note() { printf '   %s\n' "$*"; }

work=""
relay_pid=""
group_pids=() # background helpers, each the leader of its own session/process group

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    section "cleanup: stopping everything the demo started"
    if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
        kill -TERM "$relay_pid" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$relay_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$relay_pid" 2>/dev/null
        wait "$relay_pid" 2>/dev/null
        note "relay stopped"
    fi
    # Newest first, so mosquitto (the first one) goes last.
    local i
    for ((i = ${#group_pids[@]} - 1; i >= 0; i--)); do
        kill -TERM -- "-${group_pids[i]}" 2>/dev/null
    done
    for ((i = ${#group_pids[@]} - 1; i >= 0; i--)); do
        wait "${group_pids[i]}" 2>/dev/null
    done
    [ "${#group_pids[@]}" -gt 0 ] && note "broker, camera and watcher stopped"
    if [ -n "$work" ]; then
        rm -rf "$work"
        note "removed $work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

# Starts "$@" in the background in its own session, so that cleanup can stop
# it together with its children (sleep, mosquitto_pub, ...) and Ctrl-C reaches
# only this script, which then stops everything in order.
spawn() {
    setsid "$@" &
    group_pids+=("$!")
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 40000))
            port_open "$p" || break
        done
        echo "$p"
    fi
}

wait_for() { # SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for $what" >&2
    return 1
}

# ---------------------------------------------------------------------------
section "0. prepare: mosquitto and the relay binary"
ensure_mosquitto
if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto_sub >/dev/null 2>&1; then
    note "installing mosquitto-clients with apt-get..."
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto-clients >/dev/null
fi
if [ -n "${MS500_RELAY_BIN:-}" ]; then
    bin=$MS500_RELAY_BIN
    note "using MS500_RELAY_BIN=$bin"
else
    note "cargo build --release --locked"
    cargo build --release --locked
    bin=$repo/target/release/ms500-relay
fi
[ -x "$bin" ] || {
    echo "demo: $bin is not executable" >&2
    exit 2
}
note "$("$bin" --version)"
work=$(mktemp -d /tmp/ms500-demo.XXXXXX)
started_at=$SECONDS

# ---------------------------------------------------------------------------
section "1. start a local broker"
mqtt_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\n' \
    "$mqtt_port" "$(id -un)" >"$work/mosquitto.conf"
spawn "$(mosquitto_bin)" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1
wait_for 10 "mosquitto on port $mqtt_port" port_open "$mqtt_port"
note "mosquitto listens on 127.0.0.1:$mqtt_port (log: $work/mosquitto.log)"

# ---------------------------------------------------------------------------
section "2. write a relay.conf"
socket_port=$(free_port)
while [ "$socket_port" = "$mqtt_port" ]; do socket_port=$(free_port); done
conf=$work/relay.conf
cat >"$conf" <<EOF
# Demo configuration; every key not listed keeps its default (see relay.conf).
MQTT_BROKER = 127.0.0.1
MQTT_PORT = $mqtt_port
SOCKET_PORT = $socket_port
# one status line per command back to the backend, after the broker's PUBACK
ACK_MODE = all
STATUS_FILE = $work/status.json
STATUS_INTERVAL = 1
# a camera silent for 3 s is offline: commands for it are held (section 7)
DEVICE_TIMEOUT = 3
EOF
sed 's/^/   | /' "$conf"
note "how the relay reads it (ms500-relay check-config -c relay.conf, excerpt):"
"$bin" check-config -c "$conf" | grep -E '^(MQTT_PORT|SOCKET_PORT|ACK_MODE|STATUS_|DEVICE_TIMEOUT|PRESENCE_FIELD|HOLD_OFFLINE)' | sed 's/^/   | /'

# ---------------------------------------------------------------------------
section "3. start the relay"
relay_log=$work/relay.log
setsid "$bin" -c "$conf" </dev/null >"$relay_log" 2>&1 &
relay_pid=$!
wait_for 10 "the relay to listen (log: $relay_log)" grep -q 'listening on' "$relay_log"
wait_for 10 "the relay to connect to the broker" grep -q 'connected to broker' "$relay_log"
note "relay pid $relay_pid: backends connect to 127.0.0.1:$socket_port, log in $relay_log"

# ---------------------------------------------------------------------------
section "4. start a simulated camera cam-01"
# Heartbeat every 2 s, as a real MS500 does on /device/ms500/<id>/online.
# shellcheck disable=SC2016 # expanded by the inner bash
spawn bash -c '
    port=$1
    while :; do
        mosquitto_pub -h 127.0.0.1 -p "$port" -q 0 -t /device/ms500/cam-01/online -m "{\"device_id\":\"cam-01\",\"msg_type\":\"heartbeat\",\"timestamp\":$(date +%s),\"ip\":\"192.168.1.50\",\"network\":\"wifi\",\"eth_connected\":false,\"wifi_connected\":true,\"lte_connected\":false,\"cpu_temp\":51.5,\"sense_temp\":40.25,\"video_fps\":15,\"spi_fps\":30}"
        sleep 2
    done' heartbeat "$mqtt_port" >/dev/null 2>&1
# The camera's command topic: every SCS (request current settings) gets the
# camera's settings back on /device/ms500/cam-01/socket_reply.
# shellcheck disable=SC2016 # expanded by the inner bash
spawn bash -c '
    port=$1
    mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -t /service/ms500/cam-01/socket |
        while IFS= read -r cmd; do
            case $cmd in
                *"\"type\":\"SCS\""*)
                    mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t /device/ms500/cam-01/socket_reply \
                        -m "{\"device_id\":\"cam-01\",\"msg_type\":\"settings\",\"firmware\":\"2.4.1\",\"resolution\":\"1280x720\",\"video_fps\":15,\"wifi_enabled\":1,\"roi\":[[0,0],[640,480]]}"
                    ;;
            esac
        done' camera "$mqtt_port" >/dev/null 2>&1
note "cam-01 sends a heartbeat every 2 s and answers SCS with its settings"
wait_for 10 "the relay to see cam-01's heartbeat" grep -q 'device cam-01 online' "$relay_log"
note "the relay logged: $(grep -m1 'device cam-01 online' "$relay_log" | sed 's/^.*device/device/') (each heartbeat is a debug line)"

# ---------------------------------------------------------------------------
section "5. watch what the relay publishes (mosquitto_sub -v, lines marked 'mqtt>')"
# shellcheck disable=SC2016 # expanded by the inner bash
spawn bash -c 'mosquitto_sub -h 127.0.0.1 -p "$1" -q 1 -v -t "/service/ms500/#" -t "/device/ms500/+/socket_reply" | sed -u "s/^/   mqtt> /"' \
    watcher "$mqtt_port"
sleep 0.5
note "watching /service/ms500/# (commands) and /device/ms500/+/socket_reply (replies)"

# ---------------------------------------------------------------------------
section "6. send one command of each of the 12 types (lines marked 'backend<' come back to the sender)"
commands=(
    '{"type":"AIM","unit":"cam-01","id":1,"model_id":17,"link":"https://models.example/people-v3.tflite","md5":"0123456789abcdef0123456789abcdef"}'
    '{"type":"FMW","unit":"cam-01","id":2,"firmware_id":"2.4.1","link":"https://fw.example/ms500-2.4.1.bin","md5":"ffffffffffffffffffffffffffffffff"}'
    '{"type":"APP","unit":"cam-01","id":3,"application_id":3,"link":"https://fw.example/counter-app.bin","md5":"00112233445566778899aabbccddeeff"}'
    '{"type":"CDN","unit":"cam-01","id":4,"coordinates":[[0,0],[640,0],[640,480],[0,480]]}'
    '{"type":"CFG","unit":"cam-01","id":5,"configs":{"exposure":3,"night_mode":true}}'
    '{"type":"CTS","unit":"cam-01","id":6,"cs_width":1280,"cs_height":720,"cs_quality":80}'
    '{"type":"WFI","unit":"cam-01","id":7,"wifi_enabled":1,"wifi_ssid":"site-net","wifi_password":"hunter2"}'
    '{"type":"SCS","unit":"cam-01","id":8}'
    '{"type":"UDS","unit":"cam-01","id":9,"settings":{"fps":5,"tz":"UTC"}}'
    '{"type":"FRS","unit":"cam-01","id":10,"reset_level":1}'
    '{"type":"IMG","unit":"cam-01","id":11}'
    '{"type":"RSR","unit":"cam-01","id":12}'
)
note "$(basename "$bin") send -c relay.conf -w 2 '<AIM>' '<FMW>' ... '<RSR>'"
"$bin" send -c "$conf" -w 2 "${commands[@]}" | sed -u 's/^/   backend< /'
sleep 0.3

section "6b. a broken command is refused with a reason naming the field, and not published"
note "$(basename "$bin") send -c relay.conf -w 1 '{\"type\":\"FRS\",\"unit\":\"cam-01\",\"id\":13}'"
"$bin" send -c "$conf" -w 1 '{"type":"FRS","unit":"cam-01","id":13}' | sed -u 's/^/   backend< /' ||
    note "(send exits 1: a command was refused)"

# ---------------------------------------------------------------------------
section "7. a camera goes offline: its firmware update waits in the relay until it is back"
cam=A0B1C2D3E4F5
cam_unit=MS500-H090-EP-2549-0038
# The camera as an ESP32 with esp-mqtt's defaults: heartbeats, and a clean-session
# subscription to its command topic, both only while it is online.
camera_online() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    spawn bash -c '
        while :; do
            mosquitto_pub -h 127.0.0.1 -p "$1" -q 0 -t "/device/ms500/$2/online" -m "{\"device_id\":\"$2\",\"msg_type\":\"heartbeat\",\"network\":\"lte\"}"
            sleep 1
        done' heartbeat "$mqtt_port" "$cam" >/dev/null 2>&1
    cam_heartbeat=${group_pids[${#group_pids[@]} - 1]}
    # shellcheck disable=SC2016 # expanded by the inner bash
    spawn bash -c 'mosquitto_sub -h 127.0.0.1 -p "$1" -q 1 -t "/service/ms500/$2/socket" | sed -u "s/^/   camera $3> /"' \
        camera "$mqtt_port" "$cam_unit" "$cam"
    cam_sub=${group_pids[${#group_pids[@]} - 1]}
}
camera_offline() {
    kill -TERM -- "-$cam_heartbeat" "-$cam_sub" 2>/dev/null || true
}
camera_online
wait_for 10 "the relay to see camera $cam" grep -q "device $cam online" "$relay_log"
note "camera $cam is online (its command topic: /service/ms500/$cam_unit/socket)"
camera_offline
note "camera $cam loses its network: no heartbeat, its MQTT connection is gone"
wait_for 15 "the relay to mark $cam offline" grep -q "device $cam offline" "$relay_log"
note "after DEVICE_TIMEOUT the relay logged: $(grep -m1 "device $cam offline" "$relay_log" | sed 's/^.*device/device/')"
fmw='{"type":"FMW","unit":"'$cam_unit'","id":20,"camera":"a0b1c2d3e4f5","firmware_id":"2.5.0","link":"https://fw.example/ms500-2.5.0.bin","md5":"0123456789abcdef0123456789abcdef"}'
note "$(basename "$bin") send -c relay.conf -w 1 '<FMW for camera a0b1c2d3e4f5>'"
{ "$bin" send -c "$conf" -w 1 "$fmw" || true; } | sed -u 's/^/   backend< /'
note "held, not published (send exits 1: not published yet): a broker would have dropped it for a camera with a clean session"
sleep 2
note "the camera comes back"
camera_online
wait_for 15 "the relay to release the held update" grep -q "releasing its" "$relay_log"
sleep 1
note "the relay logged: $(grep -m1 'releasing its' "$relay_log" | sed 's/^.*camera/camera/')"

# ---------------------------------------------------------------------------
section "8. the relay's log (stderr; one line per event)"
grep -E 'listening on|connected to broker|device cam-01 online|accepted|held|releas|offline|published|reject|refus|reply|error' "$relay_log" |
    head -n 50 | sed 's/^/   | /' || true
note "(full log: $(wc -l <"$relay_log") lines)"

# ---------------------------------------------------------------------------
section "9. ms500-relay status -c relay.conf (reads STATUS_FILE, written every second)"
sleep 1
"$bin" status -c "$conf" | sed 's/^/   | /'

note "demo took $((SECONDS - started_at)) s after the build"
