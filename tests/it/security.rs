//! Hostile peers and secrets: access control, connection limits, slow
//! values, hostile JSON, secrets in logs, broker TLS and passwords.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::certs::make_certs;
use crate::support::{
    closed_by_peer, run_bin, wait_until, Broker, Relay, Subscriber, TempDir, WAIT,
};

const VALID: &str = r#"{"type":"IMG","unit":"ok"}"#;

/// The publish link's debug line for each retry after the first failure on `port`.
fn retried(port: u16) -> String {
    format!("DEBUG broker 127.0.0.1:{port} still unreachable: ")
}

/// Connects to the relay from a chosen loopback source address.
fn connect_from(source: &str, relay: &Relay) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&src.into()).unwrap();
    let dst: SocketAddr = format!("127.0.0.1:{}", relay.port()).parse().unwrap();
    socket.connect(&dst.into()).unwrap();
    socket.into()
}

#[test]
fn a_peer_outside_socket_allow_is_closed_at_once_and_one_inside_a_cidr_is_served() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let strict = Relay::start(broker.port, &[("SOCKET_ALLOW", "127.0.0.1")]);
    let mut outsider = connect_from("127.0.0.2", &strict);
    let _ = outsider.write_all(VALID.as_bytes());
    assert!(
        closed_by_peer(&mut outsider, WAIT),
        "127.0.0.2 must be closed"
    );
    strict.expect_log("refused backend 127.0.0.2", WAIT);
    sub.assert_silent(Duration::from_millis(300));
    // 127.0.0.1 itself is still served.
    strict.connect().write_all(VALID.as_bytes()).unwrap();
    assert!(sub.recv(WAIT).is_some());

    let cidr = Relay::start(broker.port, &[("SOCKET_ALLOW", "10.0.0.0/8, 127.0.0.0/30")]);
    let mut insider = connect_from("127.0.0.2", &cidr);
    insider.write_all(VALID.as_bytes()).unwrap();
    let m = sub.recv(WAIT).expect("127.0.0.2 is inside 127.0.0.0/30");
    assert_eq!(m.payload, VALID.as_bytes());
    let mut beyond = connect_from("127.0.0.4", &cidr);
    assert!(
        closed_by_peer(&mut beyond, WAIT),
        "127.0.0.4 is outside 127.0.0.0/30"
    );
}

#[test]
fn connection_past_max_connections_waits_for_a_freed_slot() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(broker.port, &[("MAX_CONNECTIONS", "2")]);
    let mut a = relay.connect();
    let mut b = relay.connect();
    a.write_all(VALID.as_bytes()).unwrap();
    b.write_all(VALID.as_bytes()).unwrap();
    assert_eq!(sub.collect(2, WAIT).len(), 2, "two connections are served");
    let mut third = relay.connect();
    third.write_all(VALID.as_bytes()).unwrap();
    relay.expect_log("MAX_CONNECTIONS places taken", WAIT);
    assert!(
        sub.recv(Duration::from_millis(500)).is_none(),
        "connection 3 of 2 waits in the backlog"
    );
    drop(a);
    relay.expect_log("closed the connection", WAIT);
    assert!(
        sub.recv(WAIT).is_some(),
        "the waiting connection takes the freed slot; log:\n{}",
        relay.log()
    );
    let _ = b.write_all(VALID.as_bytes());
    assert!(sub.recv(WAIT).is_some(), "b still works");
}

#[test]
fn one_shot_connections_at_the_limit_are_served_back_to_back() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(broker.port, &[("MAX_CONNECTIONS", "1")]);
    for _ in 0..20 {
        let mut s = relay.connect();
        s.write_all(VALID.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // Wait for the relay's side to close, then reconnect at once.
        assert!(closed_by_peer(&mut s, WAIT));
    }
    assert_eq!(sub.collect(20, WAIT).len(), 20, "log:\n{}", relay.log());
    assert!(
        !relay.log().contains("MAX_CONNECTIONS places"),
        "{}",
        relay.log()
    );
}

#[test]
fn device_text_cannot_forge_log_lines() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("LOG_LEVEL", "debug")]);
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

