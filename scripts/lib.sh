# Shared helpers for the scripts in this folder; source it, do not run it.

# Installs mosquitto (broker and clients) with apt-get when it is missing.
ensure_mosquitto() {
    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        return 0
    fi
    echo "installing mosquitto with apt-get..." >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
}

# The mosquitto binary (Debian puts it in /usr/sbin, which may not be on PATH).
mosquitto_bin() {
    if [ -x /usr/sbin/mosquitto ]; then echo /usr/sbin/mosquitto; else command -v mosquitto; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
