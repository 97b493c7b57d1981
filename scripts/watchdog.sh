#!/usr/bin/env bash
# Keeps one relay running for a configuration; meant for cron:
#
#   * * * * *  /opt/ms500-relay/scripts/watchdog.sh /etc/ms500-relay/relay.conf
#
# (On a machine with systemd, use scripts/ms500-relay.service instead: it
# restarts the relay by itself and this watchdog is not needed.)
#
# CONFIG must set PID_FILE and STATUS_FILE; absolute paths are best (relative
# ones are taken from the current directory, which is the one the relay is
# started in too). Each run:
#   - relay not running (PID_FILE not locked): starts it detached and waits up
#     to 10 s until it holds the lock and has written STATUS_FILE;
#   - relay running, STATUS_FILE at most 3 x STATUS_INTERVAL old: does nothing,
#     prints nothing;
#   - relay running but STATUS_FILE stale or missing (hung, or stopped with
#     SIGSTOP): SIGTERM + SIGCONT, up to SHUTDOWN_GRACE + 1 s (at least 5 s)
#     to exit, then SIGKILL; then starts a new one.
# Runs of the watchdog for the same CONFIG take turns (flock on CONFIG), so
# overlapping cron runs never start two relays.
#
# Binary: $MS500_RELAY_BIN, else ms500-relay on PATH, else this repository's
# target/release/ms500-relay. The relay's output is appended to
# $MS500_RELAY_LOG, else to ms500-relay.log next to STATUS_FILE.
#
# Exit: 0 running (or started), 1 could not start or stop it, 2 bad usage,
# binary or configuration.
set -euo pipefail

say() { echo "watchdog: $*"; }
die() {
    local code=$1
    shift
    echo "watchdog: $*" >&2
    exit "$code"
}

[ $# -eq 1 ] || die 2 "usage: $(basename "$0") CONFIG"
config=$1
{ [ -f "$config" ] && [ -r "$config" ]; } || die 2 "cannot read configuration file $config"
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"

# --- the binary ---------------------------------------------------------------
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${MS500_RELAY_BIN:-}" ]; then
    bin=$MS500_RELAY_BIN
    { [ -f "$bin" ] && [ -x "$bin" ]; } || die 2 "MS500_RELAY_BIN=$bin is not an executable file"
elif bin=$(command -v ms500-relay 2>/dev/null); then
    :
elif [ -x "$repo/target/release/ms500-relay" ]; then
    bin=$repo/target/release/ms500-relay
else
    die 2 "no relay binary: set MS500_RELAY_BIN, put ms500-relay on PATH, or run cargo build --release in $repo"
fi

# --- the configuration, as the relay reads it (never parsed here) -------------
if ! effective=$("$bin" check-config -c "$config" 2>&1); then
    die 2 "invalid configuration $config:
$effective"
fi

# check-config prints `KEY = value`, the value in double quotes when it is
# empty or holds spaces, '#' or quotes.
unquote() {
    local v=$1
    if [ "${#v}" -ge 2 ] && [ "${v:0:1}" = '"' ] && [ "${v: -1}" = '"' ]; then
        v=${v:1:${#v}-2}
    fi
    printf '%s' "$v"
}
pid_file="" status_file="" interval="" grace=""
while IFS= read -r line; do
    case $line in
        "PID_FILE = "*) pid_file=$(unquote "${line#PID_FILE = }") ;;
        "STATUS_FILE = "*) status_file=$(unquote "${line#STATUS_FILE = }") ;;
        "STATUS_INTERVAL = "*) interval=$(unquote "${line#STATUS_INTERVAL = }") ;;
        "SHUTDOWN_GRACE = "*) grace=$(unquote "${line#SHUTDOWN_GRACE = }") ;;
    esac
done <<<"$effective"
if [ -z "$pid_file" ] || [ -z "$status_file" ]; then
    die 2 "watchdog needs PID_FILE and STATUS_FILE in $config"
fi
[[ $interval =~ ^[0-9]+$ ]] || interval=5
[[ $grace =~ ^[0-9]+$ ]] || grace=5
limit=$((3 * interval))
stop_wait=$((grace + 1 > 5 ? grace + 1 : 5))

status_dir=$(dirname "$status_file")
# The relay only logs an unwritable STATUS_FILE and runs on; it would then look
# hung to every later run. Refuse that configuration here instead.
{ [ -d "$status_dir" ] && [ -w "$status_dir" ]; } ||
    die 2 "the directory of STATUS_FILE ($status_dir) does not exist or is not writable"
log=${MS500_RELAY_LOG:-$status_dir/ms500-relay.log}

# --- one watchdog at a time for this CONFIG ------------------------------------
# The lock is on CONFIG itself (read-only is enough for flock), so nothing is
# created; fd 9 is closed for the relay, which must not inherit it.
exec 9<"$config"
flock -w 30 9 || die 1 "another watchdog for $config has been busy for 30 s; giving up"

# --- helpers -------------------------------------------------------------------
# free | held | error: whether a relay holds the lock on PID_FILE. A missing
# file is free (and is not created here: the relay creates it with its owner).
lock_state() {
    [ -e "$pid_file" ] || {
        echo free
        return 0
    }
    local rc=0
    flock -n -E 75 "$pid_file" true 2>/dev/null || rc=$?
    case $rc in
        0) echo free ;;
        75) echo held ;;
        *) echo error ;;
    esac
}

