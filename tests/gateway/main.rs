//! The gateway tests, a binary of their own: the relay as a gateway runs
//! it. The static binary (`static_binary`); a root holding nothing but
//! BusyBox and that binary, where the README's crontab line keeps the
//! relay running, where the broker's name resolves through a DNS server
//! (for each target's binary, under qemu-user) and where INSTALL.md works
//! as written (`busybox_root`); and the packages a gateway installs from
//! (`packages`). Slow (release builds with LTO, a chroot), so ignored by
//! default: scripts/test.sh runs them with `--ignored` after building each
//! target once. `MS500_GATEWAY_ARCH` (x86_64, aarch64, armv7, mipsel) picks
//! the target of the package and DNS tests; `MS500_RELAY_EXE` its runner.

#[path = "../support/mod.rs"]
mod support;

mod artifacts;
mod busybox_root;
mod dns;
mod packages;
mod root;
mod static_binary;
