//! What a test needs of the machine: root, libfaketime, the debug build. A
//! test whose prerequisite is missing fails with the reason ([`require`]),
//! never passes without testing.

use std::path::Path;

use super::{relay_words, TempDir, BIN};

/// Whether this is a CI run (`CI=true`), where every prerequisite is present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails the test with `why` when a prerequisite is missing: a test that
/// cannot test must never pass. Tests that need root (mount, chown to
/// another user, chroot) are also `#[ignore]`d with the reason, since
/// developers rarely run tests as root; scripts/test.sh (CI) runs as root
/// and runs them with `--ignored`. Everything else they need is a package
/// scripts/test.sh installs.
#[track_caller]
pub fn require(present: bool, why: &str) {
    if present {
        return;
    }
    if in_ci() {
        panic!("prerequisite missing in CI: {why}");
    }
    panic!("prerequisite missing: {why} (scripts/test.sh installs the packages and runs as root)");
}

/// Whether the tests run as root: a file they create is root's.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("whoami");
    let probe = dir.path().join("probe");
    std::fs::write(&probe, "").expect("write a probe file");
    std::fs::metadata(&probe)
        .expect("stat the probe file")
        .uid()
        == 0
}

/// Whether the relay under test is this machine's own debug build (so
/// LD_PRELOAD tricks such as libfaketime work on it).
pub fn testing_own_build() -> bool {
    relay_words() == [BIN.to_string()]
}

/// libfaketime's preload library, when installed.
pub fn faketime_lib() -> Option<String> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}
