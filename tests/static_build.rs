//! scripts/build-static.sh builds a release binary that needs no shared
//! library at all. Slow (a full release build with LTO), so ignored by
//! default: scripts/test.sh runs it with `--ignored`.

use std::path::Path;
use std::process::{Command, Stdio};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-static.sh");

#[test]
#[ignore = "slow: full static release build; run with --ignored"]
fn build_static_produces_a_static_binary_that_runs() {
    // Run from elsewhere than the repository: the script must not care.
    let out = Command::new(SCRIPT)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-static.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "build-static.sh failed:\n{stdout}");
    print!("{stdout}");

    let last = stdout
        .lines()
        .last()
        .expect("build-static.sh printed nothing");
    let bin = Path::new(last.trim());
    assert!(
        bin.is_absolute(),
        "last line is not an absolute path: {last}"
    );
    let meta = std::fs::metadata(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(meta.is_file());

    // ldd says "not a dynamic executable" for a classic static binary and
    // "statically linked" for a static PIE (what rustc makes with crt-static);
    // `file` says "statically linked" or "static-pie linked".
    let ldd = Command::new("ldd").arg(bin).output();
    let ldd_text = ldd
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    let file_text = Command::new("file")
        .arg("-b")
        .arg(bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let static_by_ldd =
        ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked");
    let static_by_file =
        file_text.contains("statically linked") || file_text.contains("static-pie linked");
    assert!(
        static_by_ldd || static_by_file,
        "{} is not static:\nldd: {ldd_text}\nfile: {file_text}",
        bin.display()
    );
    // No shared library may be listed either way.
    assert!(!ldd_text.contains("=>"), "ldd lists libraries:\n{ldd_text}");

    let version = Command::new(bin)
        .arg("--version")
        .output()
        .expect("run the static binary");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("ms500-relay {}", env!("CARGO_PKG_VERSION"))
    );

    let bytes = meta.len();
    println!(
        "static binary {}: {bytes} bytes ({:.2} MB); ldd: {}",
        bin.display(),
        bytes as f64 / 1e6,
        ldd_text.trim()
    );
}
