#!/usr/bin/env bash
# Builds a statically linked release binary of the relay for a gateway:
#
#   scripts/build-static.sh [x86_64|aarch64|armv7|mipsel]...   (default x86_64; from any directory)
#
# Several targets may be named: they are then built by one cargo command,
# which runs their final link-time optimisations (one thread each) side by
# side; scripts/test.sh builds all four that way. The report and path are
# printed for each target in turn.
#
# Runs on a Debian bookworm x86_64 machine. Installs what the target needs
# with apt-get, builds with `-C target-feature=+crt-static`, checks with
# `file` that the result is static and of the right machine, prints its size
# and, as the LAST line of stdout, the absolute path of the (last named)
# target's binary (`bin=$(scripts/build-static.sh armv7 | tail -n1)`).
#
# Targets and the boards they are for (INSTALL.md has the `uname -m` table):
#   x86_64   x86_64-unknown-linux-gnu        PC-class gateways
#   aarch64  aarch64-unknown-linux-gnu       64-bit ARM (i.MX8, RPi 3/4/5 64-bit)
#   armv7    armv7-unknown-linux-gnueabihf   32-bit ARM (i.MX6, AM335x, STM32MP1)
#   mipsel   mipsel-unknown-linux-gnu        MIPS routers (MT7621, OpenWrt)
#
# The route, for every target: Debian's rustc-web/cargo-web (/usr/bin/rustc,
# /usr/bin/cargo) compiles the target's standard library itself from
# Debian's rust-web-src (the std sources of that very rustc, arch all, in
# /usr/lib/rustlib/src/rust) with `cargo -Zbuild-std=std,panic_abort`, and
# links against glibc with the GNU C toolchain from Debian's amd64 index
# (gcc + libc6-dev for x86_64; gcc-ARCH-linux-gnu + libc6-dev-ARCH-cross for
# the others). ring compiles C and assembly with the same compiler.
#
# Why this route:
#   * Every package comes from the amd64 (and arch-all) index of Debian's
#     signed mirror: no foreign dpkg architecture is added, and nothing waits
#     for the armhf or arm64 index to catch up with amd64 (they drift apart
#     for days, and a prebuilt std must match rustc's version exactly; armv7
#     was skipped for a week because of that).
#   * mipsel is a tier-3 target with no prebuilt std anywhere: building std
#     is the only way there.
#   * std built with the release profile (opt-level "z", fat LTO with our
#     code, optimize_for_size) is much smaller than a prebuilt one (optimised
#     for speed): the x86_64 binary is 2.78 MB instead of 3.08 MB with
#     rustup's std, over the 3 MB goal.
#   * One compiler for all four targets, so they are built by one cargo
#     command when several are named, and what the tests run on x86_64 is
#     built as the gateways' binaries are.
#   rustup is not used: it would download std from static.rust-lang.org,
#   which is not among the sources these machines are promised (crates.io and
#   Debian's mirror). -Zbuild-std is unstable: RUSTC_BOOTSTRAP=1 is set for
#   this one cargo command only, never in the environment of the rest of the
#   build or the tests. std's own dependencies (compiler_builtins, libc,
#   hashbrown...) come from crates.io at the versions pinned by
#   rust-web-src's Cargo.lock. The cost: std is compiled once per target
#   (about a minute here); cargo keeps it in the cache's target/ (below),
#   so later builds, from this clone or another, reuse it.
#
# glibc's resolver is linked in statically: MQTT_BROKER host names resolve
# through /etc/hosts and DNS (not through other NSS sources such as LDAP or
# mDNS); an IP address always works. The linker warns about it; that is expected.
#
# Cache, kept between runs and shared by every clone on the machine, in
# $MS500_BUILD_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/ms500-relay):
#   * target/ is cargo's build directory for these builds (unless
#     CARGO_TARGET_DIR is set): std and the dependencies, compiled once per
#     target, are reused by the next build from any clone (emptied when it
#     passes 3 GiB);
#   * bin/TRIPLE-KEY/ms500-relay is a finished binary, KEY the SHA-256 of all
#     that goes into it (src/, build.rs, Cargo.toml, Cargo.lock, this script,
#     the commit and date build.rs records, rustc's and the C compiler's
#     versions, RUSTFLAGS). A target whose key is there is not built again:
#     scripts/test.sh and the tests it runs ask for each binary several times,
#     and an unchanged tree asks again on every run. Delete the folder to
#     start from nothing.
#
# Exit: 0 built; 1 the build failed or its result is not a static binary of
# the target; 2 usage (or not an x86_64 Debian host); 3 the toolchain cannot
# be installed here. Every failure ends with one line on stderr saying why.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
. scripts/lib.sh