# The pid written in PID_FILE, or nothing.
read_pid() {
    local pid
    pid=$(cat "$pid_file" 2>/dev/null || true)
    pid=${pid%%[!0-9]*}
    printf '%s' "$pid"
}

# True when the process exists and is not a zombie (a killed relay that its
# parent has not reaped yet has already released its lock).
alive() {
    local stat state
    [ -n "$1" ] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ] && [ "$state" != X ]
}

# False only when we can see the process's files and PID_FILE is not among
# them: then the pid is not the relay holding the lock (stale or reused).
holds_pid_file() {
    local want fd
    want=$(readlink -f "$pid_file" 2>/dev/null) || return 0
    [ -r "/proc/$1/fd" ] && [ -x "/proc/$1/fd" ] || return 0
    for fd in "/proc/$1/fd/"*; do
        [ "$(readlink "$fd" 2>/dev/null)" = "$want" ] && return 0
    done
    return 1
}

# Whole seconds since the file was last modified; fails when it is missing.
age_of() {
    local mtime
    mtime=$(stat -c %Y "$1" 2>/dev/null) || return 1
    echo $(($(date +%s) - mtime))
}

# Waits up to $1 seconds for the lock on PID_FILE to be free.
wait_free() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        [ "$(lock_state)" = free ] && return 0
        sleep 0.1
    done
    [ "$(lock_state)" = free ]
}

log_tail() {
    if [ -s "$log" ]; then
        echo "last lines of $log:"
        tail -n 15 "$log" | sed 's/^/  | /'
    else
        echo "($log is empty)"
    fi
}

start_relay() { # MESSAGE: what to say once it is up ("... (pid N, ...)" is added)
    local message=$1
    # A leftover snapshot of a dead relay is no sign of life for the new one.
    rm -f "$status_file" 2>/dev/null || true
    # Fail clearly (and before starting anything) when the log cannot be written.
    { : >>"$log"; } 2>/dev/null || die 2 "cannot append to the log file $log (set MS500_RELAY_LOG)"

    local started child pid rc i
    started=$(date +%s)
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) watchdog: starting $bin -c $config" >>"$log"
    # Own session (no controlling terminal, no SIGHUP from a closing one),
    # nothing on stdin, output appended to the log, the watchdog lock closed.
    # In a non-interactive shell the child is no process-group leader, so
    # setsid does not fork and $! is the relay's pid.
    setsid nohup "$bin" -c "$config" </dev/null >>"$log" 2>&1 9<&- &
    child=$!
    for ((i = 0; i < 100; i++)); do
        if ! alive "$child"; then
            rc=0
            wait "$child" || rc=$?
            die 1 "the relay exited at once with code $rc ($bin -c $config)
$(log_tail)"
        fi
        pid=$(read_pid)
        # The relay writes its pid once it holds the lock, so probing the lock
        # now cannot take it from under a relay that is still starting.
        if [ "$pid" = "$child" ] && [ -e "$status_file" ] &&
            [ "$(stat -c %Y "$status_file" 2>/dev/null || echo 0)" -ge "$started" ] &&
            [ "$(lock_state)" = held ]; then
            say "$message (pid $pid, config $config, log $log)"
            return 0
        fi
        sleep 0.1
    done
    die 1 "started the relay (pid $child) but it is not up after 10 s (pid file: $(read_pid || true), status file: $([ -e "$status_file" ] && echo present || echo missing)); leaving it to the next run
$(log_tail)"
}

stop_relay() {
    local pid=$1 why=$2
    kill -0 "$pid" 2>/dev/null || die 1 "cannot signal relay pid $pid (owned by another user?)"
    say "relay pid $pid is hung ($why); stopping it and starting a new one"
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    wait_free "$stop_wait" && return 0
    say "relay pid $pid did not exit within $stop_wait s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_free 5 || die 1 "relay pid $pid still holds $pid_file 5 s after SIGKILL"
}

# --- the check -----------------------------------------------------------------
case $(lock_state) in
    free)
        start_relay "relay was not running; started it"
        exit 0
        ;;
    error) die 1 "cannot open $pid_file to test its lock" ;;
esac

# Running. Fresh snapshot: all is well.
if age=$(age_of "$status_file") && [ "$age" -le "$limit" ]; then
    exit 0
fi
# A relay that has just started (it writes its pid file at start) gets the
# same time to write its first snapshot.
if page=$(age_of "$pid_file") && [ "$page" -le "$limit" ]; then
    exit 0
fi

# The lock is held but the pid may not be written yet: give it a moment.
pid=""
for ((i = 0; i < 10; i++)); do
    pid=$(read_pid)
    alive "$pid" && break
    [ "$(lock_state)" = held ] || break
    sleep 0.1
done
if [ "$(lock_state)" = free ]; then
    # It went away on its own while we looked.
    start_relay "relay was not running; started it"
    exit 0
fi
alive "$pid" || die 1 "$pid_file is locked but holds no live pid ('$pid'); not touching it"
holds_pid_file "$pid" || die 1 "pid $pid in $pid_file does not hold that file open; not touching it"

if [ -n "${age:-}" ]; then
    why="status file $status_file is $age s old, limit $limit s"
else
    why="no status file $status_file"
fi
stop_relay "$pid" "$why"
start_relay "started a new relay in place of pid $pid"
