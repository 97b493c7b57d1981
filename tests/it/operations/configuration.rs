//! relay.conf and check-config: the shipped file passes, a bad one exits 2
//! naming file, line and key, every problem is reported at once, and
//! check-config refuses exactly what the run refuses, without leaving a
//! trace; a typo strands neither the relay nor its tools.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::support::tools::{conf_in, refused_by, shared_conf, tool};
use crate::support::{
    append, broker_and_relay, chmod, mkfifo, relay_command, wait_until, Broker, Relay, TempDir,
    WAIT,
};

#[test]
fn check_config_passes_on_the_shipped_relay_conf_and_masks_the_password() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.conf");
    let (code, out, err) = tool(&["check-config"], Path::new(shipped));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("MQTT_PORT = 1883"), "{out}");
    assert!(out.contains("ACK_MODE = none"), "{out}");

    let dir = TempDir::new("cli");
    let conf = conf_in(
        dir.path(),
        "MQTT_PASSWORD = s3cr3t-value\nMQTT_USERNAME = relay\n",
    );
    let (code, out, _) = tool(&["check-config"], &conf);
    assert_eq!(code, 0);
    assert!(out.contains("MQTT_PASSWORD = ***"), "{out}");
    assert!(!out.contains("s3cr3t-value"), "{out}");
}

#[test]
fn bad_configuration_exits_2_naming_file_line_and_key() {
    let dir = TempDir::new("cli");
    let conf = conf_in(dir.path(), "# comment\nMQTT_PORT = 1883\nMQTT_QOS = 7\n");
    refused_by(&["check-config", ""], &conf, &["relay.conf:3", "MQTT_QOS"]);
    let conf = conf_in(dir.path(), "NOT_A_KEY = 1\n");
    refused_by(&[""], &conf, &["relay.conf:1", "NOT_A_KEY"]);
    refused_by(&[""], &dir.path().join("nope.conf"), &["nope.conf"]);
}

#[test]
fn check_config_reports_every_problem_at_once() {
    let dir = TempDir::new("op-all");
    let conf = conf_in(
        dir.path(),
        "LOG_LEVL = debug\nMQTT_PORT = 0\nSPOOL_FILE = /no/such/dir/spool\n",
    );
    let every_problem = ["LOG_LEVL", "MQTT_PORT", "SPOOL_FILE", "3 problem(s)"];
    refused_by(&["check-config"], &conf, &every_problem);
}

#[test]
fn an_error_in_a_key_the_tool_needs_refuses_the_file() {
    let dir = TempDir::new("op-needs");
    let conf = conf_in(dir.path(), "LOG_LEVL = x\nPID_FILE = \"/run/x.pid\n");
    refused_by(&["stop"], &conf, &["PID_FILE: missing closing quote"]);
}

