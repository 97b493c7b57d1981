//! An operator's day (issue 23): relay.conf reloaded by SIGHUP without
//! dropping anything, a typo that cannot strand the relay or its tools,
//! `status` that tells the truth, log lines never torn or silently lost,
//! `send` saying what happened, and `--version` saying what was built.

use std::io::Write;
use std::time::Duration;

use crate::support::{
    read_json, read_lines, read_text, run_bin, wait_until, Broker, Relay, TempDir, Tmpfs, WAIT,
};

/// Appends `lines` to the relay's relay.conf (the last value of a key wins).
fn append_conf(relay: &Relay, lines: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&relay.conf)
        .expect("relay.conf opens");
    file.write_all(lines.as_bytes())
        .expect("relay.conf written");
}

#[test]
fn sighup_applies_live_settings_and_keeps_connections() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("ACK_MODE", "all")]);
    relay.expect_connected();
    let backend = relay.connect();
    (&backend)
        .write_all(br#"{"type":"IMG","unit":"before"}"#)
        .unwrap();
    assert_eq!(read_lines(&backend, 1, WAIT).len(), 1, "{}", relay.log());

    // Only 10.0.0.1 may connect from now on; the port only at a restart.
    append_conf(&relay, "SOCKET_ALLOW = 10.0.0.1\nSOCKET_PORT = 1\n");
    relay.signal("HUP");
    relay.expect_log("relay.conf reloaded: SOCKET_ALLOW applied", WAIT);
    relay.expect_log(
        "SOCKET_PORT changed in relay.conf but only apply at a restart",
        WAIT,
    );

    // The connection open before the reload goes on; a new one is refused.
    (&backend)
        .write_all(br#"{"type":"IMG","unit":"after"}"#)
        .unwrap();
    let lines = read_lines(&backend, 1, WAIT);
    assert!(lines[0].contains("\"after\""), "{lines:?}");
    let _late = relay.connect();
    relay.expect_log("not in SOCKET_ALLOW", WAIT);
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_configuration() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("ACK_MODE", "all")]);
    relay.expect_connected();
    append_conf(&relay, "LOG_LEVL = debug\nSOCKET_ALLOW = 10.0.0.1\n");
    relay.signal("HUP");
    relay.expect_log(
        "relay.conf refused, the running configuration is kept",
        WAIT,
    );
    assert!(
        relay.log().contains("LOG_LEVL: unknown key"),
        "{}",
        relay.log()
    );
    // Nothing of the refused file applied: loopback is still let in.
    let backend = relay.connect();
    (&backend)
        .write_all(br#"{"type":"IMG","unit":"kept"}"#)
        .unwrap();
    assert_eq!(read_lines(&backend, 1, WAIT).len(), 1, "{}", relay.log());
    assert_eq!(
        relay.log().matches("relay.conf refused").count(),
        1,
        "the error is logged once"
    );
}

#[test]
fn sighup_changes_the_log_level() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("LOG_LEVEL", "info")]);
    relay.expect_connected();
    append_conf(&relay, "LOG_LEVEL = warn\n");
    relay.signal("HUP");
    relay.expect_log("LOG_LEVEL applied", WAIT);
    let backend = relay.connect();
    (&backend)
        .write_all(br#"{"type":"IMG","unit":"quiet"}"#)
        .unwrap();
    drop(backend);
    // A warning still shows; the info lines of the command do not.
    append_conf(&relay, "NO_SUCH_KEY = 1\n");
    relay.signal("HUP");
    relay.expect_log("relay.conf refused", WAIT);
    assert!(
        !relay.log().contains("accepted IMG for unit quiet"),
        "{}",
        relay.log()
    );
}