usage() {
    echo "usage: $(basename "$0") [x86_64|aarch64|armv7|mipsel]..." >&2
    exit 2
}

# Sets, for one target: target (the Rust triple), machine (what file(1)
# says of its binaries), cc and ar (the C toolchain ring and the link use)
# and c_packages (the Debian packages of that toolchain and C library).
describe() {
    local gnu debarch
    case $1 in
        x86_64 | amd64)
            target=x86_64-unknown-linux-gnu machine="x86-64"
            cc=gcc ar=ar c_packages=(gcc libc6-dev)
            return ;;
        aarch64 | arm64)
            target=aarch64-unknown-linux-gnu machine="ARM aarch64"
            debarch=arm64 gnu=aarch64-linux-gnu ;;
        armv7 | armhf)
            target=armv7-unknown-linux-gnueabihf machine="ARM, EABI5"
            debarch=armhf gnu=arm-linux-gnueabihf ;;
        mipsel | mipsle)
            target=mipsel-unknown-linux-gnu machine="MIPS, MIPS32"
            debarch=mipsel gnu=mipsel-linux-gnu ;;
        *) usage ;;
    esac
    cc=$gnu-gcc ar=$gnu-ar c_packages=("gcc-$gnu" "libc6-dev-$debarch-cross")
}