#[test]
fn a_typo_in_relay_conf_leaves_stop_status_and_the_watchdog_working() {
    let (_broker, mut relay) = broker_and_relay(&[
        ("PID_FILE", "{dir}/run/relay.pid"),
        ("STATUS_FILE", "{dir}/run/status.json"),
    ]);
    relay.expect_connected();
    append(&relay.conf, "LOG_LEVL = debug\n");

    let (code, out, err) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("LOG_LEVL: unknown key"), "{err}");

    // A healthy relay is left alone by the watchdog.
    let (code, out, err) = relay.tool(&["watchdog"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        relay.wait_exit(Duration::from_millis(200)).is_none(),
        "{err}"
    );

    let (code, out, err) = relay.tool(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopping relay pid"), "{out}");
    assert!(!out.contains("watchdog:"), "stop speaks for itself: {out}");

    // Stopped, with a broken file: the watchdog does not start one and says why.
    let (code, _, err) = relay.tool(&["watchdog"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be started until"), "{err}");
}

#[test]
fn the_relay_creates_its_run_time_directories_and_check_config_says_so() {
    let broker = Broker::start();
    let dir = TempDir::new("op-dirs");
    let run = dir.path().join("run/ms500-relay");
    let metrics = dir.path().join("metrics/relay.prom");
    let settings = [
        ("PID_FILE", run.join("relay.pid")),
        ("STATUS_FILE", run.join("status.json")),
        ("METRICS_FILE", metrics.clone()),
    ];
    let settings: Vec<(&str, String)> = settings
        .iter()
        .map(|(k, v)| (*k, v.to_string_lossy().into_owned()))
        .collect();
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let text: String = settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    let (code, out, err) = tool(&["check-config"], &conf_in(dir.path(), &text));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is created at start"), "{out}");
    assert!(out.contains("# in effect: client id ms500-relay-"), "{out}");

    let relay = Relay::start(broker.port, &settings);
    relay.expect_connected();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    assert!(wait_until(WAIT, || metrics.exists()));
}

#[test]
fn check_config_refuses_what_the_run_would_refuse() {
    let dir = TempDir::new("op-check");
    let missing = dir.path().join("no-such-dir");
    // The run-time files' directories are created at start (operator.rs);
    // the spool's is persistent storage that must be mounted, not made.
    let spool = missing.join("file");
    let conf = conf_in(dir.path(), &format!("SPOOL_FILE = {}\n", spool.display()));
    refused_by(&["check-config"], &conf, &["SPOOL_FILE", "does not exist"]);
    // And the run refuses it the same way, before anything else.
    refused_by(&[""], &conf, &[]);
    let conf = conf_in(dir.path(), "SOCKET_HOST = 0.0.0.0.0\n");
    refused_by(&["check-config"], &conf, &["SOCKET_HOST"]);
}

/// Finding: a relative `PID_FILE` meant another file from another working
/// directory. A relative path in any file key is refused, by check-config,
/// the start and the tools alike.
#[test]
fn relative_paths_in_file_keys_are_refused() {
    let dir = TempDir::new("relative");
    for key in [
        "PID_FILE",
        "STATUS_FILE",
        "METRICS_FILE",
        "LOG_FILE",
        "SPOOL_FILE",
        "MQTT_CA_FILE",
    ] {
        let conf = shared_conf(dir.path(), "relay.conf", 1, &format!("{key} = run/x\n"));
        refused_by(&["check-config", "run"], &conf, &[key, "absolute"]);
    }
    let conf = shared_conf(dir.path(), "relay.conf", 1, "PID_FILE = run/relay.pid\n");
    refused_by(&["stop"], &conf, &["PID_FILE", "absolute"]);
}

/// The run's exit code for `conf`: what it exits with, or 0 once it
/// listens (then it is stopped). Waits at most [`WAIT`].
fn run_exit(conf: &Path) -> (i32, String) {
    let err_path = conf.with_extension("stderr");
    let err = File::create(&err_path).unwrap();
    let mut child = relay_command()
        .arg("-c")
        .arg(conf)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (status.code().unwrap_or(-1), read());
        }
        if read().contains(" listening on ") || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (0, read());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every name under `dir` with its modification time, for "nothing changed".
fn tree(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        out.push((
            d.clone(),
            std::fs::symlink_metadata(&d)
                .ok()
                .and_then(|m| m.modified().ok()),
        ));
        for e in entries.flatten() {
            let meta = std::fs::symlink_metadata(e.path()).ok();
            if meta.as_ref().is_some_and(|m| m.is_dir()) {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.and_then(|m| m.modified().ok())));
            }
        }
    }
    out.sort();
    out
}