#[test]
fn refusal_logging_is_rate_limited_under_a_flood() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("SOCKET_ALLOW", "127.0.0.1")]);
    let refusals = |relay: &Relay| relay.log().matches("refused backend 127.0.0.3").count();
    let summaries = |relay: &Relay| relay.log().matches("more refused-connection lines").count();
    let flood_started = Instant::now();
    for i in 0..200 {
        let mut s = connect_from("127.0.0.3", &relay);
        assert!(
            closed_by_peer(&mut s, WAIT),
            "refused peer {i} was not closed by the relay; log:\n{}",
            relay.log()
        );
    }
    let flood_took = flood_started.elapsed();
    assert!(flood_took < Duration::from_secs(50), "{flood_took:?}");
    // The first 10 refusals of the minute are logged one by one (log_limit::PER_MINUTE)...
    assert!(
        wait_until(WAIT, || refusals(&relay) >= 10),
        "{} refusal lines; log:\n{}",
        refusals(&relay),
        relay.log()
    );
    // Every refusal was logged (or not) before its close: all lines are in.
    relay.sync_log();
    let log = relay.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused backend"))
        .collect();
    assert_eq!(lines.len(), 10, "log:\n{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN  refused backend 127.0.0.3:")
                && l.ends_with(": not in SOCKET_ALLOW")),
        "{lines:#?}"
    );
    // ... the other 190 in one line once the minute is over.
    assert_eq!(summaries(&relay), 0, "log:\n{}", relay.log());
    // The relay still serves its own.
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    relay.connect().write_all(VALID.as_bytes()).unwrap();
    assert!(sub.recv(WAIT).is_some());
    assert!(
        wait_until(Duration::from_secs(75), || summaries(&relay) > 0),
        "no summary line; log:\n{}",
        relay.log()
    );
    relay.sync_log();
    let log = relay.log();
    assert_eq!(summaries(&relay), 1, "log:\n{log}");
    assert!(
        log.contains(
            "WARN  190 more refused-connection lines in the last minute were not logged one by one"
        ),
        "log:\n{log}"
    );
    assert_eq!(refusals(&relay), 10, "log:\n{log}");
}

#[test]
fn a_value_left_incomplete_for_60_s_is_dropped_and_its_connection_closed_but_idle_ones_stay() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(broker.port, &[]);
    let mut slow = relay.connect();
    let mut idle = relay.connect();
    // Idle after one complete value: it may stay (one that never sent a
    // value is closed after 60 s, local_users.rs).
    idle.write_all(VALID.as_bytes()).unwrap();
    assert!(sub.recv(WAIT).is_some());
    slow.write_all(br#"{"type":"IMG","un"#).unwrap();
    let started = Instant::now();
    assert!(
        closed_by_peer(&mut slow, Duration::from_secs(90)),
        "slow-loris connection must be closed"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(55),
        "closed too early: {:?}",
        started.elapsed()
    );
    relay.expect_log("left a value incomplete for 60 s", WAIT);
    sub.assert_silent(Duration::from_millis(200));
    // The idle connection (nothing pending) is still open and works.
    idle.write_all(VALID.as_bytes()).unwrap();
    assert!(sub.recv(WAIT).is_some(), "idle connection must stay usable");
}

#[test]
fn hostile_json_is_refused_with_a_reason_and_never_reaches_the_broker() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(broker.port, &[("ACK_MODE", "errors")]);
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

const SECRETS: [&str; 7] = [
    "Sup3rWifiPass",
    "Rej3ctedWifiPass",
    "Tok3nValue42",
    "Cl1entS3cretX",
    "DbPassw0rdRej",
    "Inval1dJsonS3cret",
    "R3plyWifiPass",
];

