//! Hostile input, from a backend or a device: JSON built to hurt is refused
//! with a reason, a device cannot forge a log line or a status line, and
//! bidi, zero-width and C1 characters are shown escaped everywhere.

use std::io::Write;
use std::time::Duration;

use rumqttc::QoS;

use crate::support;
use crate::support::{
    broker_and_relay, device_reply, json_line, publish, read_lines, relay_with_subscriber, run_bin,
    showing_heartbeats, wait_until, Broker, Relay, Subscriber, ANY_COMMAND, COMMANDS, VALID, WAIT,
};

#[test]
fn hostile_json_is_refused_with_a_reason_and_never_reaches_the_broker() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("ACK_MODE", "errors")]);
    let mut s = relay.connect();
    let deep = format!(
        r#"{{"type":"CFG","unit":"u","configs":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (deep.into_bytes(), "nesting deeper than 128"),
        (
            br#"{"type":"FRS","unit":"u","reset_level":1e999}"#.to_vec(),
            "out of range",
        ),
        (
            br#"{"type":"CDN","unit":"u","coordinates":[[1e9990,0]]}"#.to_vec(),
            "out of range",
        ),
        (
            br#"{"type":"FRS","unit":"u","reset_level":123456789012345678901234567890}"#.to_vec(),
            "reset_level",
        ),
        (
            br#"{"type":"IMG","unit":"ok","unit":"evil/x"}"#.to_vec(),
            r#"duplicate field "unit""#,
        ),
        (
            br#"{"type":"IMG","type":"FRS","unit":"ok"}"#.to_vec(),
            r#"duplicate field "type""#,
        ),
        (
            br#"{"type":"IMG","unit":"../../x"}"#.to_vec(),
            "contains '/'",
        ),
        (
            br#"{"type":"IMG","unit":"a\u002fb"}"#.to_vec(),
            "contains '/'",
        ),
        (
            br#"{"type":"IMG","unit":"a\u0000b"}"#.to_vec(),
            "control character",
        ),
        (
            b"{\"type\":\"IMG\",\"unit\":\"ok\",\"x\":\"\x00\"}".to_vec(),
            "invalid JSON",
        ),
        (
            b"{\"type\":\"IMG\",\"unit\":\"ok\",\"x\":\"\xc0\xaf\"}".to_vec(),
            "invalid UTF-8",
        ),
        (
            b"{\"type\":\"IMG\",\"unit\":\"ok\",\"x\":\"\xed\xa0\x80\"}".to_vec(),
            "invalid UTF-8",
        ),
    ];
    for (i, (input, reason)) in cases.iter().enumerate() {
        s.write_all(input).unwrap();
        s.write_all(b"\n").unwrap();
        s.write_all(VALID.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let m = sub.recv(WAIT).unwrap_or_else(|| {
            panic!("valid line after {:?} lost", String::from_utf8_lossy(input))
        });
        assert_eq!(m.payload, VALID.as_bytes(), "a hostile value was published");
        assert_eq!(m.topic, "/service/ms500/ok/socket");
        let line = support::read_lines(&s, 1, WAIT);
        let error: Option<String> = line
            .first()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["error"].as_str().map(str::to_string));
        assert!(
            error.as_deref().is_some_and(|e| e.contains(reason)),
            "{line:?} should give the reason {reason}"
        );
        // The log has the first ten of a minute (remote input is rate-limited).
        if i < 10 {
            relay.expect_log(reason, WAIT);
        }
    }
    sub.assert_silent(Duration::from_millis(300));
}

#[test]
fn device_text_cannot_forge_log_lines() {
    let (broker, relay) = broker_and_relay(&[("LOG_LEVEL", "debug")]);
    relay.expect_subscribed();
    support::publish(
        broker.port,
        "/device/ms500/camX/online",
        br#"{"ip":"1.2.3.4\nERROR forged line","network":"wifi\r"}"#,
        rumqttc::QoS::AtMostOnce,
    );
    relay.expect_log("heartbeat camX", WAIT);
    let log = relay.log();
    assert!(
        log.lines().all(|l| !l.starts_with("ERROR forged")),
        "a device forged a log line:\n{log}"
    );
    assert!(
        log.contains(r"1.2.3.4\nERROR forged line"),
        "shown escaped:\n{log}"
    );
}

