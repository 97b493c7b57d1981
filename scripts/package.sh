#!/usr/bin/env bash
# Packs what a gateway needs into one tarball:
#
#   scripts/package.sh [x86_64|aarch64|armv7|mipsel]     (default x86_64)
#     -> dist/ms500-relay-VERSION-ARCH.tar.gz, whose path is the last line of stdout
#
# Contents (in the folder ms500-relay-VERSION-ARCH/): the static binary built
# by scripts/build-static.sh, relay.conf (every key, commented, with the
# gateway's file locations filled in), ms500-relay.init (BusyBox/sysvinit
# script), crontab (the watchdog line) and INSTALL.md (how to install).
# Exits with build-static.sh's code when the build fails.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

arch=${1:-x86_64}
case $arch in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch64 ;;
    armv7 | armhf) arch=armv7 ;;
    mipsel | mipsle) arch=mipsel ;;
    *) echo "usage: $(basename "$0") [x86_64|aarch64|armv7|mipsel]" >&2; exit 2 ;;
esac

rc=0
report=$(scripts/build-static.sh "$arch") || rc=$?
[ "$rc" -eq 0 ] || exit "$rc"
bin=$(printf '%s\n' "$report" | tail -n1)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
name="ms500-relay-$version-$arch"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir "$dir"
install -m 755 "$bin" "$dir/ms500-relay"
# The shipped relay.conf with the files a gateway needs: state the watchdog
# and `status` read on tmpfs (/run), the spool on persistent storage, the
# log rotated by the relay itself (at most 3 MiB of flash by default).
sed -e 's|^PID_FILE = .*|PID_FILE = /run/ms500-relay/relay.pid|' \
    -e 's|^STATUS_FILE = .*|STATUS_FILE = /run/ms500-relay/status.json|' \
    -e 's|^SPOOL_FILE = .*|SPOOL_FILE = /var/lib/ms500-relay/spool.bin|' \
    -e 's|^LOG_FILE = .*|LOG_FILE = /var/log/ms500-relay/relay.log|' \
    relay.conf >"$dir/relay.conf"
install -m 755 scripts/gateway/ms500-relay.init "$dir/ms500-relay.init"
install -m 644 scripts/gateway/crontab "$dir/crontab"
install -m 644 scripts/gateway/INSTALL.md "$dir/INSTALL.md"

mkdir -p dist
tarball="$repo/dist/$name.tar.gz"
tar --owner=0 --group=0 --numeric-owner --sort=name -czf "$tarball" -C "$stage" "$name"
echo "package: $(stat -c %s "$tarball") bytes"
echo "$tarball"