#[test]
fn secrets_never_reach_the_log_even_at_debug() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("LOG_LEVEL", "debug"), ("ACK_MODE", "all")]);
    relay.expect_ready();
    let mut s = relay.connect();
    let inputs = [
        r#"{"type":"WFI","unit":"cam-1","wifi_enabled":true,"wifi_ssid":"site","wifi_password":"Sup3rWifiPass"}"#.to_string(),
        r#"{"type":"WFI","unit":"cam-1","wifi_enabled":"maybe","wifi_password":"Rej3ctedWifiPass"}"#.to_string(),
        r#"{"type":"CFG","unit":"cam-1","configs":{"api_TOKEN":"Tok3nValue42","nested":[{"Client_Secret":"Cl1entS3cretX"}]}}"#.to_string(),
        r#"{"type":"CFG","unit":"cam 1","configs":{"db_password":"DbPassw0rdRej"}}"#.to_string(),
        "{\"type\":\"WFI\",\"unit\":\"cam-1\",\"wifi_password\":\"Inval1dJsonS3cret\"\n".to_string(),
        r#"{"type":"SCS","unit":"cam-1"}"#.to_string(),
    ];
    for i in &inputs {
        s.write_all(i.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
    }
    assert_eq!(
        sub.collect(3, WAIT).len(),
        3,
        "the valid WFI, CFG and SCS are published"
    );
    relay.expect_log("accepted SCS for unit cam-1", WAIT);
    support::publish(
        broker.port,
        "/device/ms500/cam-1/socket_reply",
        br#"{"wifi":{"ssid":"site","wifi_password":"R3plyWifiPass"}}"#,
        rumqttc::QoS::AtLeastOnce,
    );
    // Three ok lines, three error lines, then the reply.
    let lines = support::read_lines(&s, 7, WAIT);
    assert!(
        lines.iter().any(|l| l.contains("R3plyWifiPass")),
        "the reply itself goes back unchanged"
    );
    relay.expect_log("message on /device/ms500/cam-1/socket_reply", WAIT);
    relay.expect_log("payload of CFG", WAIT);
    let log = relay.log();
    for secret in SECRETS {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
    assert!(
        log.contains(r#""wifi_password":"***""#),
        "debug dumps show the field, masked"
    );
}

/// rustls buffers at most 64 KiB of plaintext: a batch larger than that
/// (one big command, or a window of mid-sized ones) must still go out whole.
#[test]
fn commands_larger_than_tls_buffers_are_published_whole_over_tls() {
    let certs = TempDir::new("certs-big");
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let broker = Broker::start_with_listeners(
        "",
        &[format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            p("ca.pem"),
            p("server.pem"),
            p("server.key")
        )],
    );
    let tls_port = broker.listener_port(0);
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(
        tls_port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", &p("ca.pem")),
            ("MAX_MESSAGE_BYTES", "300000"),
        ],
    );
    relay.expect_connected();
    let big = format!(
        r#"{{"type":"CFG","unit":"big","configs":{{"blob":"{}"}}}}"#,
        "x".repeat(250_000)
    );
    let burst: Vec<String> = (0..300)
        .map(|i| {
            format!(
                r#"{{"type":"CFG","unit":"mid","id":{i},"configs":{{"pad":"{}"}}}}"#,
                "y".repeat(2_000)
            )
        })
        .collect();
    let mut s = relay.connect();
    s.write_all(big.as_bytes()).unwrap();
    s.write_all(burst.concat().as_bytes()).unwrap();
    let got: Vec<Vec<u8>> = sub
        .collect(301, Duration::from_secs(5))
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(got.len(), 301, "log:\n{}", relay.log_tail(20));
    assert_eq!(got[0], big.as_bytes());
    for (i, cmd) in burst.iter().enumerate() {
        assert_eq!(got[i + 1], cmd.as_bytes(), "command {i}");
    }
}

#[test]
fn delivery_through_a_tls_listener_with_and_without_client_certificates() {
    let certs = TempDir::new("certs");
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    );
    let broker =
        Broker::start_with_listeners("", &[tls.clone(), tls + "require_certificate true\n"]);
    let (tls_port, mtls_port) = (broker.listener_port(0), broker.listener_port(1));
    let sub = Subscriber::new(broker.port, "/service/ms500/#");

    let relay = Relay::start(
        tls_port,
        &[("MQTT_TLS", "true"), ("MQTT_CA_FILE", &p("ca.pem"))],
    );
    relay.expect_connected();
    relay.connect().write_all(VALID.as_bytes()).unwrap();
    assert_eq!(
        sub.recv(WAIT).expect("delivered over TLS").payload,
        VALID.as_bytes()
    );

    let mtls = Relay::start(
        mtls_port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", &p("ca.pem")),
            ("MQTT_CLIENT_CERT", &p("client.pem")),
            ("MQTT_CLIENT_KEY", &p("client.key")),
        ],
    );
    mtls.expect_connected();
    mtls.connect().write_all(VALID.as_bytes()).unwrap();
    assert!(
        sub.recv(WAIT).is_some(),
        "delivered with a client certificate"
    );

    // A broker certificate from an unknown CA: logged at error once, retried, survived.
    // At debug, each retry shows: two of them, and still one error line.
    let wrong = Relay::start(
        tls_port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", &p("other.pem")),
            ("LOG_LEVEL", "debug"),
        ],
    );
    wrong.expect_log("ERROR broker 127.0.0.1", WAIT);
    wrong.expect_log_count(&retried(tls_port), 2, WAIT);
    let log = wrong.log();
    assert!(log.contains("TLS"), "{log}");
    assert_eq!(
        log.matches("ERROR").count(),
        1,
        "one error line per state change:\n{log}"
    );
    wrong.connect().write_all(VALID.as_bytes()).unwrap();
    wrong.expect_log("accepted IMG", WAIT);
}