#[test]
fn a_typo_in_relay_conf_leaves_stop_status_and_the_watchdog_working() {
    let broker = Broker::start();
    let dir = TempDir::new("op-typo");
    let pid_file = dir.path().join("run/relay.pid");
    let status_file = dir.path().join("run/status.json");
    let mut relay = Relay::start(
        broker.port,
        &[
            ("PID_FILE", &pid_file.to_string_lossy()),
            ("STATUS_FILE", &status_file.to_string_lossy()),
        ],
    );
    relay.expect_connected();
    append_conf(&relay, "LOG_LEVL = debug\n");
    let conf = relay.conf.to_string_lossy().into_owned();

    let (code, out, err) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("LOG_LEVL: unknown key"), "{err}");

    // A healthy relay is left alone by the watchdog.
    let (code, out, err) = run_bin(&["watchdog", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        relay.wait_exit(Duration::from_millis(200)).is_none(),
        "{err}"
    );

    let (code, out, err) = run_bin(&["stop", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopping relay pid"), "{out}");
    assert!(!out.contains("watchdog:"), "stop speaks for itself: {out}");

    // Stopped, with a broken file: the watchdog does not start one and says why.
    let (code, _, err) = run_bin(&["watchdog", "-c", &conf], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be started until"), "{err}");
}

#[test]
fn an_error_in_a_key_the_tool_needs_refuses_the_file() {
    let dir = TempDir::new("op-needs");
    let conf = dir.path().join("relay.conf");
    std::fs::write(&conf, "LOG_LEVL = x\nPID_FILE = \"/run/x.pid\n").unwrap();
    let (code, _, err) = run_bin(&["stop", "-c", &conf.to_string_lossy()], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PID_FILE: missing closing quote"), "{err}");
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
    let conf = dir.path().join("relay.conf");
    let text: String = settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    std::fs::write(&conf, &text).unwrap();
    let (code, out, err) = run_bin(&["check-config", "-c", &conf.to_string_lossy()], None);
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
fn check_config_reports_every_problem_at_once() {
    let dir = TempDir::new("op-all");
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        "LOG_LEVL = debug\nMQTT_PORT = 0\nSPOOL_FILE = /no/such/dir/spool\n",
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &conf.to_string_lossy()], None);
    assert_eq!(code, 2, "{err}");
    for needle in ["LOG_LEVL", "MQTT_PORT", "SPOOL_FILE", "3 problem(s)"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn reload_checks_the_file_then_signals_the_relay() {
    let broker = Broker::start();
    let dir = TempDir::new("op-reload");
    let pid_file = dir.path().join("relay.pid");
    let relay = Relay::start(broker.port, &[("PID_FILE", &pid_file.to_string_lossy())]);
    relay.expect_connected();
    let conf = relay.conf.to_string_lossy().into_owned();
    append_conf(&relay, "ACK_MODE = errors\n");
    let (code, out, err) = run_bin(&["reload", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reload: sent SIGHUP to relay pid"), "{out}");
    relay.expect_log("ACK_MODE", WAIT);

    append_conf(&relay, "ACK_MODE = sometimes\n");
    let (code, _, err) = run_bin(&["reload", "-c", &conf], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ACK_MODE") && err.contains("not sent"),
        "{err}"
    );
    relay.sync_log();
    assert_eq!(relay.log().matches("relay.conf reloaded").count(), 1);
    assert!(
        !relay.log().contains("relay.conf refused"),
        "{}",
        relay.log()
    );
}

/// A relay with PID_FILE and STATUS_FILE (rarely refreshed: every change
/// seen in the file is one written at the change), and its relay.conf.
fn relay_with_status(broker: &Broker, dir: &TempDir) -> (Relay, String, std::path::PathBuf) {
    let pid_file = dir.path().join("relay.pid");
    let status_file = dir.path().join("status.json");
    let relay = Relay::start(
        broker.port,
        &[
            ("PID_FILE", &pid_file.to_string_lossy()),
            ("STATUS_FILE", &status_file.to_string_lossy()),
            ("STATUS_INTERVAL", "600"),
            ("SPOOL_FILE", &dir.path().join("spool").to_string_lossy()),
        ],
    );
    let conf = relay.conf.to_string_lossy().into_owned();
    (relay, conf, status_file)
}

#[test]
fn status_follows_the_broker_at_once_and_a_stopped_relay_says_so() {
    let broker = Broker::start();
    let dir = TempDir::new("op-status");
    let (relay, conf, status_file) = relay_with_status(&broker, &dir);
    relay.expect_connected();
    // STATUS_INTERVAL is 600 s: only the change itself writes the snapshot.
    assert!(
        wait_until(WAIT, || read_json(&status_file)["broker"]["connected"]
            == true),
        "{}",
        read_text(&status_file)
    );
    let snapshot = read_json(&status_file);
    assert_eq!(snapshot["state"], "running");
    assert_eq!(snapshot["spool"]["ok"], true, "{snapshot}");
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}");

    let (code, out, err) = run_bin(&["stop", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STOPPED"), "{out}");
    assert_eq!(read_json(&status_file)["state"], "stopped");
}

#[test]
fn status_of_a_killed_relay_is_not_running_at_once() {
    let broker = Broker::start();
    let dir = TempDir::new("op-killed");
    let (mut relay, conf, _) = relay_with_status(&broker, &dir);
    relay.expect_connected();
    assert_eq!(run_bin(&["status", "-c", &conf], None).0, 0);
    relay.crash();
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT RUNNING"), "{out}");
}

/// Finding: `status` said `device link: NOT subscribed` for a whole
/// `STATUS_INTERVAL` after it subscribed, at start and after a broker
/// return. Every change of the device link writes the snapshot at once.
#[test]
fn status_shows_the_device_link_as_it_is_within_a_second_at_start_and_after_a_broker_return() {
    let mut broker = Broker::start();
    let dir = TempDir::new("op-subscribed");
    let (relay, conf, status_file) = relay_with_status(&broker, &dir);
    let subscribed = || read_json(&status_file)["device_link"]["subscribed"] == true;
    relay.expect_subscribed();
    // STATUS_INTERVAL is 600 s: only the change itself writes the snapshot.
    assert!(
        wait_until(Duration::from_secs(1), subscribed),
        "{}",
        read_text(&status_file)
    );
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("device link: subscribed"), "{out}");

    broker.stop();
    assert!(
        wait_until(Duration::from_secs(2), || !subscribed()),
        "{}",
        read_text(&status_file)
    );
    broker.restart();
    relay.expect_subscribed_times(2);
    assert!(
        wait_until(Duration::from_secs(1), subscribed),
        "{}\n{}",
        read_text(&status_file),
        relay.log()
    );
    let (_, out, _) = run_bin(&["status", "-c", &conf], None);
    assert!(out.contains("device link: subscribed"), "{out}");
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_full_log_disk_loses_whole_lines_and_says_how_many_afterwards() {
    let broker = Broker::start();
    let dir = TempDir::new("op-logfull");
    let fs = Tmpfs::mount(dir.path(), 256, false);
    let log = fs.dir.join("relay.log");
    let relay = Relay::spawn(
        broker.port,
        &[
            ("LOG_FILE", &log.to_string_lossy()),
            ("LOG_MAX_BYTES", "16777216"),
        ],
    );
    assert!(wait_until(WAIT, || read_text(&log).contains("connected to broker")));
    fs.fill_leaving(8);
    let mut backend = relay.connect();
    let burst: String = (0..400)
        .map(|i| {
            format!(
                "{{\"type\":\"IMG\",\"unit\":\"full-{i:04}-{}\"}}",
                "x".repeat(40)
            )
        })
        .collect();
    backend.write_all(burst.as_bytes()).unwrap();
    // The relay writes the log in batches at most 200 ms apart: the burst
    // is logged (or lost) within a second.
    std::thread::sleep(Duration::from_secs(1));
    fs.free();
    backend
        .write_all(br#"{"type":"IMG","unit":"after-full"}"#)
        .unwrap();
    assert!(
        wait_until(WAIT, || read_text(&log).contains("unit after-full")),
        "{}",
        relay.log()
    );
    let text = read_text(&log);
    assert!(text.contains("log lines were lost"), "{text}");
    for line in text.lines() {
        let level = line.get(25..30).unwrap_or("");
        assert!(
            line.starts_with("20") && ["INFO ", "WARN ", "ERROR", "DEBUG"].contains(&level),
            "a torn line: {line:?}"
        );
    }
}

#[test]
fn syslog_out_of_reach_falls_back_instead_of_exiting() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("LOG_SYSLOG", "true")]);
    if !std::path::Path::new("/dev/log").exists() {
        relay.expect_log("cannot reach syslog at /dev/log", WAIT);
        relay.expect_log("trying syslog again every 10 s", WAIT);
    }
    relay.expect_connected();
}

#[test]
fn send_says_the_relay_refused_it_and_which_file_it_read() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("SOCKET_ALLOW", "10.0.0.1")]);
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, _, err) = run_bin(&["send", "-c", &conf, r#"{"type":"IMG","unit":"u"}"#], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("closed the connection without a word"),
        "{err}"
    );
    assert!(!err.contains("broker"), "the broker is not to blame: {err}");
    assert!(err.contains(&format!("configuration from {conf}")), "{err}");
}

#[test]
fn send_tells_no_listener_from_a_wrong_peer() {
    let dir = TempDir::new("op-send");
    let conf = dir.path().join("relay.conf");
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stranger.local_addr().unwrap().port();
    std::fs::write(&conf, format!("SOCKET_PORT = {port}\n")).unwrap();
    let conf = conf.to_string_lossy().into_owned();
    let talker = std::thread::spawn(move || {
        let (mut peer, _) = stranger.accept().unwrap();
        peer.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        // Reads what send writes until it gives up, as a server would.
        let _ = std::io::copy(&mut peer, &mut std::io::sink());
    });
    let (code, _, err) = run_bin(
        &[
            "send",
            "-c",
            &conf,
            "-w",
            "1",
            r#"{"type":"IMG","unit":"u"}"#,
        ],
        None,
    );
    talker.join().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not the relay"), "{err}");
    // The listener is gone now: nobody listens on the port.
    let (code, _, err) = run_bin(&["send", "-c", &conf, r#"{"type":"IMG","unit":"u"}"#], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing listens at"), "{err}");
}

#[test]
fn the_watchdog_log_is_timestamped_bounded_and_says_a_repeated_failure_once() {
    let dir = TempDir::new("op-wdlog");
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "PID_FILE = {0}/relay.pid\nSTATUS_FILE = {0}/status.json\nLOG_LEVL = debug\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // Cron's `>>watchdog.log 2>&1`, already past the bound.
    let log = dir.path().join("watchdog.log");
    std::fs::write(&log, "old line\n".repeat(40_000)).unwrap();
    let cron = || {
        let out = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        crate::support::relay_command()
            .args(["watchdog", "-c"])
            .arg(&conf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(cron(), Some(2));
    let first = read_text(&log);
    assert!(first.len() < 10_000, "rotated: {} bytes", first.len());
    assert!(read_text(&dir.path().join("watchdog.log.1")).starts_with("old line"));
    assert!(first.contains("LOG_LEVL: unknown key"), "{first}");
    assert!(first.starts_with("20"), "a timestamp first: {first}");
    // The same failure a minute later: not written again within the hour.
    assert_eq!(cron(), Some(2));
    assert_eq!(read_text(&log), first);
}

#[test]
fn status_says_relay_conf_changed_until_a_reload_takes_it() {
    let broker = Broker::start();
    let dir = TempDir::new("op-changed");
    let (relay, conf, status_file) = relay_with_status(&broker, &dir);
    relay.expect_connected();
    assert_eq!(read_json(&status_file)["config_changed"], false);
    // A whole second later, so the modification time differs on any file system.
    std::thread::sleep(Duration::from_millis(1100));
    append_conf(&relay, "ACK_MODE = errors\n");
    relay.signal("USR1");
    assert!(wait_until(WAIT, || read_json(&status_file)
        ["config_changed"]
        == true));
    let (_, out, _) = run_bin(&["status", "-c", &conf], None);
    assert!(out.contains("changed since the relay read it"), "{out}");
    relay.signal("HUP");
    relay.expect_log("relay.conf reloaded", WAIT);
    assert!(wait_until(WAIT, || read_json(&status_file)
        ["config_changed"]
        == false));
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_failing_spool_shows_in_the_status_file_the_metrics_and_the_exit_code() {
    let broker = Broker::start();
    let dir = TempDir::new("op-spoolfull");
    let fs = Tmpfs::mount(dir.path(), 256, false);
    let status_file = dir.path().join("status.json");
    let metrics = dir.path().join("relay.prom");
    let relay = Relay::start(
        broker.port,
        &[
            ("SPOOL_FILE", &fs.dir.join("spool.bin").to_string_lossy()),
            ("STATUS_FILE", &status_file.to_string_lossy()),
            ("METRICS_FILE", &metrics.to_string_lossy()),
            ("STATUS_INTERVAL", "600"),
        ],
    );
    relay.expect_connected();
    fs.fill_leaving(8);
    let mut backend = relay.connect();
    let burst: String = (0..500)
        .map(|i| {
            format!(
                "{{\"type\":\"IMG\",\"unit\":\"s-{i:04}-{}\"}}",
                "x".repeat(60)
            )
        })
        .collect();
    let _ = backend.write_all(burst.as_bytes());
    relay.expect_log("cannot be written", WAIT);
    // Written at the change itself (STATUS_INTERVAL is 600 s).
    assert!(
        wait_until(WAIT, || read_json(&status_file)["spool"]["ok"] == false),
        "{}",
        read_text(&status_file)
    );
    let spool = read_json(&status_file)["spool"].clone();
    assert!(spool["failing_since_unix"].is_u64(), "{spool}");
    assert!(
        spool["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "{spool}"
    );
    assert!(read_text(&metrics).contains("ms500_relay_spool_failing 1"));
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, _) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILING"), "{out}");
}