/// Finding 4 of issue 22: a device cannot forge status lines. With status
/// lines on, each reply comes wrapped and names its unit; a reply holding a
/// raw newline or two values is dropped and counted, whatever ACK_MODE.
#[test]
fn a_device_reply_cannot_pass_for_a_status_line() {
    let (broker, relay) = broker_and_relay(&[("ACK_MODE", "errors")]);
    relay.expect_subscribed();
    let mut s = relay.connect();
    s.write_all(br#"{"type":"SCS","unit":"cam-01"}"#).unwrap();
    s.write_all(br#"{"type":"AIM","unit":"cam-02","id":7}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-01", WAIT);
    let error = read_lines(&s, 1, WAIT);
    assert_eq!(json_line(&error[0])["status"], "error", "{error:?}");
    let forged = "{\"fw\":1}\n{\"status\":\"ok\",\"type\":\"AIM\",\"unit\":\"cam-02\",\"id\":7}";
    let two = r#"{"fw":1}{"status":"ok","type":"AIM","unit":"cam-02","id":7}"#;
    let honest = r#"{"status":"ok","type":"AIM","unit":"cam-02","id":7}"#;
    for payload in [forged, two, honest] {
        device_reply(broker.port, "cam-01", payload.as_bytes());
    }
    relay.expect_log_count("reply from unit cam-01 dropped", 2, WAIT);
    let lines = read_lines(&s, 2, Duration::from_secs(2));
    assert_eq!(
        lines,
        [format!(r#"{{"reply":{honest},"unit":"cam-01"}}"#)],
        "only the honest reply, wrapped, byte-exact inside"
    );

    // ACK_MODE none: replies as the original backend had them, but never two lines.
    drop(relay);
    let relay = Relay::start(broker.port, &[("ACK_MODE", "none")]);
    relay.expect_subscribed();
    let mut s = relay.connect();
    s.write_all(br#"{"type":"SCS","unit":"cam-01"}"#).unwrap();
    relay.expect_log("accepted SCS for unit cam-01", WAIT);
    for payload in [forged, two, honest] {
        device_reply(broker.port, "cam-01", payload.as_bytes());
    }
    relay.expect_log_count("reply from unit cam-01 dropped", 2, WAIT);
    let lines = read_lines(&s, 2, Duration::from_secs(2));
    assert_eq!(lines, [honest.to_string()]);
}

/// Whether `text` shows a character that reorders, hides or controls
/// what a reader sees (Cf, U+2028/2029, C0 but newline and tab, C1).
fn shows_hidden(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c as u32, 0x200B..=0x200F | 0x202A..=0x202E | 0x2066..=0x2069 | 0x2028 | 0x2029 | 0xFEFF)
    })
}

/// Finding 12: bidi, zero-width and C1 characters from a device never
/// reach the log, STATUS_FILE, `status` or `send` output raw.
#[test]
fn bidi_and_c1_characters_from_devices_are_escaped_everywhere_shown() {
    let broker = Broker::start();
    let relay = showing_heartbeats(broker.port);
    let status = relay.status_file();
    let id = "cam\u{202e}10\u{2066}x\u{200b}";
    let heartbeat = "{\"ip\":\"10.0.0.7\u{2028}\",\"network\":\"wi\u{9b}fi\u{202e}\"}";
    publish(
        broker.port,
        &format!("/device/ms500/{id}/online"),
        heartbeat.as_bytes(),
        QoS::AtLeastOnce,
    );
    relay.expect_log("heartbeat cam\\u{202e}10", WAIT);
    let conf = relay.conf.to_string_lossy().into_owned();
    assert!(wait_until(WAIT, || {
        std::fs::read_to_string(&status).is_ok_and(|t| t.contains("cam\\\\u{202e}10"))
    }));
    let file = std::fs::read_to_string(&status).unwrap();
    assert_eq!(shows_hidden(&file), None, "STATUS_FILE:\n{file}");
    let (code, out, err) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cam\\u{202e}10"), "{out}");
    assert_eq!(shows_hidden(&out), None, "status:\n{out}");

    // A reply with a raw CSI (U+009B) and a bidi override, through `send`.
    let sub = Subscriber::new(broker.port, COMMANDS);
    let port = broker.port;
    let device = std::thread::spawn(move || {
        sub.recv(WAIT).expect("the SCS reaches the camera");
        device_reply(port, "cam-01", "{\"fw\":\"1\u{9b}2J\u{202e}\"}".as_bytes());
    });
    let (code, out, err) = run_bin(
        &[
            "send",
            "-c",
            &conf,
            "-w",
            "10",
            r#"{"type":"SCS","unit":"cam-01"}"#,
        ],
        None,
    );
    device.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\\u009b2J\\u202e"), "{out}");
    assert_eq!(shows_hidden(&out), None, "send:\n{out}");
    relay.expect_log("reply from unit cam-01", WAIT);
    let log = relay.log();
    assert_eq!(shows_hidden(&log), None, "log:\n{log}");
}
