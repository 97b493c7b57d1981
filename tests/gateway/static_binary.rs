//! The static x86_64 binary a gateway runs: no library, within the size
//! goal, and it runs.

use std::process::Command;

use crate::artifacts::{file_says, is_static, script_output, MAX_BINARY_BYTES};

#[test]
#[ignore = "slow: static release build; scripts/test.sh runs it"]
fn the_static_x86_64_binary_needs_no_library_is_small_and_runs() {
    let bin = script_output("scripts/build-static.sh", "x86_64");
    let kind = file_says(&bin);
    assert!(is_static(&kind) && kind.contains("x86-64"), "{kind}");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(!ldd.contains("=>"), "ldd lists libraries:\n{ldd}");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size <= MAX_BINARY_BYTES, "{size} bytes: over the 3 MB goal");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!(
        "ms500-relay {} (target ",
        env!("CARGO_PKG_VERSION")
    )));
}
