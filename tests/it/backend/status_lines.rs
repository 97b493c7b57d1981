//! The lines a backend reads back per ACK_MODE: `ok` once the broker took
//! the command, `error` naming the field, device replies, and a backend
//! that half-closes still gets its lines.

use std::io::Write;
use std::time::Duration;

use crate::support::{
    device_reply, json_line, read_lines, ready, relay_with_subscriber, Relay, COMMANDS, WAIT,
};

#[test]
fn ack_mode_all_writes_one_ok_line_per_command_and_error_lines_naming_the_field() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("ACK_MODE", "all")]);
    relay.expect_ready();
    let mut s = relay.connect();
    for i in 0..5 {
        s.write_all(format!(r#"{{"type":"IMG","unit":"u{i}","id":{i}}}"#).as_bytes())
            .unwrap();
    }
    s.write_all(br#"{"type":"FRS","unit":"u9","id":"bad-1"}"#)
        .unwrap();
    s.write_all(br#"{"type":"RSR","unit":"u9"}"#).unwrap();
    let lines = read_lines(&s, 7, WAIT);
    assert_eq!(lines.len(), 7, "{lines:?}");
    let values: Vec<serde_json::Value> = lines.iter().map(|l| json_line(l)).collect();
    let oks: Vec<&serde_json::Value> = values.iter().filter(|v| v["status"] == "ok").collect();
    let errors: Vec<&serde_json::Value> =
        values.iter().filter(|v| v["status"] == "error").collect();
    assert_eq!(oks.len(), 6);
    let ids: Vec<serde_json::Value> = oks.iter().map(|v| v["id"].clone()).collect();
    assert_eq!(&ids[..5], &[0, 1, 2, 3, 4].map(serde_json::Value::from));
    assert!(
        oks[5].get("id").is_none(),
        "no id key when the command had none"
    );
    assert!(oks.iter().all(|v| v.get("error").is_none()));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["id"], "bad-1");
    assert_eq!(errors[0]["type"], "FRS");
    assert_eq!(errors[0]["error"], r#"missing field "reset_level""#);
    assert_eq!(sub.collect(6, WAIT).len(), 6);
}

#[test]
fn ack_mode_all_ok_line_comes_only_after_the_broker_took_the_command() {
    let (mut broker, relay) = ready(&[("ACK_MODE", "all")]);
    broker.stop();
    relay.expect_log("lost connection to broker", WAIT);
    let mut s = relay.connect();
    s.write_all(br#"{"type":"IMG","unit":"w","id":"while-down"}"#)
        .unwrap();
    relay.expect_log("accepted IMG for unit w", WAIT);
    assert!(
        read_lines(&s, 1, Duration::from_secs(1)).is_empty(),
        "no ok line before the broker acknowledged"
    );
    broker.restart();
    let lines = read_lines(&s, 1, Duration::from_secs(40));
    assert_eq!(
        lines.len(),
        1,
        "ok line after reconnect; log:\n{}",
        relay.log()
    );
    assert_eq!(json_line(&lines[0])["id"], "while-down");
}

#[test]
fn ack_mode_errors_writes_only_error_lines_and_none_writes_only_replies() {
    let (broker, relay) = ready(&[("ACK_MODE", "errors")]);
    let mut s = relay.connect();
    s.write_all(br#"{"type":"IMG","unit":"e1","id":1}"#)
        .unwrap();
    s.write_all(br#"{"type":"CDN","unit":"e1","id":2}"#)
        .unwrap();
    s.write_all(b"not json\n").unwrap();
    s.write_all(br#"{"type":"IMG","unit":"e1","id":3}"#)
        .unwrap();
    let lines = read_lines(&s, 3, Duration::from_secs(3));
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = json_line(&lines[0]);
    assert_eq!(first["status"], "error");
    assert_eq!(first["id"], 2);
    assert_eq!(first["error"], r#"missing field "coordinates""#);
    let second = json_line(&lines[1]);
    assert_eq!(second["status"], "error");
    assert!(
        second["error"].as_str().unwrap().contains("invalid JSON"),
        "{second}"
    );
    drop(relay);

    let relay = Relay::start(broker.port, &[("ACK_MODE", "none")]);
    relay.expect_ready();
    let mut s = relay.connect();
    s.write_all(br#"{"type":"SCS","unit":"n1"}"#).unwrap();
    s.write_all(br#"{"type":"CDN","unit":"n1"}"#).unwrap();
    relay.expect_log("accepted SCS for unit n1", WAIT);
    device_reply(broker.port, "n1", b"{\"r\":1}");
    let lines = read_lines(&s, 2, Duration::from_secs(3));
    assert_eq!(lines, vec!["{\"r\":1}".to_string()]);
}

#[test]
fn a_backend_that_half_closes_still_gets_its_status_lines() {
    let (_broker, relay) = ready(&[("ACK_MODE", "all")]);
    // One-shot: write, shut down the write side, read what comes back.
    for i in 0..10 {
        let mut s = relay.connect();
        s.write_all(format!(r#"{{"type":"IMG","unit":"h","id":{i}}}"#).as_bytes())
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let lines = read_lines(&s, 1, WAIT);
        assert_eq!(
            lines.len(),
            1,
            "ok line {i} lost after a half-close; log:\n{}",
            relay.log()
        );
        assert!(lines[0].contains(&format!(r#""id":{i}"#)), "{}", lines[0]);
    }
}