#[test]
fn unreadable_tls_files_are_configuration_errors() {
    let dir = TempDir::new("tlsconf");
    let conf = dir.path().join("relay.conf");
    let missing = dir.path().join("missing-ca.pem");
    std::fs::write(
        &conf,
        format!("MQTT_TLS = true\nMQTT_CA_FILE = {}\n", missing.display()),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("MQTT_CA_FILE") && err.contains("missing-ca.pem"),
        "{err}"
    );
    let (code, _, err) = run_bin(&["-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");

    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        &conf,
        format!(
            "MQTT_TLS = true\nMQTT_CA_FILE = {}\n",
            dir.path().join("junk.pem").display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no certificate"), "{err}");
}

#[test]
fn delivery_through_a_listener_that_requires_a_password_and_a_wrong_one_is_survived() {
    let dir = TempDir::new("passwd");
    let pwfile = dir.path().join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args([
            "-b",
            "-c",
            pwfile.to_str().unwrap(),
            "relay",
            "Br0kerPassw0rd",
        ])
        .status()
        .expect("mosquitto_passwd");
    assert!(status.success());
    let broker = Broker::start_with_listeners(
        "per_listener_settings true",
        &[format!(
            "allow_anonymous false\npassword_file {}\n",
            pwfile.display()
        )],
    );
    let secure_port = broker.listener_port(0);
    let sub = Subscriber::new(broker.port, "/service/ms500/#");

    let good = Relay::start(
        secure_port,
        &[
            ("MQTT_USERNAME", "relay"),
            ("MQTT_PASSWORD", "Br0kerPassw0rd"),
            ("LOG_LEVEL", "debug"),
        ],
    );
    good.expect_connected();
    good.connect().write_all(VALID.as_bytes()).unwrap();
    assert!(
        sub.recv(WAIT).is_some(),
        "delivered with the right password"
    );
    assert!(
        !good.log().contains("Br0kerPassw0rd"),
        "MQTT_PASSWORD must never be logged"
    );

    let bad = Relay::start(
        secure_port,
        &[
            ("MQTT_USERNAME", "relay"),
            ("MQTT_PASSWORD", "WrongPassw0rd"),
            ("LOG_LEVEL", "debug"),
        ],
    );
    // At debug, each retry shows: two of them, and still one error line.
    bad.expect_log("ERROR broker 127.0.0.1", WAIT);
    bad.expect_log_count(&retried(secure_port), 2, WAIT);
    let log = bad.log();
    assert_eq!(
        log.matches("ERROR").count(),
        1,
        "logged once, not per attempt:\n{log}"
    );
    assert!(log.contains("refused"), "{log}");
    assert!(!log.contains("WrongPassw0rd"));
    // Still alive and accepting.
    let mut s = bad.connect();
    s.write_all(VALID.as_bytes()).unwrap();
    bad.expect_log("accepted IMG", WAIT);
    let mut buf = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(s.read(&mut buf).is_err(), "connection stays open");
    assert!(wait_until(Duration::from_secs(1), || true));
}

#[test]
fn an_ipv6_listener_serves_ipv6_loopback_by_default() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(broker.port, &[("SOCKET_HOST", "::1")]);
    let mut s = TcpStream::connect(("::1", relay.port())).expect("connect to [::1]");
    s.write_all(VALID.as_bytes()).unwrap();
    assert_eq!(sub.recv(WAIT).expect("published").payload, VALID.as_bytes());

    // An allow-list without ::1 refuses the same peer.
    let v4_only = Relay::start(
        broker.port,
        &[("SOCKET_HOST", "::1"), ("SOCKET_ALLOW", "127.0.0.1")],
    );
    let mut s = TcpStream::connect(("::1", v4_only.port())).expect("connect to [::1]");
    let _ = s.write_all(VALID.as_bytes());
    assert!(closed_by_peer(&mut s, WAIT));
    v4_only.expect_log("refused backend [::1]", WAIT);
    sub.assert_silent(Duration::from_millis(300));
}
