# Shared helpers for the bash scripts in this folder (build machine only; the
# gateway runs none of them). Source it, do not run it.

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root (or sudo) for: $*" >&2
        return 1
    fi
}

# True when every named package is installed.
installed() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
    done
}

# The installed version of a package, or nothing.
installed_version() {
    installed "$1" && dpkg-query -W -f='${Version}' "$1" 2>/dev/null
    return 0
}

# The version apt-get would install, or nothing.
candidate_version() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" { print $2 }'
}

# apt-get update, once per script run. Debian's mirrors are sometimes briefly
# inconsistent for one architecture, which makes update exit non-zero while
# the indexes needed are fine: callers judge by what then installs.
apt_update() {
    [ -n "${_ms500_apt_updated:-}" ] && return 0
    _ms500_apt_updated=1
    as_root apt-get update -qq >/dev/null 2>&1 ||
        echo "note: apt-get update reported errors; going on with the package indexes it has" >&2
}

apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

# Installs the named packages that are missing; fails when one still is.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing ${missing[*]} with apt-get..." >&2
    apt_update
    apt_install "${missing[@]}" || true
    for p in "${missing[@]}"; do
        installed "$p" || { echo "could not install $p with apt-get" >&2; return 1; }
    done
}

# Installs mosquitto (broker and clients) when it is missing.
ensure_mosquitto() {
    if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
        return 0
    fi
    ensure_packages mosquitto mosquitto-clients
}

# The mosquitto binary (Debian puts it in /usr/sbin, which may not be on PATH).
mosquitto_bin() {
    if [ -x /usr/sbin/mosquitto ]; then echo /usr/sbin/mosquitto; else command -v mosquitto; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