/// Finding: check-config said "valid" where the run refuses (directories
/// that cannot be made, an address not of this machine, a directory at
/// PID_FILE.lock), both hung on a FIFO as the CA file, and both took two
/// keys naming one file, or relay.conf itself. Over a table of such
/// configurations check-config and the run now agree (exit 2 naming the
/// key), check-config leaves every directory as it was, and a good one is
/// accepted by both.
#[test]
fn check_config_and_the_run_agree() {
    let dir = TempDir::new("agree");
    let d = dir.path();
    let conf_path = d.join("relay.conf");
    std::fs::write(d.join("plain"), "a file, not a directory").unwrap();
    std::fs::create_dir(d.join("run")).unwrap();
    std::fs::create_dir(d.join("a-dir")).unwrap();
    std::fs::create_dir(d.join("lockdir.pid.lock")).unwrap();
    mkfifo(&d.join("fifo"));
    mkfifo(&d.join("ca.fifo"));
    let p = |name: &str| d.join(name).display().to_string();
    let conf_s = conf_path.display().to_string();
    let refused: Vec<(&str, String)> = vec![
        (
            "PID_FILE",
            format!("PID_FILE = {}/run/relay.pid", p("plain")),
        ),
        (
            "STATUS_FILE",
            format!("STATUS_FILE = {}/run/status.json", p("plain")),
        ),
        (
            "METRICS_FILE",
            format!("METRICS_FILE = {}/run/relay.prom", p("plain")),
        ),
        (
            "LOG_FILE",
            format!("LOG_FILE = {}/run/relay.log", p("plain")),
        ),
        (
            "SOCKET_PATH",
            format!("SOCKET_PATH = {}/run/relay.sock", p("plain")),
        ),
        ("SOCKET_HOST", "SOCKET_HOST = 192.0.2.1".to_string()),
        ("PID_FILE", format!("PID_FILE = {}", p("lockdir.pid"))),
        (
            "MQTT_CA_FILE",
            format!("MQTT_TLS = true\nMQTT_CA_FILE = {}", p("ca.fifo")),
        ),
        ("STATUS_FILE", format!("STATUS_FILE = {}", p("fifo"))),
        ("STATUS_FILE", "STATUS_FILE = /dev/null".to_string()),
        ("STATUS_FILE", format!("STATUS_FILE = {}", p("a-dir"))),
        ("LOG_FILE", format!("LOG_FILE = {}", p("fifo"))),
        ("METRICS_FILE", format!("METRICS_FILE = {}", p("a-dir"))),
        ("PID_FILE", format!("PID_FILE = {}", p("a-dir"))),
        ("SPOOL_FILE", format!("SPOOL_FILE = {}", p("a-dir"))),
        ("SPOOL_FILE", format!("SPOOL_FILE = {}", p("fifo"))),
        ("STATUS_FILE", format!("STATUS_FILE = {conf_s}")),
        ("LOG_FILE", format!("LOG_FILE = {conf_s}")),
        (
            "STATUS_FILE",
            format!("PID_FILE = {r}/same\nSTATUS_FILE = {r}/same", r = p("run")),
        ),
        (
            "SPOOL_FILE",
            format!(
                "PID_FILE = {r}/relay.pid\nSPOOL_FILE = {r}/relay.pid.lock",
                r = p("run")
            ),
        ),
        (
            "METRICS_FILE",
            format!(
                "STATUS_FILE = {r}/status\nMETRICS_FILE = {r}/status",
                r = p("run")
            ),
        ),
        (
            "SOCKET_PATH",
            format!("STATUS_FILE = {r}/s\nSOCKET_PATH = {r}/s", r = p("run")),
        ),
    ];
    let write = |lines: &str| {
        std::fs::write(
            &conf_path,
            format!("MQTT_PORT = 1\nSOCKET_PORT = 0\nSOCKET_ALLOW_USERS = root\n{lines}\n"),
        )
        .unwrap();
        chmod(&conf_path, 0o600);
    };
    for (key, lines) in &refused {
        write(lines);
        let before = tree(d);
        let started = Instant::now();
        let (code, out, err) = tool(&["check-config"], &conf_path);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{lines}: took {:?}",
            started.elapsed()
        );
        assert_eq!(code, 2, "check-config with {lines}: {out}{err}");
        assert!(err.contains(key), "check-config with {lines}: {err}");
        assert_eq!(tree(d), before, "check-config with {lines} changed files");
        let (code, err) = run_exit(&conf_path);
        assert_eq!(code, 2, "the run with {lines}: {err}");
        assert!(err.contains(key), "the run with {lines}: {err}");
        let _ = std::fs::remove_file(conf_path.with_extension("stderr"));
    }
    // A good configuration, with directories still to be made: both accept it.
    write(&format!(
        "PID_FILE = {r}/new/relay.pid\nSTATUS_FILE = {r}/new/status.json\nSPOOL_FILE = {r}/spool",
        r = p("run")
    ));
    let (code, out, err) = tool(&["check-config"], &conf_path);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is created at start"), "{out}");
    assert!(
        !d.join("run/new").exists(),
        "check-config made no directory"
    );
    let (code, err) = run_exit(&conf_path);
    assert_eq!(code, 0, "{err}");
    assert!(d.join("run/new").is_dir());
}
