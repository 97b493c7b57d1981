//! The command line: exit codes, usage errors, --help and --version, no
//! panic whatever the arguments, and RUST_LOG.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;

use crate::support;
use crate::support::tools::conf_in;
use crate::support::{run_bin, TempDir, WAIT};

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = run_bin(&["frobnicate"], None);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_bin(&["-c"], None);
    assert_eq!(code, 2);
}

#[test]
fn no_argument_makes_it_panic_non_utf8_or_an_unusable_wait() {
    let bad = OsStr::from_bytes(b"caf\xe9");
    let huge = "9".repeat(400);
    let cases: Vec<Vec<&OsStr>> = vec![
        vec![bad],
        vec![OsStr::new("send"), bad],
        vec![OsStr::new("send"), OsStr::new("-w"), bad],
        vec![OsStr::new("send"), OsStr::new("-w"), OsStr::new("1e20")],
        vec![OsStr::new("send"), OsStr::new("-w"), OsStr::new("1e19")],
        vec![OsStr::new("send"), OsStr::new("-w"), OsStr::new("inf")],
        vec![OsStr::new("send"), OsStr::new("-w"), OsStr::new("nan")],
        vec![OsStr::new("send"), OsStr::new("-w"), OsStr::new("-1")],
        vec![OsStr::new("send"), OsStr::new("-w"), OsStr::new("0x10")],
        vec![OsStr::new("send"), OsStr::new("-w"), OsStr::new(&huge)],
    ];
    for args in cases {
        let (code, _, err) = run_bin(&args, None);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("ms500-relay: ") && err.contains("(see --help)"),
            "{args:?}: {err}"
        );
        if args.contains(&bad) {
            assert!(err.contains("caf\u{fffd}"), "{args:?}: {err}");
        } else {
            assert!(err.contains("-w"), "{args:?}: {err}");
        }
    }
}

#[test]
fn help_and_version() {
    let (code, out, _) = run_bin(&["--help"], None);
    assert_eq!(code, 0);
    for word in ["check-config", "send", "status", "--version"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, out, _) = run_bin(&["--version"], None);
    assert_eq!(code, 0);
    // Version, target, commit and build date (build.rs).
    let version = format!("ms500-relay {} (target ", env!("CARGO_PKG_VERSION"));
    assert!(out.starts_with(&version), "{out}");
    for word in [", commit ", ", built 20"] {
        assert!(out.contains(word), "{out}");
    }
}

#[test]
fn rust_log_wins_over_log_level() {
    let dir = TempDir::new("cli");
    let conf = conf_in(
        dir.path(),
        // Port 1: no broker there.
        "LOG_LEVEL = debug\nSOCKET_PORT = 0\nMQTT_PORT = 1\n",
    );
    let mut child = support::relay_command()
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, lines) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    // Stopped once its warning is out: what it logs until then is the test.
    let mut err = String::new();
    while !err.contains("WARN  cannot connect to broker") {
        match lines.recv_timeout(WAIT) {
            Ok(line) => err.push_str(&(line + "\n")),
            Err(_) => break,
        }
    }
    support::send_signal(child.id(), "TERM");
    assert!(child.wait().is_ok());
    // The rest, up to the end of its stderr.
    while let Ok(line) = lines.recv_timeout(WAIT) {
        err.push_str(&(line + "\n"));
    }
    assert!(err.contains("WARN  cannot connect to broker"), "{err}");
    assert!(!err.contains("INFO") && !err.contains("DEBUG"), "{err}");
}
