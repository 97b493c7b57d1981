//! Secrets: secret fields in commands and device replies are published and
//! routed unchanged but never logged, even at trace; `send` prints them
//! masked; field names that differ only in letter case are refused; and
//! the running relay allows no core dump.

use std::io::Write;
use std::time::Duration;

use crate::support;
use crate::support::{
    broker_and_relay, read_lines, relay_with_subscriber, run_bin, Subscriber, COMMANDS, WAIT,
};

/// Members with secret values, each value distinctive (tagged so that the
/// copies in a CFG, a UDS and a reply differ). `pass\u0077ord` is
/// `password`, escaped.
fn secret_members(tag: &str) -> String {
    format!(
        r#""psk":"PskV4lue{tag}","passphrase":"Pa55phrase{tag}","api_key":"ApiK3yV4lue{tag}","credentials":{{"user":"u","pass":"Cr3dV4lue{tag}"}},"pwd":"PwdV4lue{tag}","Wifi_Password":"WifiPwV4lue{tag}","pass\u0077ord":"EscPwV4lue{tag}","list":[{{"privateKey":["PrivK3y{tag}"]}}],"ap":{{"secret":73645190{tag}}},"keyframe":"KeyfrV4lueIsShown{tag}""#
    )
}

/// The distinctive secret values of [`secret_members`].
fn secrets(tag: &str) -> Vec<String> {
    [
        "PskV4lue",
        "Pa55phrase",
        "ApiK3yV4lue",
        "Cr3dV4lue",
        "PwdV4lue",
        "WifiPwV4lue",
        "EscPwV4lue",
        "PrivK3y",
        "73645190",
    ]
    .iter()
    .map(|s| format!("{s}{tag}"))
    .collect()
}

#[test]
fn secret_fields_are_published_unchanged_and_never_logged_even_at_trace() {
    let (broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("LOG_LEVEL", "trace")]);
    relay.expect_log("device link connected to broker", WAIT);
    relay.expect_subscribed();

    let cfg = format!(
        r#"{{"type":"CFG","unit":"cam-7","id":"c1","configs":{{{}}}}}"#,
        secret_members("1")
    );
    let uds = format!(
        r#"{{"type":"UDS","unit":"cam-7","id":"u1","settings":{{{}}}}}"#,
        secret_members("2")
    );
    let case = r#"{"Type":"FRS","type":"IMG","unit":"cam-05","id":1}"#;
    let mut s = relay.connect();
    for value in [r#"{"ack_mode":"all"}"#, &cfg, &uds, case] {
        s.write_all(value.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
    }

    // The error line may come before the ok lines (those wait for PUBACK).
    let mut lines = read_lines(&s, 3, WAIT);
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"{"status":"error","type":"IMG","unit":"cam-05","id":1,"error":"fields \"Type\" and \"type\" differ only in letter case"}"#,
            r#"{"status":"ok","type":"CFG","unit":"cam-7","id":"c1"}"#,
            r#"{"status":"ok","type":"UDS","unit":"cam-7","id":"u1"}"#,
        ]
    );
    let published = sub.collect(2, WAIT);
    let payloads: Vec<&[u8]> = published.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        [cfg.as_bytes(), uds.as_bytes()],
        "published byte for byte"
    );
    sub.assert_silent(Duration::from_millis(500));

    // The device answers the UDS: the reply goes back unchanged (wrapped), the log shows it masked.
    let reply = format!(
        r#"{{"unit":"cam-7","settings":{{{}}}}}"#,
        secret_members("3")
    );
    support::device_reply(broker.port, "cam-7", reply.as_bytes());
    // This connection gets status lines: the reply comes wrapped, byte-exact inside.
    assert_eq!(
        read_lines(&s, 1, WAIT),
        [format!(r#"{{"reply":{reply},"unit":"cam-7"}}"#)]
    );
    relay.expect_log("message on /device/ms500/cam-7/socket_reply", WAIT);
    relay.expect_log("payload of UDS", WAIT);

    let log = relay.log();
    for tag in ["1", "2", "3"] {
        for secret in secrets(tag) {
            assert!(
                !log.contains(&secret),
                "{secret} leaked into the log:\n{log}"
            );
        }
        assert!(
            log.contains(&format!("KeyfrV4lueIsShown{tag}")),
            "a field that is not secret is shown (copy {tag}):\n{log}"
        );
    }
    for masked in [
        r#""psk":"***""#,
        r#""password":"***""#,
        r#""Wifi_Password":"***""#,
        r#""privateKey":"***""#,
        r#""credentials":"***""#,
        r#""secret":"***""#,
    ] {
        assert!(log.contains(masked), "{masked} not in the log:\n{log}");
    }
    assert!(
        log.contains(r#"fields "Type" and "type" differ only in letter case"#),
        "the rejection is logged with both names:\n{log}"
    );
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
    let (broker, relay, sub) =
        relay_with_subscriber(COMMANDS, &[("LOG_LEVEL", "debug"), ("ACK_MODE", "all")]);
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
    support::device_reply(
        broker.port,
        "cam-1",
        br#"{"wifi":{"ssid":"site","wifi_password":"R3plyWifiPass"}}"#,
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

#[test]
fn send_prints_device_replies_with_secret_values_masked() {
    let (broker, relay) = broker_and_relay(&[]);
    relay.expect_log("device link connected to broker", WAIT);
    relay.expect_subscribed();
    let sub = Subscriber::new(broker.port, COMMANDS);
    let port = broker.port;
    let reply = format!(
        r#"{{"unit":"cam-8","settings":{{{}}}}}"#,
        secret_members("4")
    );
    let device_reply = reply.clone();
    // A simulated camera: answers the UDS once it arrives.
    let device = std::thread::spawn(move || {
        let command = sub.recv(WAIT).expect("the UDS reaches the camera");
        support::device_reply(port, "cam-8", device_reply.as_bytes());
        command.payload
    });
    let uds = format!(
        r#"{{"type":"UDS","unit":"cam-8","id":9,"settings":{{{}}}}}"#,
        secret_members("5")
    );
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "10"], Some(uds.as_bytes()));
    assert_eq!(
        device.join().unwrap(),
        uds.as_bytes(),
        "published unchanged"
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    // The camera answers as soon as the UDS reaches it, so its reply may
    // overtake the broker's PUBACK: the two lines come in either order.
    assert!(
        lines.contains(&r#"{"status":"ok","type":"UDS","unit":"cam-8","id":9}"#),
        "a status line is printed as it came:\n{out}"
    );
    for secret in secrets("4").iter().chain(&secrets("5")) {
        assert!(!out.contains(secret.as_str()), "{secret} printed:\n{out}");
        assert!(!err.contains(secret.as_str()), "{secret} printed:\n{err}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""psk":"***""#) && l.contains("KeyfrV4lueIsShown4")),
        "the reply, masked:\n{out}"
    );
}

#[test]
fn the_running_relay_allows_no_core_dump() {
    let (_broker, relay) = broker_and_relay(&[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    // "Max core file size  0  0  bytes": soft and hard limits both 0.
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}