[ $# -gt 0 ] || set -- x86_64
for arch in "$@"; do describe "$arch"; done
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

# Debian's rustc, the std sources of the same version and the C toolchain
# for $target (c_packages), all from the amd64/all index; installed once:
# later runs find every package in place and go straight on.
ensure_toolchain() {
    local arch=$1
    local packages=(rustc-web cargo-web rust-web-src "${c_packages[@]}" file)
    if installed "${packages[@]}" && [ "$(installed_version rustc-web)" = "$(installed_version rust-web-src)" ]; then
        return 0
    fi
    echo "installing the $arch toolchain from Debian (${packages[*]})..." >&2
    as_root true || { echo "build-static.sh: cannot build for $arch: installing ${packages[*]} needs root or sudo" >&2; exit 3; }
    apt_update
    # std's sources must be those of the very rustc that compiles them.
    local want
    want=$(installed_version rustc-web)
    [ -n "$want" ] || want=$(candidate_version rustc-web)
    if [ -z "$want" ]; then
        echo "build-static.sh: cannot build for $arch: Debian's mirror offers no rustc-web package here" >&2
        exit 3
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "rustc-web=$want" cargo-web "rust-web-src=$want" "${c_packages[@]}" file >/dev/null 2>&1 || true
    # Judge by what is installed, not by apt-get's exit code.
    if ! installed "${packages[@]}" || [ "$(installed_version rust-web-src)" != "$want" ]; then
        local offered
        offered=$(apt-cache madison rust-web-src 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | paste -sd, -)
        echo "build-static.sh: cannot build for $arch: could not install ${packages[*]} with rust-web-src at rustc-web's $want (the mirror offers rust-web-src ${offered:-in no version at all})" >&2
        exit 3
    fi
}

# Static and not position-independent, like BusyBox's static build: the
# relocation table of a static PIE alone is over 100 KB, and the 3 MB goal
# with TLS leaves no room for it. The heap, stacks and mappings are still
# placed at random; only the binary's own code and data sit at fixed addresses.
static_flags="-C target-feature=+crt-static -C relocation-model=static"
# No source file and line of panics and callers in the binary
# (-Zlocation-detail=none, accepted under the same RUSTC_BOOTSTRAP as
# -Zbuild-std): 60 KB less on x86_64.
static_flags="$static_flags -Zlocation-detail=none"
# A panic aborts at once, without formatting a message first
# (-Cpanic=immediate-abort): the relay is built with panic = "abort"
# already, so a panic ends the process either way; what goes is the
# machinery that prints "thread … panicked at …: message", 170 KB on
# x86_64. No input reaches a panic (PROTOCOL.md §5.1); a bug that does
# ends the process with SIGILL, which the watchdog, procd and systemd see
# and restart it on. Debug builds and `cargo test` keep their messages.
static_flags="$static_flags -Zunstable-options -Cpanic=immediate-abort"
# #[derive(Debug)] prints a value's type or variant name only
# (-Zfmt-debug=shallow): 50 KB less. The relay never shows a derived Debug
# output to a person; strings, numbers and errors keep their text.
static_flags="$static_flags -Zfmt-debug=shallow"
# No unwind tables (-Cforce-unwind-tables=no): with the panic above nothing
# ever unwinds, so the tables only took room: 196 KB on mipsel, 29 KB on
# armv7 (its .ARM.exidx), which brought both back under their size goals.
# The C parts (glibc, ring) keep their own; no thread is cancelled.
static_flags="$static_flags -Cforce-unwind-tables=no"
# std's optimize_for_size: smaller sort, formatting and collection code in
# core, alloc and std, the same behaviour (the relay waits on sockets, not
# on those). 200 KB less on x86_64. It replaces std's default features,
# which are only panic-unwind, unused with panic = "abort".
std_features="-Zbuild-std-features=optimize_for_size"

cache=${MS500_BUILD_CACHE:-${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/ms500-relay}
# No writable home (a build user without one): the cache lives in the clone.
mkdir -p "$cache" 2>/dev/null || cache=$repo/target/static-cache
build_dir=${CARGO_TARGET_DIR:-$cache/target}
flags="${RUSTFLAGS:+$RUSTFLAGS }$static_flags"

# What build.rs records as the commit (keep in step with build.rs).
commit_of_tree() {
    if [ -n "${MS500_COMMIT:-}" ]; then
        echo "$MS500_COMMIT"
        return
    fi
    local hash
    hash=$(GIT_OPTIONAL_LOCKS=0 git rev-parse --short=12 HEAD 2>/dev/null) || { echo unknown; return; }
    if [ -n "$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        hash="$hash-dirty"
    fi
    echo "$hash"
}

# The key of this tree's binary for $target: everything that goes into it.
# Sources are hashed by content, so an uncommitted change is a new key.
cache_key() {
    {
        echo "$target|$flags|$std_features|${SOURCE_DATE_EPOCH:-}|$(commit_of_tree)"
        /usr/bin/rustc -vV
        "$cc" --version | head -n1
        find src build.rs Cargo.toml Cargo.lock scripts/build-static.sh -type f -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
}

targets=() names=() toolchain_env=() keys=()
for arch in "$@"; do
    describe "$arch"
    ensure_toolchain "$arch"
    key=$(cache_key)
    keys+=("$key")
    if [ -x "$cache/bin/$target-$key/ms500-relay" ]; then
        continue
    fi
    upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
    lower=${target//-/_}
    targets+=(--target "$target")
    names+=("$target")
    toolchain_env+=("CARGO_TARGET_${upper}_LINKER=$cc" "CC_${lower}=$cc" "AR_${lower}=$ar")
done

# Bounded: every clone adds its own build of the relay to the shared build
# directory, and a flag change a whole std per target. Past 3 GiB (a few
# hundred builds) it is emptied and filled again by this build.
if [ ${#names[@]} -gt 0 ] && [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$build_dir" ]; then
    used_kib=$(du -sk "$build_dir" 2>/dev/null | cut -f1)
    if [ "${used_kib:-0}" -gt $((3 * 1024 * 1024)) ]; then
        echo "build-static.sh: the build cache $build_dir holds over 3 GiB; starting it afresh" >&2
        rm -rf "$build_dir"
    fi
fi

if [ ${#names[@]} -gt 0 ]; then
    echo "building std and a static release binary for ${names[*]} with $(/usr/bin/rustc --version)..." >&2
    # RUSTC_BOOTSTRAP=1 lets this stable rustc accept -Zbuild-std and -Zlocation-detail; set
    # for this command alone. cargo finds std's sources in rustc's sysroot.
    # With --target, RUSTFLAGS apply only to the target's code: build scripts
    # and proc-macros (run on this host) stay dynamic as they must. Build
    # output goes to stderr so that stdout holds only the report below.
    if ! env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 "${toolchain_env[@]}" \
        CARGO_TARGET_DIR="$build_dir" RUSTFLAGS="$flags" \
        /usr/bin/cargo build --release --locked "${targets[@]}" \
        -Zbuild-std=std,panic_abort $std_features >&2; then
        echo "build-static.sh: cargo could not build the relay for ${names[*]} (its errors are above)" >&2
        exit 1
    fi
fi

# Keeps a just-built binary under its key (written aside, then renamed, so a
# concurrent run never finds half a file), and the 4 newest per target.
keep() {
    local built="$build_dir/$target/release/ms500-relay" dir="$cache/bin/$target-$key"
    [ -x "$dir/ms500-relay" ] && return 0
    [ -x "$built" ] || return 0
    mkdir -p "$dir"
    cp "$built" "$dir/ms500-relay.part" && mv "$dir/ms500-relay.part" "$dir/ms500-relay"
    ls -1dt "$cache/bin/$target"-* 2>/dev/null | tail -n +5 | while read -r old; do rm -rf "$old"; done
}

# Checks one target's binary and prints its report, its path last.
report() {
    local bin="$cache/bin/$target-$key/ms500-relay" verdict bytes
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
}

i=0
for arch in "$@"; do
    describe "$arch"
    key=${keys[$i]}
    i=$((i + 1))
    keep
    report
done
