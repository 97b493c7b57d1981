//! Every command type reaches its topic byte-exact, whatever the framing.

use std::io::Write;
use std::time::Duration;

use crate::support::{
    bytes_of, relay_with_subscriber, sample_commands, samples, topic, COMMANDS, WAIT,
};

#[test]
fn each_of_the_twelve_types_arrives_byte_exact_on_its_topic() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let mut s = relay.connect();
    for (kind, json) in samples("cam-01") {
        s.write_all(json.as_bytes()).unwrap();
        let m = sub
            .recv(WAIT)
            .unwrap_or_else(|| panic!("{kind} not published; log:\n{}", relay.log()));
        assert_eq!(m.topic, topic("cam-01"), "{kind}");
        assert_eq!(
            m.payload,
            json.as_bytes(),
            "{kind} payload must be byte-exact"
        );
    }
    let log = relay.log();
    assert!(log.contains("accepted WFI for unit cam-01"), "{log}");
}

#[test]
fn utf8_text_and_a_60_kb_command_publish_unchanged() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let mut s = relay.connect();
    let piece = "ŽluťoučkýKůň☕";
    let big_text: String = piece.repeat(60_000 / piece.len());
    let cmd = format!(r#"{{"type":"CFG","unit":"u-1","configs":{{"blob":"{big_text}"}}}}"#);
    assert!(cmd.len() > 59_000 && cmd.len() < 65_536, "{}", cmd.len());
    s.write_all(cmd.as_bytes()).unwrap();
    let m = sub.recv(WAIT).expect("60 KB command published");
    assert_eq!(m.payload.len(), cmd.len());
    assert_eq!(m.payload, cmd.as_bytes());
}

#[test]
fn many_commands_in_one_write_with_no_separator() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let all = sample_commands("u2");
    relay.connect().write_all(all.concat().as_bytes()).unwrap();
    assert_eq!(sub.payloads(12, WAIT), bytes_of(&all));
}

#[test]
fn newline_delimited_json() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let all = sample_commands("u3");
    relay
        .connect()
        .write_all((all.join("\n") + "\n").as_bytes())
        .unwrap();
    let got = sub.payloads(12, WAIT);
    assert_eq!(got.len(), 12);
    for (g, e) in got.iter().zip(&all) {
        assert_eq!(g, e.as_bytes());
    }
}

#[test]
fn pretty_printed_with_crlf_is_published_trimmed_but_otherwise_exact() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let pretty = "{\r\n  \"type\": \"FRS\",\r\n  \"unit\": \"u4\",\r\n  \"reset_level\": 0\r\n}";
    let other = "{\r\n\t\"type\" : \"IMG\" ,\r\n\t\"unit\" : \"u4\"\r\n}";
    let mut s = relay.connect();
    s.write_all(format!("\r\n  {pretty}\r\n{other}\r\n").as_bytes())
        .unwrap();
    let got = sub.collect(2, WAIT);
    assert_eq!(got.len(), 2, "log:\n{}", relay.log());
    assert_eq!(got[0].payload, pretty.as_bytes());
    assert_eq!(got[1].payload, other.as_bytes());
}

#[test]
fn one_byte_writes() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let mut s = relay.connect();
    let all = sample_commands("u5");
    for b in all.concat().as_bytes() {
        s.write_all(&[*b]).unwrap();
    }
    assert_eq!(sub.payloads(12, WAIT), bytes_of(&all));
}

#[test]
fn a_command_split_across_writes_with_pauses() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let mut s = relay.connect();
    let cmd = r#"{"type":"AIM","unit":"u6","model_id":"m-9","link":"https://x/y","md5":"0123456789abcdef0123456789abcdef"}"#;
    let (a, rest) = cmd.split_at(10);
    let (b, c) = rest.split_at(40);
    for part in [a, b, c] {
        s.write_all(part.as_bytes()).unwrap();
        // Time is the test: the relay reads each part on its own.
        std::thread::sleep(Duration::from_millis(300));
        if part != c {
            sub.assert_silent(Duration::from_millis(10));
        }
    }
    let m = sub
        .recv(WAIT)
        .expect("split command published once complete");
    assert_eq!(m.payload, cmd.as_bytes());
}

#[test]
fn a_burst_of_2000_on_one_connection_arrives_complete_and_in_order() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
    let mut burst = String::new();
    let expected: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"type":"IMG","unit":"burst","id":{i}}}"#))
        .collect();
    for e in &expected {
        burst.push_str(e);
    }
    relay.connect().write_all(burst.as_bytes()).unwrap();
    let got = sub.collect(2000, WAIT);
    assert_eq!(got.len(), 2000, "log tail:\n{}", tail(&relay.log()));
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g.payload,
            e.as_bytes(),
            "message {i} out of order or changed"
        );
    }
    sub.assert_silent(Duration::from_millis(300));
}

#[test]
fn qos_0_also_delivers() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("MQTT_QOS", "0")]);
    let cmd = r#"{"type":"RSR","unit":"q0"}"#;
    relay.connect().write_all(cmd.as_bytes()).unwrap();
    assert_eq!(sub.recv(WAIT).expect("published").payload, cmd.as_bytes());
}

#[test]
fn custom_command_topic() {
    let (_broker, relay, sub) =
        relay_with_subscriber("site/7/#", &[("COMMAND_TOPIC", "site/7/{unit}/cmd")]);
    relay
        .connect()
        .write_all(br#"{"type":"IMG","unit":"cam.9:A_b-c"}"#)
        .unwrap();
    let m = sub.recv(WAIT).expect("published");
    assert_eq!(m.topic, "site/7/cam.9:A_b-c/cmd");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
