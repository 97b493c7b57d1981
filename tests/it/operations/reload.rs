//! Reloading relay.conf (SIGHUP or `ms500-relay reload`) without dropping
//! anything: live settings applied, a broken file refused whole, the reload
//! line naming only what took effect, and `reload` refusing what the relay
//! would refuse.

use std::io::Write;
use std::time::Duration;

use crate::support::{append, broker_and_relay, read_lines, run_bin, Broker, Relay, TempDir, WAIT};

#[test]
fn sighup_applies_live_settings_and_keeps_connections() {
    let (_broker, relay) = broker_and_relay(&[("ACK_MODE", "all")]);
    relay.expect_connected();
    let backend = relay.connect();
    (&backend)
        .write_all(br#"{"type":"IMG","unit":"before"}"#)
        .unwrap();
    assert_eq!(read_lines(&backend, 1, WAIT).len(), 1, "{}", relay.log());

    // Only 10.0.0.1 may connect from now on; the port only at a restart.
    append(&relay.conf, "SOCKET_ALLOW = 10.0.0.1\nSOCKET_PORT = 1\n");
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
    let (_broker, relay) = broker_and_relay(&[("ACK_MODE", "all")]);
    relay.expect_connected();
    append(&relay.conf, "LOG_LEVL = debug\nSOCKET_ALLOW = 10.0.0.1\n");
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
    let (_broker, relay) = broker_and_relay(&[("LOG_LEVEL", "info")]);
    relay.expect_connected();
    append(&relay.conf, "LOG_LEVEL = warn\n");
    relay.signal("HUP");
    relay.expect_log("LOG_LEVEL applied", WAIT);
    let backend = relay.connect();
    (&backend)
        .write_all(br#"{"type":"IMG","unit":"quiet"}"#)
        .unwrap();
    drop(backend);
    // A warning still shows; the info lines of the command do not.
    append(&relay.conf, "NO_SUCH_KEY = 1\n");
    relay.signal("HUP");
    relay.expect_log("relay.conf refused", WAIT);
    assert!(
        !relay.log().contains("accepted IMG for unit quiet"),
        "{}",
        relay.log()
    );
}

/// Finding: the reload line said `DEVICE_SUMMARY_INTERVAL`,
/// `MQTT_MAX_PACKET_BYTES` and `MQTT_PROTOCOL` were applied, and none
/// changed anything. The first two now apply at once; `MQTT_PROTOCOL` is
/// restart-only and named so.
#[test]
fn the_reload_line_names_as_applied_only_what_takes_effect() {
    let (_broker, relay) =
        broker_and_relay(&[("DEVICE_SUMMARY_INTERVAL", "3600"), ("ACK_MODE", "all")]);
    relay.expect_connected();
    relay.expect_subscribed();
    append(
        &relay.conf,
        "DEVICE_SUMMARY_INTERVAL = 1\nMQTT_MAX_PACKET_BYTES = 1024\nMQTT_PROTOCOL = 3.1.1\n",
    );
    relay.signal("HUP");
    // (SOCKET_PORT is named too: the test pinned the port the system picked.)
    relay.expect_log("WARN  SIGHUP: MQTT_PROTOCOL, SOCKET_PORT changed", WAIT);
    let line = relay.log_line("relay.conf reloaded: ", WAIT);
    assert!(
        line.ends_with("reloaded: MQTT_MAX_PACKET_BYTES, DEVICE_SUMMARY_INTERVAL applied"),
        "{line}"
    );

    // The summary line comes every second now, not once an hour.
    relay.expect_log("INFO  devices: 0 known, 0 online", Duration::from_secs(5));
    // A command whose PUBLISH is larger than 1024 bytes is set aside at once.
    let mut backend = relay.connect();
    let big = format!(
        r#"{{"type":"IMG","unit":"big","link":"{}"}}"#,
        "x".repeat(2000)
    );
    backend.write_all(big.as_bytes()).unwrap();
    let lines = read_lines(&backend, 1, WAIT);
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains(r#""status":"error""#)
                && l.contains("set aside")
                && l.contains("MQTT_MAX_PACKET_BYTES")),
        "{lines:?}\n{}",
        relay.log()
    );
    // MQTT_PROTOCOL kept its running value: the device link was not touched.
    assert_eq!(
        relay
            .log()
            .matches("device link connected to broker")
            .count(),
        1,
        "{}",
        relay.log()
    );
}

#[test]
fn reload_checks_the_file_then_signals_the_relay() {
    let broker = Broker::start();
    let dir = TempDir::new("op-reload");
    let pid_file = dir.path().join("relay.pid");
    let relay = Relay::start(broker.port, &[("PID_FILE", &pid_file.to_string_lossy())]);
    relay.expect_connected();
    let conf = relay.conf.to_string_lossy().into_owned();
    append(&relay.conf, "ACK_MODE = errors\n");
    let (code, out, err) = run_bin(&["reload", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reload: sent SIGHUP to relay pid"), "{out}");
    relay.expect_log("ACK_MODE", WAIT);

    append(&relay.conf, "ACK_MODE = sometimes\n");
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

/// Finding: `ms500-relay reload` said "sent SIGHUP" (exit 0) for a file the
/// relay refuses (a missing CA file, an unsafe directory). It runs the
/// start's checks and sends nothing (exit 2).
#[test]
fn reload_sends_nothing_for_a_file_the_relay_would_refuse() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let dir = TempDir::new("reload-refuse");
    let pid_file = dir.path().join("relay.pid");
    let relay = Relay::start(broker.port, &[("PID_FILE", &pid_file.to_string_lossy())]);
    relay.expect_connected();
    let conf = relay.conf.to_string_lossy().into_owned();
    let original = std::fs::read_to_string(&relay.conf).unwrap();

    // A CA file that is not there.
    append(
        &relay.conf,
        "MQTT_TLS = true\nMQTT_CA_FILE = /nonexistent/ms500-ca.pem\n",
    );
    let (code, out, err) = run_bin(&["reload", "-c", &conf], None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("not sent") && err.contains("MQTT_CA_FILE"),
        "{err}"
    );

    // A status file in a directory every user may write to.
    std::fs::write(&relay.conf, &original).unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    append(
        &relay.conf,
        &format!("STATUS_FILE = {}\n", open.join("status.json").display()),
    );
    let (code, out, err) = run_bin(&["reload", "-c", &conf], None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("not sent") && err.contains("STATUS_FILE"),
        "{err}"
    );

    relay.sync_log();
    assert!(!relay.log().contains("SIGHUP"), "{}", relay.log());
    // What the tool refuses, the relay refuses too.
    relay.signal("HUP");
    relay.expect_log("relay.conf refused", WAIT);
    assert!(!open.join("status.json").exists());

    std::fs::write(&relay.conf, &original).unwrap();
    let (code, out, err) = run_bin(&["reload", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
}
