#!/usr/bin/env bash
# Builds a statically linked release binary of the relay for a gateway:
#
#   scripts/build-static.sh [x86_64|aarch64|armv7]      (default x86_64; from any directory)
#
# Runs on a Debian bookworm x86_64 machine. Installs what the target needs
# with apt-get (adding the foreign dpkg architecture for ARM), builds with
# `-C target-feature=+crt-static`, checks with `file` that the result is
# static and of the right machine, prints its size and, as the LAST line of
# stdout, its absolute path (`bin=$(scripts/build-static.sh aarch64 | tail -n1)`).
#
# Toolchains:
#   x86_64   rustup's toolchain (the machine's `cargo`).
#   aarch64, armv7
#            Debian's rustc-web/cargo-web (/usr/bin/rustc, /usr/bin/cargo) with
#            the target's standard library from libstd-rust-web-dev:ARCH, and
#            the GNU cross compiler and libc (ring compiles C and assembly for
#            the target). rustup cannot be used for these: it would download
#            the target's std from static.rust-lang.org, which is not among
#            the sources these machines are promised (crates.io and Debian's
#            mirror); Debian's packages come from its mirror, signed.
#            Debian's std must be the exact version of Debian's rustc; when the
#            mirror does not offer a matching one (its per-architecture indexes
#            are sometimes briefly out of step), the script says so and exits 3.
#
# glibc's resolver is linked in statically: MQTT_BROKER host names resolve
# through /etc/hosts and DNS (not through other NSS sources such as LDAP or
# mDNS); an IP address always works. The linker warns about it; that is expected.
#
# Exit: 0 built; 1 the build failed or its result is not a static binary of
# the target; 2 usage (or not an x86_64 Debian host); 3 the toolchain cannot
# be installed here.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
. scripts/lib.sh

arch=${1:-x86_64}
case $arch in
    x86_64 | amd64)
        arch=x86_64 target=x86_64-unknown-linux-gnu machine="x86-64" ;;
    aarch64 | arm64)
        arch=aarch64 target=aarch64-unknown-linux-gnu machine="ARM aarch64"
        debarch=arm64 gnu=aarch64-linux-gnu ;;
    armv7 | armhf)
        arch=armv7 target=armv7-unknown-linux-gnueabihf machine="ARM, EABI5"
        debarch=armhf gnu=arm-linux-gnueabihf ;;
    *)
        echo "usage: $(basename "$0") [x86_64|aarch64|armv7]" >&2
        exit 2 ;;
esac
# What an outer cargo sets for the package it runs (when this script runs
# from a test) would look like a changed environment to the build scripts'
# rerun-if-env-changed (ring's watches CARGO_PKG_NAME, OUT_DIR, ...) and
# force a full rebuild each time.
for v in $(compgen -e); do
    case $v in
        CARGO | CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_BIN_* | \
            CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | OUT_DIR) unset "$v" ;;
    esac
done
if [ "$(uname -m)" != x86_64 ]; then
    echo "build-static.sh: builds on an x86_64 Debian machine; this one is $(uname -m)" >&2
    exit 2
fi

# The Debian cross toolchain for $debarch, installed once: later runs find
# every package in place (same version as Debian's rustc) and go straight on.
ensure_cross_toolchain() {
    local std="libstd-rust-web-dev:$debarch"
    local packages=(rustc-web cargo-web "$std" "gcc-$gnu" "libc6-dev-$debarch-cross" file)
    if installed "${packages[@]}" && [ "$(installed_version rustc-web)" = "$(installed_version "$std")" ]; then
        return 0
    fi
    echo "installing the $arch toolchain from Debian (rustc-web, $std, gcc-$gnu)..." >&2
    as_root true || { echo "build-static.sh: installing packages needs root or sudo" >&2; exit 3; }
    if ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
        as_root dpkg --add-architecture "$debarch"
    fi
    apt_update
    # Debian's std for the target must be the very version of Debian's rustc.
    local want
    want=$(installed_version rustc-web)
    [ -n "$want" ] || want=$(candidate_version rustc-web)
    if [ -z "$want" ]; then
        echo "build-static.sh: Debian's mirror offers no rustc-web package here; cannot build for $arch" >&2
        exit 3
    fi
    if ! apt-cache madison "$std" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$want"; then
        local offered
        offered=$(apt-cache madison "$std" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | paste -sd, -)
        echo "build-static.sh: cannot build for $arch: Debian's rustc-web is $want, but the mirror offers $std ${offered:-in no version at all}; the two must match exactly (the $debarch index is probably out of step with amd64 for a while: try again later)" >&2
        exit 3
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "rustc-web=$want" cargo-web "libstd-rust-web-dev=$want" "$std=$want" \
        "gcc-$gnu" "libc6-dev-$debarch-cross" file >/dev/null 2>&1 || true
    # Judge by what is installed, not by apt-get's exit code.
    if ! installed "${packages[@]}" || [ "$(installed_version "$std")" != "$want" ]; then
        echo "build-static.sh: could not install the $arch toolchain (${packages[*]} at $want); see apt-get install output" >&2
        exit 3
    fi
}

# Static and not position-independent, like BusyBox's static build: the
# relocation table of a static PIE alone is over 100 KB, and the 3 MB goal
# with TLS leaves no room for it. The heap, stacks and mappings are still
# placed at random; only the binary's own code and data sit at fixed addresses.
static_flags="-C target-feature=+crt-static -C relocation-model=static"

if [ "$arch" = x86_64 ]; then
    ensure_packages file
    echo "building a static release binary for $target with $(rustc --version)..." >&2
    # With --target, RUSTFLAGS apply only to the target's code: build scripts
    # and proc-macros (run on this host) stay dynamic as they must.
    # Build output goes to stderr so that stdout holds only the report below.
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$static_flags" \
        cargo build --release --locked --target "$target" >&2
else
    ensure_cross_toolchain
    upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
    lower=${target//-/_}
    echo "building a static release binary for $target with $(/usr/bin/rustc --version)..." >&2
    env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        "CARGO_TARGET_${upper}_LINKER=$gnu-gcc" "CC_${lower}=$gnu-gcc" "AR_${lower}=$gnu-ar" \
        RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$static_flags" \
        /usr/bin/cargo build --release --locked --target "$target" >&2
fi

bin="$repo/target/$target/release/ms500-relay"
if [ ! -x "$bin" ]; then
    echo "build-static.sh: the build did not produce $bin" >&2
    exit 1
fi
verdict=$(file -b "$bin")
case $verdict in
    *"statically linked"* | *"static-pie linked"*) ;;
    *)
        echo "build-static.sh: $bin is not statically linked: $verdict" >&2
        exit 1 ;;
esac
case $verdict in
    *"$machine"*) ;;
    *)
        echo "build-static.sh: $bin is not an $machine binary: $verdict" >&2
        exit 1 ;;
esac

bytes=$(stat -c %s "$bin")
echo "target: $target"
echo "file: $verdict"
echo "size: $bytes bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.2f MB", b / 1e6 }'))"
echo "$bin"
