//! The operator's view: exit codes, check-config, send, --help, --version.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;

use crate::support;
use crate::support::{run_bin, Broker, Relay, Subscriber, TempDir, WAIT};

fn write_conf(dir: &TempDir, text: &str) -> String {
    let p = dir.path().join("relay.conf");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn check_config_passes_on_the_shipped_relay_conf_and_masks_the_password() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.conf");
    let (code, out, err) = run_bin(&["check-config", "-c", shipped], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("MQTT_PORT = 1883"), "{out}");
    assert!(out.contains("ACK_MODE = none"), "{out}");

    let dir = TempDir::new("cli");
    let conf = write_conf(
        &dir,
        "MQTT_PASSWORD = s3cr3t-value\nMQTT_USERNAME = relay\n",
    );
    let (code, out, _) = run_bin(&["check-config", "-c", &conf], None);
    assert_eq!(code, 0);
    assert!(out.contains("MQTT_PASSWORD = ***"), "{out}");
    assert!(!out.contains("s3cr3t-value"), "{out}");
}

#[test]
fn bad_configuration_exits_2_naming_file_line_and_key() {
    let dir = TempDir::new("cli");
    let conf = write_conf(&dir, "# comment\nMQTT_PORT = 1883\nMQTT_QOS = 7\n");
    for args in [vec!["check-config", "-c", &conf], vec!["-c", &conf]] {
        let (code, _, err) = run_bin(&args, None);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("relay.conf:3"), "{err}");
        assert!(err.contains("MQTT_QOS"), "{err}");
    }
    let conf = write_conf(&dir, "NOT_A_KEY = 1\n");
    let (code, _, err) = run_bin(&["-c", &conf], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("relay.conf:1") && err.contains("NOT_A_KEY"),
        "{err}"
    );

    let missing = dir.path().join("nope.conf");
    let (code, _, err) = run_bin(&["-c", missing.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope.conf"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = run_bin(&["frobnicate"], None);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_bin(&["-c"], None);
    assert_eq!(code, 2);
}

/// Runs the binary with `args` (not necessarily UTF-8); its exit code and stderr.
fn run_os(args: &[&OsStr]) -> (Option<i32>, String) {
    let out = support::relay_command()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run relay binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
        let (code, err) = run_os(&args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(code, Some(2), "{args:?}: {err}");
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
fn a_taken_port_exits_4() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut relay = Relay::spawn(1, &[("SOCKET_PORT", &port.to_string())]);
    let status = relay
        .wait_exit(WAIT)
        .expect("relay exits when its port is taken");
    assert_eq!(status.code(), Some(4), "log:\n{}", relay.log());
    assert!(relay.log().contains("cannot listen"), "{}", relay.log());
}

#[test]
fn send_delivers_arguments_and_stdin_and_prints_replies() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("ACK_MODE", "all")]);
    let conf = relay.conf.to_str().unwrap().to_string();
    let a = r#"{"type":"IMG","unit":"s1","id":1}"#;
    let b = r#"{"type":"RSR","unit":"s1","id":2}"#;
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "2", a, b], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub.recv(WAIT).unwrap().payload, a.as_bytes());
    assert_eq!(sub.recv(WAIT).unwrap().payload, b.as_bytes());
    assert!(
        out.contains(r#""status":"ok""#) && out.contains(r#""id":2"#),
        "{out}"
    );

    let c = r#"{"type":"FRS","unit":"s1","reset_level":1}"#;
    let (code, _, err) = run_bin(&["send", "-c", &conf, "-w", "0.5"], Some(c.as_bytes()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub.recv(WAIT).unwrap().payload, c.as_bytes());
}

#[test]
fn send_without_a_relay_fails_with_exit_1() {
    let dir = TempDir::new("cli");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = write_conf(&dir, &format!("SOCKET_PORT = {port}\n"));
    let (code, _, err) = run_bin(&["send", "-c", &conf, "{}"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let broker = Broker::start();
    let mut relay = Relay::start(broker.port, &[]);
    relay.expect_connected();
    relay.signal("TERM");
    let status = relay.wait_exit(WAIT).expect("relay stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", relay.log());
}

#[test]
fn rust_log_wins_over_log_level() {
    let dir = TempDir::new("cli");
    let conf = write_conf(
        &dir,
        // Port 1: no broker there.
        "LOG_LEVEL = debug\nSOCKET_PORT = 0\nMQTT_PORT = 1\n",
    );
    let mut child = support::relay_command()
        .args(["-c", &conf])
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
