//! A broker behind TLS (with and without client certificates) or a
//! password: commands delivered whole, TLS files checked like the rest of
//! the configuration, and a lasting refusal (a wrong password, an unknown
//! or expired certificate) logged once, not at every retry.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::support::certs::{make_certs, make_expired_certs};
use crate::support::{run_bin, wait_until, Broker, Relay, Subscriber, TempDir, VALID, WAIT};

/// The publish link's debug line for each retry after the first failure on `port`.
fn retried(port: u16) -> String {
    format!("DEBUG broker 127.0.0.1:{port} still unreachable: ")
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
fn an_expired_broker_certificate_is_one_error_line_not_one_per_retry() {
    let certs = TempDir::new("certs");
    make_expired_certs(certs.path());
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
    let relay = Relay::start(
        tls_port,
        &[
            ("MQTT_TLS", "true"),
            ("MQTT_CA_FILE", &p("ca.pem")),
            ("LOG_LEVEL", "debug"),
        ],
    );
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
    let errors: Vec<&&str> = about_the_certificate
        .iter()
        .filter(|l| l.contains(" ERROR "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    assert!(
        errors[0].contains(&format!(
            "broker 127.0.0.1:{tls_port} refused the connection: TLS: invalid peer certificate: \
             certificate expired; check credentials and certificates"
        )),
        "{log}"
    );
    // The device link (its own connection) says it once too, at warn.
    let device_link: Vec<&&str> = about_the_certificate
        .iter()
        .filter(|l| l.contains(" WARN  device link to broker"))
        .collect();
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
