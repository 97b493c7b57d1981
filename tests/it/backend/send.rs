//! `ms500-relay send`, the backend on the command line: it delivers its
//! arguments or standard input, prints the status lines and replies, and
//! its exit code says what became of every command; it tells a missing
//! relay, a refusal and a stranger on the port apart.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use crate::support;
use crate::support::tools::{conf_in, tool};
use crate::support::{
    answering_camera, broker_and_relay, relay_with_subscriber, Broker, Relay, TempDir, COMMANDS,
    WAIT,
};

#[test]
fn send_delivers_arguments_and_stdin_and_prints_replies() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("ACK_MODE", "all")]);
    let a = r#"{"type":"IMG","unit":"s1","id":1}"#;
    let b = r#"{"type":"RSR","unit":"s1","id":2}"#;
    let (code, out, err) = relay.tool(&["send", "-w", "2", a, b]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub.recv(WAIT).unwrap().payload, a.as_bytes());
    assert_eq!(sub.recv(WAIT).unwrap().payload, b.as_bytes());
    assert!(
        out.contains(r#""status":"ok""#) && out.contains(r#""id":2"#),
        "{out}"
    );

    let c = r#"{"type":"FRS","unit":"s1","reset_level":1}"#;
    let (code, _, err) = relay.tool_with_input(&["send", "-w", "0.5"], c.as_bytes());
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
    let conf = conf_in(dir.path(), &format!("SOCKET_PORT = {port}\n"));
    let (code, _, err) = tool(&["send", "{}"], &conf);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

/// `send < big.ndjson`: the status lines are read while the input is
/// still being written, so none is dropped and every command is confirmed.
#[test]
fn send_confirms_every_command_of_a_large_input() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("LOG_LEVEL", "warn")]);
    let n = 30_000;
    let input: String = (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"IMG\",\"unit\":\"big-{}\",\"id\":{i}}}\n",
                i % 5
            )
        })
        .collect();
    let (code, out, err) = relay.tool_with_input(&["send", "-w", "20"], input.as_bytes());
    assert_eq!(code, 0, "{err}");
    let ok = out
        .lines()
        .filter(|l| l.starts_with(r#"{"status":"ok""#))
        .count();
    assert_eq!(ok, n, "one ok line per command");
    assert_eq!(sub.collect(n, Duration::from_secs(5)).len(), n);
}

#[test]
fn send_says_what_became_of_each_command_whatever_ack_mode() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("ACK_MODE", "none")]);
    let a = r#"{"type":"IMG","unit":"s1","id":1}"#;
    let b = r#"{"type":"RSR","unit":"s1","id":2}"#;
    let (code, out, err) = relay.tool(&["send", a, b]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"status":"ok","type":"IMG","unit":"s1","id":1}"#,
            r#"{"status":"ok","type":"RSR","unit":"s1","id":2}"#
        ]
    );
    sub.collect(2, WAIT);

    let bad = r#"{"type":"AIM","unit":"s1","id":3,"model_id":1,"link":"l"}"#;
    let (code, out, err) = relay.tool(&["send", a, bad]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            r#""status":"error","type":"AIM","unit":"s1","id":3,"error":"missing field \"md5\"""#
        ),
        "{out}"
    );
    assert!(err.contains("1 of 2 commands were refused"), "{err}");

    // Not JSON at all: one error line, exit 1.
    let (code, out, _) = relay.tool_with_input(&["send", "-"], b"hello\n");
    assert_eq!(code, 1);
    assert!(out.contains(r#""status":"error""#), "{out}");

    // The backend's own connections see what they always saw: nothing.
    let mut s = relay.connect();
    s.write_all(a.as_bytes()).unwrap();
    let quiet = support::read_lines(&s, 1, Duration::from_millis(500));
    assert!(quiet.is_empty(), "{quiet:?}");
}

#[test]
fn send_exits_1_when_the_broker_does_not_confirm_in_time() {
    let broker = Broker::unstarted("");
    let relay = Relay::start(broker.port, &[]);
    let (code, out, err) = relay.tool(&["send", "-w", "1", r#"{"type":"IMG","unit":"s1"}"#]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("1 of 1 commands not confirmed within 1.0 s"),
        "{err}"
    );
}

#[test]
fn send_says_the_relay_refused_it_and_which_file_it_read() {
    let (_broker, relay) = broker_and_relay(&[("SOCKET_ALLOW", "10.0.0.1")]);
    let (code, _, err) = relay.tool(&["send", r#"{"type":"IMG","unit":"u"}"#]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("closed the connection without a word"),
        "{err}"
    );
    assert!(!err.contains("broker"), "the broker is not to blame: {err}");
    let conf = relay.conf.display();
    assert!(err.contains(&format!("configuration from {conf}")), "{err}");
}

#[test]
fn send_tells_no_listener_from_a_wrong_peer() {
    let dir = TempDir::new("op-send");
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stranger.local_addr().unwrap().port();
    let conf = conf_in(dir.path(), &format!("SOCKET_PORT = {port}\n"));
    let talker = std::thread::spawn(move || {
        let (mut peer, _) = stranger.accept().unwrap();
        peer.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        // Reads what send writes until it gives up, as a server would.
        let _ = std::io::copy(&mut peer, &mut std::io::sink());
    });
    let (code, _, err) = tool(&["send", "-w", "1", r#"{"type":"IMG","unit":"u"}"#], &conf);
    talker.join().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not the relay"), "{err}");
    // The listener is gone now: nobody listens on the port.
    let (code, _, err) = tool(&["send", r#"{"type":"IMG","unit":"u"}"#], &conf);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing listens at"), "{err}");
}

/// Finding 4: a reply shaped like an error line does not make `send` fail.
#[test]
fn send_tells_a_reply_shaped_like_an_error_from_a_status_line() {
    let (broker, relay) = broker_and_relay(&[]);
    relay.expect_subscribed();
    let camera = answering_camera(
        broker.port,
        "cam-01",
        br#"{"status":"error","type":"AIM","unit":"cam-01","error":"x"}"#,
    );
    let (code, out, err) = relay.tool(&["send", "-w", "10", r#"{"type":"SCS","unit":"cam-01"}"#]);
    camera.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(r#"{"reply":{"status":"error""#),
        "the reply is printed as one:\n{out}"
    );
}
