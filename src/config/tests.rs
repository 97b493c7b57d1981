use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

const SHIPPED: &str = include_str!("../../relay.conf");

fn ok(text: &str) -> Config {
    match parse(text, "relay.conf") {
        Ok(config) => config,
        Err(e) => panic!("{text:?} should parse, got: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse(text, "relay.conf") {
        Ok(config) => panic!("{text:?} should fail, got: {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn rule(text: &str) -> AllowRule {
    allow_rule(text).expect("test rule")
}

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(ok(""), Config::default());
    assert_eq!(ok("\n\n   \n\t\n"), Config::default());
    assert_eq!(
        ok("# only a comment\n   # indented comment\n"),
        Config::default()
    );
    assert_eq!(ok("\u{feff}"), Config::default());
}

#[test]
fn defaults_follow_the_key_table() {
    let c = Config::default();
    assert_eq!(render_brokers(&c.mqtt_broker), "127.0.0.1");
    assert_eq!(c.mqtt_port, 1883);
    assert_eq!(c.mqtt_keepalive.as_secs(), 60);
    assert_eq!(c.mqtt_client_id.as_deref().unwrap_or(""), "");
    assert_eq!(c.mqtt_password.as_deref().unwrap_or(""), "");
    assert!(!c.mqtt_tls);
    assert_eq!(c.mqtt_qos, Qos::AtLeastOnce);
    assert_eq!(c.socket_host, "127.0.0.1");
    assert_eq!(c.socket_port, 6080);
    assert_eq!(c.socket_allow, vec![rule("127.0.0.0/8"), rule("::1")]);
    assert_eq!(c.max_connections, 16);
    assert_eq!(c.max_message_bytes, 65536);
    assert_eq!(c.command_topic, "/service/ms500/{unit}/socket");
    assert_eq!(c.heartbeat_topic, "/device/ms500/+/online");
    assert_eq!(c.reply_topic, "/device/ms500/+/socket_reply");
    assert!(c.validate_fields);
    assert_eq!(c.ack_mode, AckMode::None);
    assert_eq!(c.queue_capacity, 10000);
    assert_eq!(c.command_ttl, Some(Duration::from_secs(600)));
    assert_eq!(c.spool_file, None);
    assert_eq!(c.device_timeout.as_secs(), 90);
    assert_eq!(c.status_file, None);
    assert_eq!(c.status_interval.as_secs(), 5);
    assert_eq!(c.pid_file, None);
    assert_eq!(c.shutdown_grace.as_secs(), 5);
    assert_eq!(c.log_level.as_str().to_ascii_lowercase(), "info");
}

#[test]
fn key_table_is_well_formed() {
    let names: Vec<&str> = KEYS.iter().map(|k| k.key).collect();
    assert_eq!(
        names,
        [
            "MQTT_BROKER",
            "MQTT_PORT",
            "MQTT_KEEPALIVE",
            "MQTT_CLIENT_ID",
            "MQTT_USERNAME",
            "MQTT_PASSWORD",
            "MQTT_TLS",
            "MQTT_CA_FILE",
            "MQTT_CLIENT_CERT",
            "MQTT_CLIENT_KEY",
            "MQTT_QOS",
            "MQTT_PROTOCOL",
            "MQTT_MAX_PACKET_BYTES",
            "SOCKET_HOST",
            "SOCKET_PORT",
            "SOCKET_ALLOW",
            "SOCKET_ALLOW_USERS",
            "SOCKET_PATH",
            "SOCKET_MODE",
            "SOCKET_GROUP",
            "MAX_CONNECTIONS",
            "MAX_MESSAGE_BYTES",
            "COMMAND_TOPIC",
            "HEARTBEAT_TOPIC",
            "REPLY_TOPIC",
            "VALIDATE_FIELDS",
            "ACK_MODE",
            "QUEUE_CAPACITY",
            "QUEUE_MAX_BYTES",
            "COMMAND_TTL",
            "COMMAND_TTLS",
            "PRESENCE_FIELD",
            "HOLD_OFFLINE",
            "SERIAL_AFTER",
            "SERIAL_TIMEOUT",
            "UNSEEN_WAIT",
            "HOLD_MAX_PER_CAMERA",
            "HOLD_MAX_BYTES",
            "SPOOL_FILE",
            "DEVICE_TIMEOUT",
            "DEVICE_SUMMARY_INTERVAL",
            "MAX_DEVICES",
            "STATUS_FILE",
            "STATUS_INTERVAL",
            "PID_FILE",
            "SHUTDOWN_GRACE",
            "LOG_LEVEL",
            "LOG_FILE",
            "LOG_MAX_BYTES",
            "LOG_KEEP",
            "LOG_SYSLOG",
            "METRICS_FILE",
            "STATE_TOPIC",
        ]
    );
    for key in KEYS {
        assert!(
            !key.doc.is_empty() && !key.doc.contains('\n'),
            "{}",
            key.key
        );
        let mut config = Config::default();
        assert_eq!(config.set(key.key, key.default), Ok(()), "{}", key.key);
    }
}

#[test]
fn key_value_whitespace_and_last_wins() {
    assert_eq!(ok("MQTT_PORT=1884").mqtt_port, 1884);
    assert_eq!(ok("  MQTT_PORT   =   1884   ").mqtt_port, 1884);
    assert_eq!(ok("\tMQTT_PORT\t=\t1884\t\r\n").mqtt_port, 1884);
    assert_eq!(ok("MQTT_PORT = 1884\nMQTT_PORT = 1885\n").mqtt_port, 1885);
    assert_eq!(
        ok("MQTT_PASSWORD = a=b=c")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "a=b=c"
    );
    assert_eq!(
        ok("MQTT_USERNAME =").mqtt_username.as_deref().unwrap_or(""),
        ""
    );
    assert_eq!(
        ok("MQTT_BROKER = mqtt.example.com").mqtt_broker,
        [BrokerAddr {
            host: "mqtt.example.com".to_string(),
            port: None
        }]
    );
    let list = ok("MQTT_PORT = 1884\nMQTT_BROKER = a, b:1999, [::1]:8883");
    let brokers: Vec<String> = list.brokers().iter().map(ToString::to_string).collect();
    assert_eq!(brokers, ["a:1884", "b:1999", "[::1]:8883"]);
    assert!(err("MQTT_BROKER = a:0").contains("MQTT_BROKER"));
}

#[test]
fn comments() {
    assert_eq!(ok("MQTT_PORT = 1884 # the test broker").mqtt_port, 1884);
    assert_eq!(
        ok("MQTT_PORT = 1884\t# tab before the hash").mqtt_port,
        1884
    );
    assert_eq!(
        ok("MQTT_PASSWORD = a#b")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "a#b"
    );
    assert_eq!(
        ok("MQTT_PASSWORD = a#b #c")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "a#b"
    );
    assert_eq!(
        ok("MQTT_PASSWORD = # nothing")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        ""
    );
    assert_eq!(
        ok("MQTT_PASSWORD =#nothing")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        ""
    );
    assert_eq!(ok("#MQTT_PORT = 1").mqtt_port, 1883);
}

#[test]
fn quotes() {
    assert_eq!(
        ok("MQTT_PASSWORD = \"a #b\"")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "a #b"
    );
    assert_eq!(
        ok("MQTT_PASSWORD = 'a #b'")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "a #b"
    );
    assert_eq!(
        ok("MQTT_PASSWORD = \" spaced \"")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        " spaced "
    );
    assert_eq!(
        ok("MQTT_PASSWORD = \"it's\"")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "it's"
    );
    assert_eq!(
        ok("MQTT_PASSWORD = 'say \"hi\"'")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "say \"hi\""
    );
    assert_eq!(
        ok("MQTT_PASSWORD = \"\"")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        ""
    );
    assert_eq!(
        ok("MQTT_PASSWORD = \"x\" # comment")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "x"
    );
    assert_eq!(
        ok("MQTT_PASSWORD = \"x\"#comment")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "x"
    );
    assert_eq!(
        ok("MQTT_PASSWORD = \"x\"   ")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "x"
    );
    assert_eq!(ok("MQTT_PORT = \"1884\"").mqtt_port, 1884);
    // A quote inside an unquoted value is just a character.
    assert_eq!(
        ok("MQTT_PASSWORD = a\"b")
            .mqtt_password
            .as_deref()
            .unwrap_or(""),
        "a\"b"
    );
}

#[test]
fn quote_errors() {
    assert_eq!(
        err("MQTT_PASSWORD = \"secret"),
        "relay.conf:1: MQTT_PASSWORD: missing closing quote"
    );
    assert_eq!(
        err("MQTT_PASSWORD = 'secret\""),
        "relay.conf:1: MQTT_PASSWORD: missing closing quote"
    );
    assert_eq!(
        err("\nMQTT_PASSWORD = \"secret\" extra"),
        "relay.conf:2: MQTT_PASSWORD: unexpected text after the closing quote"
    );
}

#[test]
fn syntax_errors() {
    assert_eq!(
        err("\n\nMQTT_PORT 1883"),
        "relay.conf:3: expected KEY = value"
    );
    assert_eq!(err("= 1883"), "relay.conf:1: expected KEY = value");
    assert_eq!(err("just words"), "relay.conf:1: expected KEY = value");
    assert_eq!(
        parse("x", "/etc/ms500-relay/relay.conf")
            .map_err(|e| e.to_string())
            .err(),
        Some("/etc/ms500-relay/relay.conf:1: expected KEY = value".to_string())
    );
}

#[test]
fn unknown_keys() {
    assert_eq!(err("# c\n\n\nFOO = 1"), "relay.conf:4: FOO: unknown key");
    assert_eq!(
        err("mqtt_port = 1883"),
        "relay.conf:1: mqtt_port: unknown key (keys are upper case: MQTT_PORT)"
    );
    assert_eq!(
        err("MQTT PORT = 1883"),
        "relay.conf:1: MQTT PORT: unknown key"
    );
}

#[test]
fn error_value_fields() {
    match parse("\nMQTT_PORT = abc", "relay.conf") {
        Err(ConfigError::Line {
            source,
            line,
            key,
            reason,
        }) => {
            assert_eq!(source, "relay.conf");
            assert_eq!(line, 2);
            assert_eq!(key.as_deref(), Some("MQTT_PORT"));
            assert_eq!(reason, "\"abc\" is not a port number (1-65535)");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ports() {
    let m = "is not a port number (1-65535)";
    for bad in ["abc", "0", "65536", "-1", "", "1.5", "0x50"] {
        assert_eq!(
            err(&format!("MQTT_PORT = {bad}")),
            format!("relay.conf:1: MQTT_PORT: {bad:?} {m}")
        );
        if bad != "0" {
            assert_eq!(
                err(&format!("SOCKET_PORT = {bad}")),
                format!(
                    "relay.conf:1: SOCKET_PORT: {bad:?} is not a port number (0-65535; 0 lets the system choose)"
                )
            );
        }
    }
    assert_eq!(ok("SOCKET_PORT = 0").socket_port, 0);
    assert_eq!(
        err("\n\n\n\n\n\n\n\n\n\n\nMQTT_PORT = abc"),
        "relay.conf:12: MQTT_PORT: \"abc\" is not a port number (1-65535)"
    );
    assert_eq!(ok("MQTT_PORT = 1").mqtt_port, 1);
    assert_eq!(ok("SOCKET_PORT = 65535").socket_port, 65535);
}

#[test]
fn numbers_and_ranges() {
    assert_eq!(
        err("MQTT_KEEPALIVE = 4"),
        "relay.conf:1: MQTT_KEEPALIVE: \"4\" is not a whole number of seconds (5-65535)"
    );
    assert_eq!(ok("MQTT_KEEPALIVE = 5").mqtt_keepalive.as_secs(), 5);
    assert_eq!(ok("MQTT_KEEPALIVE = 65535").mqtt_keepalive.as_secs(), 65535);
    assert!(err("MQTT_KEEPALIVE = 65536").starts_with("relay.conf:1: MQTT_KEEPALIVE: "));
    assert_eq!(
        err("MAX_CONNECTIONS = 0"),
        "relay.conf:1: MAX_CONNECTIONS: \"0\" is not a whole number of connections (1-65535)"
    );
    assert_eq!(ok("MAX_CONNECTIONS = 1").max_connections, 1);
    assert_eq!(
        err("MAX_MESSAGE_BYTES = 63"),
        "relay.conf:1: MAX_MESSAGE_BYTES: \"63\" is not a whole number of bytes (64-16777216)"
    );
    assert!(err("MAX_MESSAGE_BYTES = 16777217").contains("(64-16777216)"));
    assert_eq!(ok("MAX_MESSAGE_BYTES = 64").max_message_bytes, 64);
    assert_eq!(
        ok("MAX_MESSAGE_BYTES = 16777216").max_message_bytes,
        16_777_216
    );
    assert!(err("QUEUE_CAPACITY = 0").contains("QUEUE_CAPACITY: \"0\""));
    assert_eq!(ok("QUEUE_CAPACITY = 1").queue_capacity, 1);
    assert!(err("STATUS_INTERVAL = 0").contains("STATUS_INTERVAL: \"0\""));
    assert_eq!(ok("STATUS_INTERVAL = 1").status_interval.as_secs(), 1);
    assert_eq!(ok("COMMAND_TTL = 0").command_ttl, None);
    assert!(err("COMMAND_TTL = -1").contains("COMMAND_TTL: \"-1\""));
    assert!(err("COMMAND_TTL = 99999999999999999999").contains("COMMAND_TTL"));
    assert!(err("DEVICE_TIMEOUT = 0").contains("DEVICE_TIMEOUT: \"0\""));
    assert_eq!(ok("SHUTDOWN_GRACE = 0").shutdown_grace.as_secs(), 0);
    assert!(err("SHUTDOWN_GRACE = soon").contains("SHUTDOWN_GRACE: \"soon\""));
}

#[test]
fn mqtt_protocol_is_auto_5_or_3_1_1() {
    assert_eq!(ok("").mqtt_protocol, MqttProtocol::Auto);
    assert_eq!(ok("MQTT_PROTOCOL = 5").mqtt_protocol, MqttProtocol::V5);
    assert_eq!(
        ok("MQTT_PROTOCOL = 3.1.1").mqtt_protocol,
        MqttProtocol::V311
    );
    assert_eq!(
        err("MQTT_PROTOCOL = 4"),
        "relay.conf:1: MQTT_PROTOCOL: \"4\" is not auto, 5 or 3.1.1"
    );
}

#[test]
fn max_packet_bytes_is_zero_or_a_real_limit() {
    assert_eq!(ok("").mqtt_max_packet_bytes, 0);
    assert_eq!(
        ok("MQTT_MAX_PACKET_BYTES = 20000").mqtt_max_packet_bytes,
        20000
    );
    assert_eq!(
        err("MQTT_MAX_PACKET_BYTES = 100"),
        "relay.conf:1: MQTT_MAX_PACKET_BYTES: \"100\" is not 0 or a whole number of bytes \
         (1024-268435455)"
    );
}

#[test]
fn qos_levels() {
    assert_eq!(ok("MQTT_QOS = 0").mqtt_qos, Qos::AtMostOnce);
    assert_eq!(ok("MQTT_QOS = 1").mqtt_qos, Qos::AtLeastOnce);
    assert_eq!(
        err("MQTT_QOS = 2"),
        "relay.conf:1: MQTT_QOS: QoS 2 is not supported: only 0 and 1 are supported"
    );
    assert_eq!(
        err("MQTT_QOS = high"),
        "relay.conf:1: MQTT_QOS: \"high\" is not a QoS level (only 0 and 1 are supported)"
    );
}

#[test]
fn booleans() {
    for yes in ["true", "TRUE", "Yes", "1", "on", "ON"] {
        assert!(ok(&format!("MQTT_TLS = {yes}")).mqtt_tls, "{yes}");
    }
    for no in ["false", "False", "no", "0", "off", "OFF"] {
        assert!(
            !ok(&format!("VALIDATE_FIELDS = {no}")).validate_fields,
            "{no}"
        );
    }
    assert_eq!(
        err("VALIDATE_FIELDS = maybe"),
        "relay.conf:1: VALIDATE_FIELDS: \"maybe\" is not a boolean (true/false, yes/no, on/off, 1/0)"
    );
    assert!(err("MQTT_TLS =").contains("MQTT_TLS: \"\" is not a boolean"));
}

#[test]
fn ack_modes_and_log_levels() {
    assert_eq!(ok("ACK_MODE = none").ack_mode, AckMode::None);
    assert_eq!(ok("ACK_MODE = Errors").ack_mode, AckMode::Errors);
    assert_eq!(ok("ACK_MODE = ALL").ack_mode, AckMode::All);
    assert_eq!(ok("ACK_MODE = camera").ack_mode, AckMode::Camera);
    assert_eq!(
        err("ACK_MODE = some"),
        "relay.conf:1: ACK_MODE: \"some\" is not one of none, errors, all, camera"
    );
    for level in ["error", "warn", "info", "debug", "trace", "off"] {
        assert_eq!(
            ok(&format!("LOG_LEVEL = {level}"))
                .log_level
                .as_str()
                .to_ascii_lowercase(),
            level
        );
    }
    assert_eq!(
        ok("LOG_LEVEL = DEBUG")
            .log_level
            .as_str()
            .to_ascii_lowercase(),
        "debug"
    );
    assert_eq!(
        err("LOG_LEVEL = verbose"),
        "relay.conf:1: LOG_LEVEL: \"verbose\" is not one of error, warn, info, debug, trace, off"
    );
}

#[test]
fn hosts_must_not_be_empty() {
    assert_eq!(
        err("MQTT_BROKER = \"\""),
        "relay.conf:1: MQTT_BROKER: must name at least one broker: host[:port], host[:port], ..."
    );
    assert!(err("SOCKET_HOST =").starts_with("relay.conf:1: SOCKET_HOST: must not be empty"));
    assert_eq!(ok("SOCKET_HOST = 0.0.0.0").socket_host, "0.0.0.0");
    let unix_only = ok("SOCKET_HOST =\nSOCKET_PATH = /run/ms500-relay/relay.sock");
    assert_eq!(
        unix_only.socket_host, "",
        "no TCP listener beside the Unix socket"
    );
}

#[test]
fn the_unix_socket_keys_take_an_absolute_path_an_octal_mode_and_one_group() {
    let c = Config::default();
    assert_eq!(
        (c.socket_path, c.socket_mode, c.socket_group),
        (None, 0o660, None)
    );
    let c = ok("SOCKET_PATH = /run/r.sock\nSOCKET_MODE = 600\nSOCKET_GROUP = relay");
    assert_eq!(c.socket_path.as_deref(), Some(Path::new("/run/r.sock")));
    assert_eq!(c.socket_mode, 0o600);
    assert_eq!(c.socket_group.as_deref(), Some("relay"));
    assert_eq!(ok("SOCKET_MODE = 0").socket_mode, 0);
    assert_eq!(ok("SOCKET_MODE = 0777").socket_mode, 0o777);
    assert_eq!(
        ok("SOCKET_GROUP = 990").socket_group.as_deref(),
        Some("990")
    );
    assert_eq!(
        err("SOCKET_PATH = run/r.sock"),
        "relay.conf:1: SOCKET_PATH: \"run/r.sock\" is not an absolute path"
    );
    let long = format!("SOCKET_PATH = /{}", "s".repeat(107));
    assert!(err(&long).contains("more than the 107"), "{}", err(&long));
    assert!(ok(&format!("SOCKET_PATH = /{}", "s".repeat(106)))
        .socket_path
        .is_some());
    for bad in ["1777", "0o660", "rw", "8", "-1", "\"\""] {
        let text = format!("SOCKET_MODE = {bad}");
        assert!(err(&text).contains("is not a mode in octal"), "{bad}");
    }
    assert!(err("SOCKET_GROUP = a, b").contains("is not one group name or gid"));
    assert!(err("SOCKET_GROUP = a b").contains("SOCKET_GROUP"));
    let shown = ok("SOCKET_MODE = 640").effective();
    assert!(
        shown.contains(&("SOCKET_MODE", "0640".to_string())),
        "rendered as written"
    );
}

#[test]
fn allow_lists() {
    assert_eq!(
        ok("SOCKET_ALLOW = 10.0.0.0/8,192.168.1.7 , fd00::/8,").socket_allow,
        vec![rule("10.0.0.0/8"), rule("192.168.1.7"), rule("fd00::/8")]
    );
    assert_eq!(
        rule("192.168.1.7"),
        AllowRule {
            addr: ip("192.168.1.7"),
            prefix: 32
        }
    );
    assert_eq!(
        rule("::1"),
        AllowRule {
            addr: ip("::1"),
            prefix: 128
        }
    );
    assert_eq!(rule("0.0.0.0/0").prefix, 0);
    assert_eq!(
        err("SOCKET_ALLOW = \"\""),
        "relay.conf:1: SOCKET_ALLOW: must list at least one address or CIDR \
         (loopback only is \"127.0.0.0/8, ::1\")"
    );
    assert!(err("SOCKET_ALLOW = , ,").contains("must list at least one"));
    assert_eq!(
        err("SOCKET_ALLOW = 127.0.0.1, 10.0.0.300"),
        "relay.conf:1: SOCKET_ALLOW: \"10.0.0.300\" is not an IP address or CIDR"
    );
    assert_eq!(
        err("SOCKET_ALLOW = 10.0.0.0/33"),
        "relay.conf:1: SOCKET_ALLOW: \"10.0.0.0/33\": prefix longer than 32 bits"
    );
    assert_eq!(
        err("SOCKET_ALLOW = ::/129"),
        "relay.conf:1: SOCKET_ALLOW: \"::/129\": prefix longer than 128 bits"
    );
    for bad in [
        "localhost",
        "10.0.0.0/",
        "10.0.0.0/x",
        "10.0.0.0/-1",
        "[::1]",
        "10.0.0.0/8/8",
    ] {
        assert!(
            err(&format!("SOCKET_ALLOW = {bad}")).contains("is not an IP address or CIDR"),
            "{bad}"
        );
    }
}

#[test]
fn cidr_matching_ipv4() {
    let net = rule("10.1.0.0/16");
    assert!(net.contains(ip("10.1.0.0")));
    assert!(net.contains(ip("10.1.255.255")));
    assert!(!net.contains(ip("10.2.0.0")));
    assert!(!net.contains(ip("::1")));
    // Host bits in the rule do not matter.
    assert!(rule("10.1.2.3/16").contains(ip("10.1.200.1")));
    assert!(rule("0.0.0.0/0").contains(ip("203.0.113.9")));
    assert!(!rule("0.0.0.0/0").contains(ip("2001:db8::1")));
    assert!(rule("192.168.1.7").contains(ip("192.168.1.7")));
    assert!(!rule("192.168.1.7").contains(ip("192.168.1.8")));
    assert!(rule("192.168.1.6/31").contains(ip("192.168.1.7")));
    assert!(!rule("192.168.1.6/31").contains(ip("192.168.1.8")));
}

#[test]
fn cidr_matching_ipv6_and_mapped() {
    assert!(rule("::1").contains(ip("::1")));
    assert!(!rule("::1").contains(ip("::2")));
    assert!(!rule("::1").contains(ip("127.0.0.1")));
    assert!(rule("fd00::/8").contains(ip("fdab:cd::1")));
    assert!(!rule("fd00::/8").contains(ip("fe80::1")));
    assert!(rule("::/0").contains(ip("2001:db8::1")));
    assert!(rule("2001:db8::/127").contains(ip("2001:db8::1")));
    assert!(!rule("2001:db8::/127").contains(ip("2001:db8::2")));
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert!(rule("127.0.0.0/8").contains(mapped));
    assert!(!rule("10.0.0.0/8").contains(mapped));
    assert!(rule("127.0.0.0/8").contains(ip("::ffff:127.9.9.9")));
    // A rule written in mapped form also covers plain IPv4 peers.
    assert!(rule("::ffff:10.0.0.0/104").contains(ip("10.3.2.1")));
    assert!(!rule("::ffff:10.0.0.0/104").contains(ip("11.3.2.1")));
    // An out-of-range prefix built by hand counts as the full address.
    let wide = AllowRule {
        addr: ip("10.0.0.1"),
        prefix: 200,
    };
    assert!(wide.contains(ip("10.0.0.1")));
    assert!(!wide.contains(ip("10.0.0.2")));
}

#[test]
fn default_allow_list_is_loopback_only() {
    let rules = Config::default().socket_allow;
    assert!(allowed(&rules, ip("127.0.0.1")));
    assert!(allowed(&rules, ip("127.255.0.3")));
    assert!(allowed(&rules, ip("::1")));
    assert!(allowed(&rules, ip("::ffff:127.0.0.1")));
    assert!(!allowed(&rules, ip("192.168.1.10")));
    assert!(!allowed(&rules, ip("::ffff:192.168.1.10")));
    assert!(!allowed(&rules, IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    assert!(!allowed(&[], ip("127.0.0.1")));
}

#[test]
fn command_topics() {
    let c = ok("COMMAND_TOPIC = cams/{unit}");
    assert_eq!(c.command_topic_for("U-1"), "cams/U-1");
    assert_eq!(
        Config::default().command_topic_for("cam7"),
        "/service/ms500/cam7/socket"
    );
    assert_eq!(
        err("COMMAND_TOPIC = /service/ms500/socket"),
        "relay.conf:1: COMMAND_TOPIC: \"/service/ms500/socket\" must contain {unit} exactly once"
    );
    assert!(err("COMMAND_TOPIC = /{unit}/{unit}").contains("exactly once"));
    assert_eq!(
        err("COMMAND_TOPIC = /+/{unit}"),
        "relay.conf:1: COMMAND_TOPIC: \"/+/{unit}\" must not contain the MQTT wildcards + or #"
    );
    assert!(err("COMMAND_TOPIC = \"/{unit}/#\"").contains("wildcards"));
}

#[test]
fn plus_filters() {
    assert_eq!(ok("HEARTBEAT_TOPIC = hb/+").heartbeat_topic, "hb/+");
    assert_eq!(ok("REPLY_TOPIC = +/reply").reply_topic, "+/reply");
    let shape = "must contain exactly one + as a whole topic level, like /device/ms500/+/online";
    assert_eq!(
        err("HEARTBEAT_TOPIC = /device/ms500/online"),
        format!("relay.conf:1: HEARTBEAT_TOPIC: \"/device/ms500/online\" {shape}")
    );
    assert!(err("REPLY_TOPIC = /device/+/+/socket_reply").contains(shape));
    assert!(err("REPLY_TOPIC = /device/ms500+/socket_reply").contains(shape));
    assert!(err("REPLY_TOPIC = /device/a+b/x/+").contains(shape));
    assert_eq!(
        err("REPLY_TOPIC = \"/device/+/#\""),
        "relay.conf:1: REPLY_TOPIC: \"/device/+/#\" must not contain the MQTT wildcard #"
    );
}

#[test]
fn plus_level_matching() {
    let filter = "/device/ms500/+/online";
    assert_eq!(
        plus_level(filter, "/device/ms500/cam7/online"),
        Some("cam7")
    );
    assert_eq!(plus_level(filter, "/device/ms500//online"), None);
    assert_eq!(plus_level(filter, "/device/ms500/cam7/offline"), None);
    assert_eq!(plus_level(filter, "/device/ms500/cam7/online/x"), None);
    assert_eq!(plus_level(filter, "/device/ms500/cam7"), None);
    assert_eq!(plus_level(filter, "device/ms500/cam7/online"), None);
    assert_eq!(plus_level(filter, ""), None);
    assert_eq!(plus_level("+", "x"), Some("x"));
    assert_eq!(plus_level("a/+", "a/b/c"), None);
    assert_eq!(plus_level("a/b", "a/b"), None);
    assert_eq!(plus_level("+/+", "a/b"), None);
    assert_eq!(plus_level("a/#", "a/b"), None);
}

#[test]
fn client_certificate_needs_its_key() {
    assert_eq!(
        err("MQTT_TLS = true\nMQTT_CLIENT_CERT = /etc/c.pem\n"),
        "relay.conf:2: MQTT_CLIENT_CERT: is set but MQTT_CLIENT_KEY is empty \
         (TLS client authentication needs both)"
    );
    assert_eq!(
        err("MQTT_CLIENT_KEY = /etc/k.pem\n\nMQTT_TLS = yes\n"),
        "relay.conf:1: MQTT_CLIENT_KEY: is set but MQTT_CLIENT_CERT is empty \
         (TLS client authentication needs both)"
    );
    // The later of the two lines is named, even when it is the empty one.
    assert_eq!(
        err("MQTT_TLS = on\nMQTT_CLIENT_CERT = /etc/c.pem\nMQTT_CLIENT_KEY = \"\"\n"),
        "relay.conf:3: MQTT_CLIENT_KEY: is empty but MQTT_CLIENT_CERT is set \
         (TLS client authentication needs both)"
    );
    assert_eq!(
        err(
            "MQTT_CLIENT_CERT = /etc/c.pem\nMQTT_CLIENT_KEY = /etc/k.pem\nMQTT_TLS = 1\nMQTT_CLIENT_CERT =\n"
        ),
        "relay.conf:4: MQTT_CLIENT_CERT: is empty but MQTT_CLIENT_KEY is set \
         (TLS client authentication needs both)"
    );
    let c = ok("MQTT_TLS = true\nMQTT_CLIENT_CERT = /etc/c.pem\nMQTT_CLIENT_KEY = /etc/k.pem\n");
    assert_eq!(
        (c.mqtt_client_cert.as_deref(), c.mqtt_client_key.as_deref()),
        (Some(Path::new("/etc/c.pem")), Some(Path::new("/etc/k.pem")))
    );
    // Without TLS the pair is unused, so it is not checked.
    assert_eq!(
        ok("MQTT_CLIENT_CERT = /etc/c.pem")
            .mqtt_client_cert
            .as_deref(),
        Some(Path::new("/etc/c.pem"))
    );
}

#[test]
fn file_keys_take_absolute_paths_naming_a_file() {
    for key in [
        "MQTT_CA_FILE",
        "MQTT_CLIENT_CERT",
        "MQTT_CLIENT_KEY",
        "SPOOL_FILE",
        "STATUS_FILE",
        "PID_FILE",
        "LOG_FILE",
        "METRICS_FILE",
    ] {
        assert_eq!(
            err(&format!("{key} = run/x\n")),
            format!(
                "relay.conf:1: {key}: \"run/x\" is not an absolute path \
                 (the relay and its tools may run from any directory)"
            )
        );
        for odd in ["/run/", "/run/..", "/"] {
            assert_eq!(
                err(&format!("{key} = {odd}\n")),
                format!("relay.conf:1: {key}: {odd:?} does not name a file")
            );
        }
        assert!(ok(&format!("{key} = /run/x/./y\n"))
            .effective()
            .iter()
            .any(|(_, v)| v == "/run/x/./y"));
    }
}

#[test]
fn first_bad_line_is_reported() {
    assert_eq!(
        err("MQTT_PORT = x\nFOO = 1\n"),
        "relay.conf:1: MQTT_PORT: \"x\" is not a port number (1-65535)"
    );
}

#[test]
fn effective_masks_the_password() {
    let c = ok("MQTT_PASSWORD = hunter2\nMQTT_USERNAME = relay\n\
                SOCKET_ALLOW = 10.0.0.0/8,::1,192.168.1.7/32\nACK_MODE = ERRORS");
    let effective = c.effective();
    let keys: Vec<&str> = effective.iter().map(|(k, _)| *k).collect();
    let table: Vec<&str> = KEYS.iter().map(|k| k.key).collect();
    assert_eq!(keys, table);
    let value = |key: &str| {
        effective
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(value("MQTT_PASSWORD"), "***");
    assert_eq!(value("MQTT_USERNAME"), "relay");
    assert_eq!(value("SOCKET_ALLOW"), "10.0.0.0/8, ::1, 192.168.1.7");
    assert_eq!(value("ACK_MODE"), "errors");
    assert!(effective.iter().all(|(_, v)| !v.contains("hunter2")));
}

#[test]
fn effective_of_defaults_is_the_key_table() {
    let effective = Config::default().effective();
    let table: Vec<(&str, String)> = KEYS
        .iter()
        .map(|k| (k.key, k.default.to_string()))
        .collect();
    assert_eq!(effective, table);
}

#[test]
fn effective_round_trips() {
    let c = ok(
        "MQTT_TLS = on\nMQTT_CLIENT_CERT = /etc/c.pem\nMQTT_CLIENT_KEY = /etc/k.pem\nMQTT_QOS = 0\n\
                SOCKET_ALLOW = 10.0.0.5/8, fd00::/8\nLOG_LEVEL = Trace\nCOMMAND_TTL = 0",
    );
    let lines: Vec<String> = c
        .effective()
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\""))
        .collect();
    let text = lines.join("\n");
    assert_eq!(ok(&text), c);
}

#[test]
fn client_ids() {
    assert_eq!(ok("MQTT_CLIENT_ID = gw-1").client_id(), "gw-1");
    let generated = Config::default().client_id();
    assert!(generated.starts_with("ms500-relay-"), "{generated}");
    assert_eq!(
        generated,
        Config::default().client_id(),
        "stable across starts"
    );
    assert!(
        !generated.ends_with(&format!("-{}", std::process::id())),
        "{generated}"
    );
    assert!(generated
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
    assert_eq!(sanitize_host("gw 1/a\n"), "gw1a");
    assert_eq!(sanitize_host("my_gw.local"), "my_gw.local");
    assert_eq!(sanitize_host("ü\n"), "");
}

#[test]
fn config_errors_display() {
    let read = ConfigError::Read {
        path: "/nope/relay.conf".to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
    };
    assert_eq!(read.to_string(), "cannot read /nope/relay.conf: not found");
    assert!(std::error::Error::source(&read).is_some());
}

#[test]
fn load_a_missing_file_is_a_read_error() {
    let path = Path::new("/nonexistent/ms500-relay/relay.conf");
    match load(Some(path), 0) {
        Err(ConfigError::Read { path, .. }) => {
            assert_eq!(path, "/nonexistent/ms500-relay/relay.conf");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn load_reads_the_given_file() {
    let dir = std::env::temp_dir().join(format!("ms500-relay-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.conf");
    let bad = dir.join("bad.conf");
    std::fs::write(&good, "MQTT_PORT = 1884\n").expect("write");
    std::fs::write(&bad, "\nMQTT_PORT = 0\n").expect("write");
    // The files are this process's own: that uid is "the relay's user".
    let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&good).expect("written"));
    let loaded = load(Some(&good), me);
    let failed = load(Some(&bad), me).map_err(|e| e.to_string());
    let foreign = if me == 0 {
        None
    } else {
        Some(load(Some(&good), me + 1).map_err(|e| e.to_string()))
    };
    let _ = std::fs::remove_dir_all(&dir);
    match loaded {
        Ok(Loaded {
            config,
            source: Some(used),
            ..
        }) => {
            assert_eq!(config.mqtt_port, 1884);
            assert_eq!(used, good);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        failed.err(),
        Some(format!(
            "{}:2: MQTT_PORT: \"0\" is not a port number (1-65535)",
            bad.display()
        ))
    );
    if let Some(foreign) = foreign {
        let why = foreign.expect_err("another user's relay.conf is refused");
        assert!(why.contains("belongs to uid"), "{why}");
    }
}

#[test]
fn shipped_relay_conf_parses_to_defaults() {
    assert_eq!(ok(SHIPPED), Config::default());
}

#[test]
fn shipped_relay_conf_lists_every_key_once_in_order() {
    let lines: Vec<&str> = SHIPPED.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let entry = match split_line(line) {
            Ok(Some(entry)) => entry,
            Ok(None) => continue,
            Err(e) => panic!("relay.conf:{}: {e:?}", index + 1),
        };
        assert!(
            line.starts_with(entry.key) && !line.contains(" #"),
            "relay.conf:{}: expected a plain `KEY = value` line",
            index + 1
        );
        let position = found.len();
        let Some(doc) = KEYS.get(position) else {
            panic!(
                "relay.conf:{}: {} is past the end of KEYS",
                index + 1,
                entry.key
            );
        };
        assert_eq!(
            entry.key,
            doc.key,
            "relay.conf:{}: out of KEYS order",
            index + 1
        );
        assert_eq!(
            entry.value,
            doc.default,
            "relay.conf:{}: {}",
            index + 1,
            doc.key
        );
        let comment = index.checked_sub(1).and_then(|i| lines.get(i));
        assert_eq!(
            comment.copied(),
            Some(format!("# {}", doc.doc).as_str()),
            "relay.conf:{}: {} must follow its one-line comment",
            index + 1,
            doc.key
        );
        found.push(entry.key);
    }
    assert_eq!(found.len(), KEYS.len(), "relay.conf lists {found:?}");
}

#[test]
fn quoted_values_read_back_the_same() {
    for value in [
        "",
        "plain",
        "with space",
        "a#b",
        "it's",
        r#"say "hi""#,
        "127.0.0.0/8, ::1",
    ] {
        let text = format!("MQTT_USERNAME = {}\n", quoted(value));
        let config = parse(&text, "relay.conf").unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(
            config.mqtt_username.as_deref().unwrap_or(""),
            value,
            "{text}"
        );
    }
    assert_eq!(quoted("plain"), "plain");
    assert_eq!(quoted(""), "\"\"");
}

/// The key tables of README.md and docs/PROTOCOL.md (the first block of
/// key rows in each): one row per key, in
/// table order, with its default and its one-line doc.
#[test]
fn documented_key_tables_follow_the_key_table() {
    let want: Vec<String> = KEYS
        .iter()
        .map(|k| {
            let default = if k.default.is_empty() {
                "(empty)".to_string()
            } else {
                format!("`{}`", k.default)
            };
            format!("| `{}` | {default} | {} |", k.key, k.doc)
        })
        .collect();
    for (name, text) in [
        ("README.md", include_str!("../../README.md")),
        ("docs/PROTOCOL.md", include_str!("../../docs/PROTOCOL.md")),
    ] {
        let is_key_row = |line: &&str| {
            line.strip_prefix("| `")
                .and_then(|rest| rest.split_once('`'))
                .is_some_and(|(key, rest)| {
                    rest.starts_with(" |") && KEYS.iter().any(|k| k.key == key)
                })
        };
        // The first block of key rows is the key table (later tables may
        // name keys too).
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|line| !is_key_row(line))
            .take_while(is_key_row)
            .collect();
        assert_eq!(rows, want, "{name}: the key table must match KEYS");
        // A clone of the repository is all a reader has.
        assert!(
            !text.contains("../shared"),
            "{name} points outside the repository"
        );
    }
}

/// The table lists every key once, and each parses its own default.
#[test]
fn key_table_has_each_key_once() {
    for (i, key) in KEYS.iter().enumerate() {
        assert!(
            KEYS[..i].iter().all(|k| k.key != key.key),
            "{} twice",
            key.key
        );
        let mut config = Config::default();
        assert_eq!(config.set(key.key, key.default), Ok(()), "{}", key.key);
    }
    assert_eq!(Config::default().effective().len(), KEYS.len());
}

#[test]
fn parses_hosts_ports_and_ipv6() {
    assert_eq!(
        parse_list("a, b:1884 ,[::1]:8883, ::1, 10.0.0.1:1,").unwrap(),
        vec![
            ("a".into(), None),
            ("b".into(), Some(1884)),
            ("::1".into(), Some(8883)),
            ("::1".into(), None),
            ("10.0.0.1".into(), Some(1)),
        ]
    );
    for bad in [
        "", " , ", "a:0", "a:x", "a:70000", "[::1", "[::1]x", ":1883", "a b",
    ] {
        assert!(parse_list(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn lifetimes_per_type_override_command_ttl() {
    let c = ok("COMMAND_TTL = 600\nCOMMAND_TTLS = IMG:60, FMW:604800 ,CFG:0");
    let lifetimes = c.lifetimes();
    let ttl = |kind| lifetimes.ttl_for(kind);
    assert_eq!(ttl(CommandType::Img), Some(Duration::from_secs(60)));
    assert_eq!(ttl(CommandType::Fmw), Some(Duration::from_secs(604_800)));
    assert_eq!(ttl(CommandType::Cfg), None, "0 = never");
    assert_eq!(ttl(CommandType::Wfi), Some(Duration::from_secs(600)));
    assert_eq!(lifetimes.ttl_key(CommandType::Img), "COMMAND_TTLS IMG");
    assert_eq!(lifetimes.ttl_key(CommandType::Wfi), "COMMAND_TTL");
    assert_eq!(
        c.effective()
            .into_iter()
            .find(|(k, _)| *k == "COMMAND_TTLS")
            .map(|(_, v)| v),
        Some("IMG:60, FMW:604800, CFG:0".to_string())
    );
    assert!(ok("COMMAND_TTLS =").command_ttls.is_empty());
    for (bad, why) in [
        ("COMMAND_TTLS = img:60", "not a command type"),
        ("COMMAND_TTLS = XYZ:60", "not a command type"),
        ("COMMAND_TTLS = IMG", "TYPE:seconds"),
        ("COMMAND_TTLS = IMG:-1", "seconds"),
        ("COMMAND_TTLS = IMG:1, IMG:2", "twice"),
    ] {
        let e = parse(bad, "relay.conf").unwrap_err().to_string();
        assert!(e.contains("COMMAND_TTLS") && e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn presence_field_names_a_field_or_is_off() {
    assert_eq!(Config::default().presence_field.as_deref(), Some("camera"));
    assert_eq!(ok("PRESENCE_FIELD = \"\"").presence_field, None);
    assert_eq!(
        ok("PRESENCE_FIELD = mac").presence_field.as_deref(),
        Some("mac")
    );
    for bad in ["PRESENCE_FIELD = unit", "PRESENCE_FIELD = type"] {
        assert!(parse(bad, "relay.conf").is_err(), "{bad}");
    }
}

/// `head`, then `x`s, then `tail`: `len` bytes in all.
fn sized(head: &str, len: usize, tail: &str) -> String {
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

const TOO_LONG: &str = "more than the 65535 bytes an MQTT string can hold";

#[test]
fn command_topic_must_fit_an_mqtt_topic_with_the_longest_unit() {
    // 65,535 - 128 + "{unit}": with a 128-character unit exactly 65,535 bytes.
    let longest = sized("/", 65_413, "/{unit}");
    let c = ok(&format!("COMMAND_TOPIC = {longest}"));
    assert_eq!(c.command_topic_for(&"u".repeat(LONGEST_UNIT)).len(), 65_535);
    assert_eq!(
        err(&format!(
            "COMMAND_TOPIC = {}",
            sized("/", 65_414, "/{unit}")
        )),
        format!(
            "relay.conf:1: COMMAND_TOPIC: is 65414 bytes: with a unit of 128 characters a \
             command's topic would be 65536 bytes, {TOO_LONG}"
        )
    );
    // What check-config used to accept and the codec then cut.
    let issue = err(&format!(
        "MQTT_QOS = 0\nCOMMAND_TOPIC = {}",
        sized("/", 70_000, "/{unit}")
    ));
    assert!(
        issue.starts_with("relay.conf:2: COMMAND_TOPIC: is 70000 bytes: "),
        "{issue}"
    );
    assert!(issue.len() < 200, "the message does not quote the topic");
}

#[test]
fn credentials_and_filters_must_fit_an_mqtt_string() {
    for key in [
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
        "HEARTBEAT_TOPIC",
        "REPLY_TOPIC",
    ] {
        let longest = sized("+/", 65_535, "");
        let c = ok(&format!("{key} = {longest}"));
        assert!(c.effective().iter().any(|(k, _)| *k == key));
        assert_eq!(
            err(&format!("{key} = {}", sized("+/", 65_536, ""))),
            format!("relay.conf:1: {key}: is 65536 bytes, {TOO_LONG}"),
            "{key}"
        );
    }
    assert_eq!(
        ok(&format!("MQTT_USERNAME = {}", "u".repeat(65_535)))
            .mqtt_username
            .map(|u| u.len()),
        Some(65_535)
    );
}

#[test]
fn client_id_must_fit_with_what_the_relay_appends() {
    // STATE_TOPIC off: only the id's own limit applies.
    let id = |len| format!("STATE_TOPIC = \"\"\nMQTT_CLIENT_ID = {}", "i".repeat(len));
    let c = ok(&id(65_525));
    assert_eq!(format!("{}-pub-probe", c.client_id()).len(), 65_535);
    assert_eq!(
        err(&id(65_526)),
        format!(
            "relay.conf:2: MQTT_CLIENT_ID: is 65526 bytes: with -pub-probe appended the client \
             id would be 65536 bytes, {TOO_LONG}"
        )
    );
}

#[test]
fn state_topic_with_the_client_id_must_fit_an_mqtt_topic() {
    let topic_limit = "more than the 65535 bytes an MQTT topic can hold";
    // The default STATE_TOPIC fills in a long MQTT_CLIENT_ID: the id is named.
    assert_eq!(
        err(&format!("MQTT_CLIENT_ID = {}", "i".repeat(65_510))),
        format!(
            "relay.conf:1: MQTT_CLIENT_ID: is 65510 bytes: STATE_TOPIC with it filled in would \
             be 65537 bytes, {topic_limit}"
        )
    );
    // A long STATE_TOPIC, with the default id assumed as long as a host
    // name can make it (76 bytes).
    let topic = sized("/s/{client_id}/", 65_500, "");
    assert_eq!(
        err(&format!("STATE_TOPIC = {topic}")),
        format!(
            "relay.conf:1: STATE_TOPIC: would be 65565 bytes with {{client_id}} filled in (76 \
             bytes), {topic_limit}"
        )
    );
    assert!(ok(&format!(
        "STATE_TOPIC = {}",
        sized("/s/{client_id}/", 65_470, "")
    ))
    .state_topic
    .is_some());
    // Without {client_id} the topic is what it is.
    assert_eq!(
        err(&format!("STATE_TOPIC = {}", sized("/s", 65_536, ""))),
        format!("relay.conf:1: STATE_TOPIC: is 65536 bytes, {topic_limit}")
    );
    // Both set: the later line is named.
    let long_id = format!("MQTT_CLIENT_ID = {}", "i".repeat(65_000));
    let long_topic = format!("STATE_TOPIC = {}", sized("/{client_id}", 1_000, ""));
    assert!(err(&format!("{long_topic}\n{long_id}"))
        .starts_with("relay.conf:2: MQTT_CLIENT_ID: is 65000 bytes: "));
    assert!(err(&format!("{long_id}\n{long_topic}")).starts_with(
        "relay.conf:2: STATE_TOPIC: would be 65989 bytes with {client_id} filled in (65000 bytes)"
    ));
}

#[test]
fn the_offline_state_message_must_fit_the_last_will() {
    // The offline message quotes the id in JSON besides at most
    // STATE_MESSAGE_WITHOUT_ID bytes, and is the CONNECT's will message.
    let with_id = |id: &str| format!("STATE_TOPIC = /s\nMQTT_CLIENT_ID = '{id}'");
    let longest = 65_535 - STATE_MESSAGE_WITHOUT_ID - 2;
    ok(&with_id(&"i".repeat(longest)));
    let message = err(&with_id(&"i".repeat(longest + 1)));
    assert_eq!(
        message,
        format!(
            "relay.conf:2: MQTT_CLIENT_ID: is 65374 bytes (65376 in JSON): STATE_TOPIC's offline \
             message, the connection's last will, would be more than the 65535 bytes an MQTT \
             will message can hold (with 160 for the rest of it)"
        )
    );
    // Quotes double in JSON; with STATE_TOPIC off there is no will.
    let quotes = "\"".repeat(40_000);
    assert!(err(&with_id(&quotes)).contains("(80002 in JSON)"));
    ok(&format!("STATE_TOPIC = \"\"\nMQTT_CLIENT_ID = '{quotes}'"));
}

#[test]
fn socket_allow_users_takes_names_and_uids() {
    assert!(
        ok("").socket_allow_users.is_empty(),
        "default: every local user"
    );
    assert_eq!(
        ok("SOCKET_ALLOW_USERS = root, 1001 ,ms500-ops").socket_allow_users,
        ["root", "1001", "ms500-ops"]
    );
    assert!(err("SOCKET_ALLOW_USERS = root, a/b").contains("\"a/b\" is not a user name or uid"));
}

#[test]
fn serial_after_names_command_types_once() {
    assert_eq!(
        Config::default().serial_after,
        [
            CommandType::Fmw,
            CommandType::App,
            CommandType::Aim,
            CommandType::Frs
        ]
    );
    assert!(ok("SERIAL_AFTER = \"\"").serial_after.is_empty());
    assert_eq!(ok("SERIAL_AFTER = FMW").serial_after, [CommandType::Fmw]);
    assert!(err("SERIAL_AFTER = FMW, XYZ").contains("\"XYZ\" is not a command type"));
    assert!(err("SERIAL_AFTER = FMW, FMW").contains("FMW is given twice"));
    assert_eq!(Config::default().serial_timeout, Duration::from_secs(600));
    assert_eq!(Config::default().unseen_wait, Duration::from_secs(90));
    assert_eq!(ok("UNSEEN_WAIT = 0").unseen_wait, Duration::ZERO);
}
