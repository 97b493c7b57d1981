//! Bad input is refused with a reason, publishes nothing, and (except for
//! oversize values) leaves the connection usable; what is valid is
//! published, however the backend spells it.

use std::io::Write;
use std::time::Duration;

use crate::support::{
    closed_by_peer, read_lines, relay_with_subscriber, send, topic, ANY_COMMAND, VALID, WAIT,
};

/// (input, what the warn line must mention)
fn rejection_cases() -> Vec<(&'static str, &'static str)> {
    vec![
        (r#"[1,2,3]"#, "not a JSON object"),
        (r#""just a string""#, "not a JSON object"),
        (r#"{"unit":"u1"}"#, r#"missing field "type""#),
        (
            r#"{"type":7,"unit":"u1"}"#,
            r#"field "type" must be a string"#,
        ),
        (r#"{"type":"XYZ","unit":"u1"}"#, r#"unknown type "XYZ""#),
        (r#"{"type":"IMG"}"#, r#"missing field "unit""#),
        (
            r#"{"type":"IMG","unit":5}"#,
            r#"field "unit" must be a string"#,
        ),
        (r#"{"type":"IMG","unit":""}"#, "unit is empty"),
        (
            r#"{"type":"IMG","unit":"a/b"}"#,
            r#"unit "a/b" contains '/'"#,
        ),
        (r#"{"type":"IMG","unit":"a+b"}"#, "contains '+'"),
        (r#"{"type":"IMG","unit":"a#"}"#, "contains '#'"),
        (r#"{"type":"IMG","unit":"a b"}"#, "contains ' '"),
        (r#"{"type":"IMG","unit":"ü"}"#, "non-ASCII"),
        (
            r#"{"type":"AIM","unit":"u1","model_id":1,"link":"l"}"#,
            r#"missing field "md5""#,
        ),
        (
            r#"{"type":"AIM","unit":"u1","model_id":1,"link":"l","md5":"xyz"}"#,
            r#"field "md5" must be 32 hex digits"#,
        ),
        (
            r#"{"type":"FMW","unit":"u1","link":"l","md5":"0123456789abcdef0123456789abcdef"}"#,
            r#"missing field "firmware_id""#,
        ),
        (
            r#"{"type":"APP","unit":"u1","application_id":1,"link":"","md5":"0123456789abcdef0123456789abcdef"}"#,
            r#"field "link""#,
        ),
        (
            r#"{"type":"CDN","unit":"u1","coordinates":5}"#,
            r#"field "coordinates""#,
        ),
        (
            r#"{"type":"CFG","unit":"u1"}"#,
            r#"missing field "configs""#,
        ),
        (r#"{"type":"CTS","unit":"u1","width":3}"#, "cs_"),
        (
            r#"{"type":"WFI","unit":"u1","wifi_enabled":true}"#,
            r#"field "wifi_password""#,
        ),
        (
            r#"{"type":"WFI","unit":"u1","wifi_enabled":"yes"}"#,
            r#"field "wifi_enabled""#,
        ),
        (
            r#"{"type":"UDS","unit":"u1","settings":[]}"#,
            r#"field "settings""#,
        ),
        (
            r#"{"type":"FRS","unit":"u1","reset_level":-1}"#,
            r#"field "reset_level""#,
        ),
        (
            r#"{"type":"FRS","unit":"u1"}"#,
            r#"missing field "reset_level""#,
        ),
    ]
}

#[test]
fn every_rejection_class_publishes_nothing_and_the_next_command_still_arrives() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("ACK_MODE", "errors")]);
    let mut s = relay.connect();
    let cases = rejection_cases();
    for (i, (input, reason)) in cases.iter().enumerate() {
        s.write_all(input.as_bytes()).unwrap();
        s.write_all(VALID.as_bytes()).unwrap();
        let m = sub
            .recv(WAIT)
            .unwrap_or_else(|| panic!("valid command after {input} lost"));
        assert_eq!(
            m.payload,
            VALID.as_bytes(),
            "after {input}: a rejected command was published"
        );
        let line = read_lines(&s, 1, WAIT);
        assert!(
            line.first()
                .is_some_and(|l| l.contains(r#""status":"error""#)
                    && l.contains(&reason.replace('"', "\\\""))),
            "after {input}: {line:?} should give the reason {reason}"
        );
        // Remote input is logged within a budget: the first ten a minute.
        if i < 10 {
            relay.expect_log(reason, WAIT);
        }
    }
    sub.assert_silent(Duration::from_millis(300));
    assert!(cases.len() > 10);
    let logged = relay.log().matches("WARN  rejected").count();
    assert_eq!(logged, 10, "{}", relay.log());
}

#[test]
fn rejection_reasons_go_back_when_ack_mode_is_errors() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("ACK_MODE", "errors")]);
    let s = relay.connect();
    let mut w = s.try_clone().unwrap();
    w.write_all(br#"{"type":"AIM","unit":"u1","id":"a-1","model_id":1,"link":"l"}"#)
        .unwrap();
    let lines = read_lines(&s, 1, WAIT);
    assert_eq!(lines.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["type"], "AIM");
    assert_eq!(v["unit"], "u1");
    assert_eq!(v["id"], "a-1");
    assert_eq!(v["error"], r#"missing field "md5""#);
    sub.assert_silent(Duration::from_millis(300));
}

#[test]
fn a_garbage_line_then_a_valid_line() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[]);
    let mut s = relay.connect();
    s.write_all(format!("hello there {{]\n{VALID}\n").as_bytes())
        .unwrap();
    let m = sub.recv(WAIT).expect("valid line after garbage");
    assert_eq!(m.payload, VALID.as_bytes());
    relay.expect_log("invalid JSON", WAIT);
}

#[test]
fn invalid_utf8_and_nul_bytes_are_refused_and_the_next_line_is_read() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[]);
    let mut s = relay.connect();
    s.write_all(b"{\"type\":\"IMG\",\"unit\":\"\xff\xfe\"}\n")
        .unwrap();
    s.write_all(b"{\"type\":\"IMG\",\0\"unit\":\"x\"}\n")
        .unwrap();
    s.write_all(VALID.as_bytes()).unwrap();
    let m = sub.recv(WAIT).expect("valid line after invalid bytes");
    assert_eq!(m.payload, VALID.as_bytes());
    sub.assert_silent(Duration::from_millis(300));
}

#[test]
fn a_value_over_max_message_bytes_is_refused_and_the_connection_closed() {
    let (_broker, relay, sub) = relay_with_subscriber(
        ANY_COMMAND,
        &[("MAX_MESSAGE_BYTES", "1024"), ("ACK_MODE", "errors")],
    );
    let mut s = relay.connect();
    let big = format!(
        r#"{{"type":"CFG","unit":"big","configs":{{"x":"{}"}}}}"#,
        "a".repeat(2000)
    );
    let _ = s.write_all(big.as_bytes());
    let _ = s.write_all(VALID.as_bytes());
    let lines = read_lines(&s, 1, WAIT);
    assert_eq!(lines.len(), 1, "an error line comes back");
    assert!(lines[0].contains("\"status\":\"error\""), "{}", lines[0]);
    assert!(closed_by_peer(&mut s, WAIT), "connection must be closed");
    sub.assert_silent(Duration::from_millis(500));
    relay.expect_log("larger than 1024", WAIT);
}

#[test]
fn a_command_exactly_at_the_limit_is_published() {
    let (_broker, relay, sub) =
        relay_with_subscriber(ANY_COMMAND, &[("MAX_MESSAGE_BYTES", "1024")]);
    let head = r#"{"type":"CFG","unit":"edge","configs":{"x":""#;
    let tail = r#""}}"#;
    let cmd = format!("{head}{}{tail}", "b".repeat(1024 - head.len() - tail.len()));
    assert_eq!(cmd.len(), 1024);
    relay.connect().write_all(cmd.as_bytes()).unwrap();
    assert_eq!(sub.recv(WAIT).expect("published").payload, cmd.as_bytes());
}

#[test]
fn a_partial_value_at_close_is_not_published() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[]);
    {
        let mut s = relay.connect();
        s.write_all(br#"{"type":"IMG","unit":"half""#).unwrap();
    }
    relay.expect_log("incomplete", WAIT);
    sub.assert_silent(Duration::from_millis(500));
    // The relay is still up for the next connection.
    relay.connect().write_all(VALID.as_bytes()).unwrap();
    assert_eq!(sub.recv(WAIT).expect("published").payload, VALID.as_bytes());
}

#[test]
fn validate_fields_false_only_checks_type_and_unit() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("VALIDATE_FIELDS", "false")]);
    let mut s = relay.connect();
    let loose = r#"{"type":"AIM","unit":"u1"}"#;
    s.write_all(br#"{"type":"AIM","unit":"a/b"}"#).unwrap();
    s.write_all(loose.as_bytes()).unwrap();
    assert_eq!(sub.recv(WAIT).expect("published").payload, loose.as_bytes());
    sub.assert_silent(Duration::from_millis(300));
}

#[test]
fn the_backends_factory_reset_with_a_level_name_is_published() {
    let (_broker, relay, sub) = relay_with_subscriber(
        &topic("cam-01"),
        &[("ACK_MODE", "all"), ("UNSEEN_WAIT", "0")],
    );
    relay.expect_ready();
    let mut backend = relay.connect();
    let frs =
        r#"{"type":"FRS","unit":"cam-01","id":1,"camera":"30eda0e27100","reset_level":"full"}"#;
    send(&mut backend, frs);
    assert_eq!(
        read_lines(&backend, 1, WAIT),
        [r#"{"status":"ok","type":"FRS","unit":"cam-01","id":1}"#]
    );
    let got = sub.collect(1, WAIT);
    assert_eq!(got[0].payload, frs.as_bytes());
}
