//! A broker behind TLS (with and without client certificates) or a
//! password: commands delivered whole, TLS files checked like the rest of
//! the configuration, and a lasting refusal (a wrong password, an unknown
//! or expired certificate) logged once, not at every retry.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::support::certs::Certs;
use crate::support::tools::{conf_in, refused_by};
use crate::support::{wait_until, Broker, Relay, Subscriber, TempDir, ANY_COMMAND, VALID, WAIT};

/// Waits until `relay`, at debug, has tried broker `port` twice since it
/// refused the connection, and asserts that the refusal is one error line,
/// not one per attempt; the log.
fn refused_in_one_error_line(relay: &Relay, port: u16) -> String {
    relay.expect_log("ERROR broker 127.0.0.1", WAIT);
    relay.expect_log_count(
        &format!("DEBUG broker 127.0.0.1:{port} still unreachable: "),
        2,
        WAIT,
    );
    let log = relay.log();
    assert_eq!(
        log.matches("ERROR").count(),
        1,
        "one error line per state change, not per attempt:\n{log}"
    );
    log
}

/// rustls buffers at most 64 KiB of plaintext: a batch larger than that
/// (one big command, or a window of mid-sized ones) must still go out whole.
#[test]
fn commands_larger_than_tls_buffers_are_published_whole_over_tls() {
    let certs = Certs::new();
    let broker = Broker::start_with_listeners("", &[certs.listener()]);
    let sub = Subscriber::new(broker.port, ANY_COMMAND);
    let relay = certs.relay_trusting(
        "ca.pem",
        broker.listener_port(0),
        &[("MAX_MESSAGE_BYTES", "300000")],
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
    let certs = Certs::new();
    let tls = certs.listener();
    let broker =
        Broker::start_with_listeners("", &[tls.clone(), tls + "require_certificate true\n"]);
    let (tls_port, mtls_port) = (broker.listener_port(0), broker.listener_port(1));
    let sub = Subscriber::new(broker.port, ANY_COMMAND);

    let relay = certs.relay_trusting("ca.pem", tls_port, &[]);
    relay.expect_connected();
    relay.connect().write_all(VALID.as_bytes()).unwrap();
    assert_eq!(
        sub.recv(WAIT).expect("delivered over TLS").payload,
        VALID.as_bytes()
    );

    let mtls = certs.relay_trusting(
        "ca.pem",
        mtls_port,
        &[
            ("MQTT_CLIENT_CERT", &certs.file("client.pem")),
            ("MQTT_CLIENT_KEY", &certs.file("client.key")),
        ],
    );
    mtls.expect_connected();
    mtls.connect().write_all(VALID.as_bytes()).unwrap();
    assert!(
        sub.recv(WAIT).is_some(),
        "delivered with a client certificate"
    );

    // A broker certificate from an unknown CA: logged at error once, retried, survived.
    let wrong = certs.relay_trusting("other.pem", tls_port, &[("LOG_LEVEL", "debug")]);
    let log = refused_in_one_error_line(&wrong, tls_port);
    assert!(log.contains("TLS"), "{log}");
    wrong.connect().write_all(VALID.as_bytes()).unwrap();
    wrong.expect_log("accepted IMG", WAIT);
}

#[test]
fn unreadable_tls_files_are_configuration_errors() {
    let dir = TempDir::new("tlsconf");
    let ca_file = |name: &str| {
        let ca = dir.path().join(name);
        conf_in(
            dir.path(),
            &format!("MQTT_TLS = true\nMQTT_CA_FILE = {}\n", ca.display()),
        )
    };
    let conf = ca_file("missing-ca.pem");
    refused_by(
        &["check-config"],
        &conf,
        &["MQTT_CA_FILE", "missing-ca.pem"],
    );
    refused_by(&[""], &conf, &[]);

    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    refused_by(&["check-config"], &ca_file("junk.pem"), &["no certificate"]);
}

#[test]
fn an_expired_broker_certificate_is_one_error_line_not_one_per_retry() {
    let certs = Certs::expired();
    let broker = Broker::start_with_listeners("", &[certs.listener()]);
    let tls_port = broker.listener_port(0);
    let relay = certs.relay_trusting("ca.pem", tls_port, &[("LOG_LEVEL", "debug")]);
    relay.expect_log("ERROR broker 127.0.0.1", WAIT);
    // Attempts at 0, 1, 3 and 7 s (backoff 1 s doubling): wait for the third.
    let retries = |log: &str| {
        log.lines()
            .filter(|l| l.contains("DEBUG broker") && l.contains("still unreachable"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(15), || retries(&relay.log()) >= 2),
        "the relay retries; log:\n{}",
        relay.log()
    );
    let log = relay.log();
    let about_the_certificate: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("certificate expired") && !l.contains(" DEBUG "))
        .collect();
    let lines_with = |part: &str| -> Vec<&str> {
        let lines = about_the_certificate.iter().copied();
        lines.filter(|l| l.contains(part)).collect()
    };
    let errors = lines_with(" ERROR ");
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    assert!(
        errors[0].contains(&format!(
            "broker 127.0.0.1:{tls_port} refused the connection: TLS: invalid peer certificate: \
             certificate expired; check credentials and certificates"
        )),
        "{log}"
    );
    // The device link (its own connection) says it once too, at warn.
    let device_link = lines_with(" WARN  device link to broker");
    assert_eq!(device_link.len(), 1, "{log}");
    assert_eq!(
        about_the_certificate.len(),
        errors.len() + device_link.len(),
        "{log}"
    );
    assert!(
        !log.contains("verification time"),
        "no varying time in the reason:\n{log}"
    );
    assert_eq!(
        log.matches(" ERROR ").count(),
        1,
        "nothing else at error:\n{log}"
    );
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
    let sub = Subscriber::new(broker.port, ANY_COMMAND);

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
    let log = refused_in_one_error_line(&bad, secure_port);
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
