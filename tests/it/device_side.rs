//! The upstream half: heartbeats shown and tracked, SCS/UDS replies routed
//! back to the connection that asked, status lines per ACK_MODE.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{publish, read_lines, Broker, Relay, Subscriber, WAIT};
use rumqttc::QoS;

fn reply_topic(unit: &str) -> String {
    format!("/device/ms500/{unit}/socket_reply")
}

fn heartbeat_topic(id: &str) -> String {
    format!("/device/ms500/{id}/online")
}

/// `settings` with the device link on `protocol` (`MQTT_PROTOCOL`).
fn on<'a>(protocol: &'a str, settings: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = settings.to_vec();
    all.push(("MQTT_PROTOCOL", protocol));
    all
}

/// The device link's tests, run on each MQTT version it speaks (issue 21):
/// mosquitto takes both.
macro_rules! on_each_version {
    ($($name:ident),* $(,)?) => {
        mod on_5 {
            $( #[test] fn $name() { super::$name("5") } )*
        }
        mod on_3_1_1 {
            $( #[test] fn $name() { super::$name("3.1.1") } )*
        }
    };
}

on_each_version!(
    heartbeat_fields_appear_in_the_log_and_odd_ones_are_survived,
    silent_device_goes_offline_once_and_comes_back_online,
    scs_reply_reaches_the_asking_connection_only_and_uds_moves_the_route,
    after_a_broker_restart_heartbeats_are_seen_and_replies_reach_their_route_again,
    a_route_taken_over_survives_the_old_holder_closing_and_a_closed_route_can_be_claimed_again,
    a_broker_whose_connack_takes_two_seconds_is_still_reached_by_the_device_link,
    a_reply_sent_while_the_device_link_is_cut_arrives_through_its_session,
);

/// The session is kept (clean start/session off, QoS 1 for both
/// subscriptions): a reply and a heartbeat a camera publishes while the
/// device link's connection is cut arrive once it is back (issue 20: the
/// heartbeat is what releases a camera's held commands).
fn a_reply_sent_while_the_device_link_is_cut_arrives_through_its_session(protocol: &str) {
    let broker = Broker::start();
    let cutter = support::Cutter::new(broker.port);
    let relay = Relay::start(cutter.port, &on(protocol, &[("LOG_LEVEL", "debug")]));
    relay.expect_ready();
    relay.expect_log(&format!("(MQTT {protocol})"), WAIT);
    let mut backend = relay.connect();
    backend
        .write_all(br#"{"type":"SCS","unit":"cam-s"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-s", WAIT);
    cutter.refuse(true);
    cutter.cut();
    relay.expect_log("device link to broker", WAIT);
    publish(
        broker.port,
        "/device/ms500/cam-s/socket_reply",
        br#"{"fps":15}"#,
        QoS::AtLeastOnce,
    );
    publish(
        broker.port,
        &heartbeat_topic("cam-away"),
        br#"{"ip":"10.0.0.9"}"#,
        QoS::AtLeastOnce,
    );
    cutter.refuse(false);
    assert_eq!(read_lines(&backend, 1, WAIT), [r#"{"fps":15}"#]);
    // It arrives, and shows the camera was there, not that it is: its
    // commands wait for a heartbeat sent now (PROTOCOL.md §2.7).
    relay.expect_log(
        "heartbeat cam-away: ts=absent ip=10.0.0.9 net=absent eth=absent wifi=absent lte=absent \
         cpu=absent sense=absent video=absent spi=absent (not live: retained, or kept by the \
         broker while the link was away)",
        WAIT,
    );
    assert!(!relay.log().contains("device cam-away online"));
}

fn heartbeat_fields_appear_in_the_log_and_odd_ones_are_survived(protocol: &str) {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &on(protocol, &[("LOG_LEVEL", "debug")]));
    relay.expect_ready();
    let hb = br#"{"device_id":"cam-07","msg_type":"online","timestamp":1764391000,"ip":"10.1.2.3","network":"wifi","eth_connected":false,"wifi_connected":true,"lte_connected":0,"cpu_temp":51.5,"sense_temp":40.25,"video_fps":14.5,"spi_fps":29,"lte_signal":-77}"#;
    publish(broker.port, &heartbeat_topic("cam-07"), hb, QoS::AtMostOnce);
    relay.expect_log("heartbeat cam-07:", WAIT);
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains("heartbeat cam-07:"))
        .unwrap();
    for part in [
        "ts=1764391000",
        "ip=10.1.2.3",
        "net=wifi",
        "eth=down",
        "wifi=up",
        "lte=down",
        "cpu=51.5C",
        "sense=40.25C",
        "video=14.5fps",
        "spi=29fps",
        "lte_signal=-77",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }

    // Missing fields are absent, not zero.
    publish(
        broker.port,
        &heartbeat_topic("cam-08"),
        br#"{"ip":"10.1.2.4"}"#,
        QoS::AtMostOnce,
    );
    relay.expect_log("heartbeat cam-08:", WAIT);
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains("heartbeat cam-08:"))
        .unwrap();
    assert!(
        line.contains("cpu=absent") && !line.contains("lte_signal"),
        "{line}"
    );

    // Non-JSON and odd heartbeats: one warn line, and the relay carries on.
    publish(
        broker.port,
        &heartbeat_topic("cam-09"),
        b"\xff\xfeonline",
        QoS::AtMostOnce,
    );
    publish(
        broker.port,
        &heartbeat_topic("cam-09"),
        b"[1,2]",
        QoS::AtMostOnce,
    );
    relay.expect_log("odd heartbeat from device cam-09", WAIT);
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay
        .connect()
        .write_all(br#"{"type":"IMG","unit":"cam-09"}"#)
        .unwrap();
    assert!(
        sub.recv(WAIT).is_some(),
        "relay still relays after odd heartbeats"
    );
    assert!(
        !relay.log().contains("heartbeat cam-09:"),
        "odd heartbeats are not shown as status"
    );
}

#[test]
fn a_retained_17_mb_heartbeat_costs_only_itself_while_commands_flow() {
    let broker = Broker::start();
    // 17 MB of non-JSON, retained: offered to the relay on every subscribe.
    // The relay's device link announces a 1 MiB packet limit (MQTT 5), so the
    // broker drops it for the relay; the command link never carries it.
    let mut opts = rumqttc::MqttOptions::new("big-retained", "127.0.0.1", broker.port);
    opts.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut conn) = rumqttc::Client::new(opts, 8);
    client
        .publish(
            heartbeat_topic("camZ"),
            QoS::AtLeastOnce,
            true,
            vec![b'x'; 17_000_000],
        )
        .unwrap();
    // A small retained heartbeat beside it still arrives.
    client
        .publish(
            heartbeat_topic("camY"),
            QoS::AtLeastOnce,
            true,
            br#"{"ip":"10.0.0.9"}"#.to_vec(),
        )
        .unwrap();
    let mut acked = 0;
    for event in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = event {
            acked += 1;
            if acked == 2 {
                break;
            }
        }
    }
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("LOG_LEVEL", "debug")]);
    let mut s = relay.connect();
    for i in 0..100 {
        s.write_all(format!(r#"{{"type":"IMG","unit":"after-big","id":{i}}}"#).as_bytes())
            .unwrap();
    }
    let got = sub.collect(100, WAIT);
    assert_eq!(got.len(), 100, "log:\n{}", relay.log());
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m.payload,
            format!(r#"{{"type":"IMG","unit":"after-big","id":{i}}}"#).as_bytes()
        );
    }
    relay.expect_log("heartbeat camY: ts=absent ip=10.0.0.9", WAIT);
    // Time is the test here: a reconnect loop (the broker offering the 17 MB
    // message again on every subscribe) shows within 3 s, its first backoff
    // being 1 s; nothing the relay reports says "and nothing more happened".
    std::thread::sleep(Duration::from_secs(3));
    let log = relay.log();
    assert_eq!(
        log.matches("connected to broker").count(),
        2,
        "one per link, no reconnect loop:\n{log}"
    );
    assert!(
        !log.contains("lost connection") && !log.contains("device link to broker"),
        "{log}"
    );
    assert!(
        !log.contains("camZ"),
        "the 17 MB message never reached the relay:\n{log}"
    );
}

#[test]
fn a_backend_that_half_closes_still_gets_its_status_lines() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("ACK_MODE", "all")]);
    relay.expect_ready();
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

fn silent_device_goes_offline_once_and_comes_back_online(protocol: &str) {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &on(protocol, &[("DEVICE_TIMEOUT", "2")]));
    relay.expect_ready();
    publish(
        broker.port,
        &heartbeat_topic("cam-q"),
        br#"{"ip":"10.0.0.1"}"#,
        QoS::AtMostOnce,
    );
    relay.expect_log("device cam-q offline", WAIT);
    // Time is the test here: "offline" must not come again in the next 1.5
    // DEVICE_TIMEOUTs of silence.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        relay.log().matches("device cam-q offline").count(),
        1,
        "offline is logged once"
    );
    publish(
        broker.port,
        &heartbeat_topic("cam-q"),
        br#"{"ip":"10.0.0.1"}"#,
        QoS::AtMostOnce,
    );
    relay.expect_log("device cam-q is back online", WAIT);
}

fn scs_reply_reaches_the_asking_connection_only_and_uds_moves_the_route(protocol: &str) {
    let broker = Broker::start();
    // Unrouted replies are counted and logged at debug only (several relays
    // on one broker all see every reply).
    let relay = Relay::start(broker.port, &on(protocol, &[("LOG_LEVEL", "debug")]));
    relay.expect_ready();
    let mut a = relay.connect();
    let mut b = relay.connect();
    a.write_all(br#"{"type":"SCS","unit":"cam-r"}"#).unwrap();
    relay.expect_log("accepted SCS for unit cam-r", WAIT);
    let reply = "{\"fps\": 15, \"name\": \"caf\u{e9}\"}";
    publish(
        broker.port,
        &reply_topic("cam-r"),
        reply.as_bytes(),
        QoS::AtLeastOnce,
    );
    assert_eq!(
        read_lines(&a, 1, WAIT),
        vec![reply.to_string()],
        "byte-exact plus newline"
    );
    assert!(
        read_lines(&b, 1, Duration::from_millis(500)).is_empty(),
        "b did not ask"
    );

    // UDS from b takes the route over.
    b.write_all(br#"{"type":"UDS","unit":"cam-r","settings":{"fps":10}}"#)
        .unwrap();
    // The session claims the route before it hands the command on.
    relay.expect_log("accepted UDS for unit cam-r", WAIT);
    publish(
        broker.port,
        &reply_topic("cam-r"),
        b"{\"ok\":true}",
        QoS::AtLeastOnce,
    );
    assert_eq!(read_lines(&b, 1, WAIT), vec!["{\"ok\":true}".to_string()]);
    assert!(
        read_lines(&a, 1, Duration::from_millis(500)).is_empty(),
        "route moved away from a"
    );

    // b closes: its route is gone and the reply is dropped (debug line).
    drop(b);
    // The session drops its routes right after this line; the reply below
    // takes far longer to come back through the broker.
    relay.expect_log("closed the connection", WAIT);
    publish(
        broker.port,
        &reply_topic("cam-r"),
        b"{\"late\":1}",
        QoS::AtLeastOnce,
    );
    relay.expect_log("reply from unit cam-r has no backend route", WAIT);
    assert!(read_lines(&a, 1, Duration::from_millis(500)).is_empty());

    // An unrouted reply for an unknown unit is survived; a is still served.
    publish(broker.port, &reply_topic("ghost"), b"{}", QoS::AtLeastOnce);
    relay.expect_log("reply from unit ghost has no backend route", WAIT);
    a.write_all(br#"{"type":"SCS","unit":"cam-s"}"#).unwrap();
    relay.expect_log("accepted SCS for unit cam-s", WAIT);
    publish(
        broker.port,
        &reply_topic("cam-s"),
        b"{\"s\":1}",
        QoS::AtLeastOnce,
    );
    assert_eq!(read_lines(&a, 1, WAIT), vec!["{\"s\":1}".to_string()]);
}

fn parse(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

#[test]
fn ack_mode_all_writes_one_ok_line_per_command_and_error_lines_naming_the_field() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("ACK_MODE", "all")]);
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
    let values: Vec<serde_json::Value> = lines.iter().map(|l| parse(l)).collect();
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
    let mut broker = Broker::start();
    let relay = Relay::start(broker.port, &[("ACK_MODE", "all")]);
    relay.expect_ready();
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
    assert_eq!(parse(&lines[0])["id"], "while-down");
}

#[test]
fn ack_mode_errors_writes_only_error_lines_and_none_writes_only_replies() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("ACK_MODE", "errors")]);
    relay.expect_ready();
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
    let first = parse(&lines[0]);
    assert_eq!(first["status"], "error");
    assert_eq!(first["id"], 2);
    assert_eq!(first["error"], r#"missing field "coordinates""#);
    let second = parse(&lines[1]);
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
    publish(
        broker.port,
        &reply_topic("n1"),
        b"{\"r\":1}",
        QoS::AtLeastOnce,
    );
    let lines = read_lines(&s, 2, Duration::from_secs(3));
    assert_eq!(lines, vec!["{\"r\":1}".to_string()]);
}

#[test]
fn a_backend_that_never_reads_does_not_delay_other_connections() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[]);
    relay.expect_ready();
    let mut lazy = relay.connect();
    lazy.write_all(br#"{"type":"SCS","unit":"flood"}"#).unwrap();
    relay.expect_log("accepted SCS for unit flood", WAIT);
    let _ = sub.recv(WAIT);

    // The device floods replies (QoS 0, 4 KiB each, ~40 MB) from another thread.
    let port = broker.port;
    let flooder = std::thread::spawn(move || {
        let mut opts = rumqttc::MqttOptions::new("flooder", "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(opts, 1000);
        let pump = std::thread::spawn(move || {
            for e in conn.iter() {
                if e.is_err() {
                    break;
                }
            }
        });
        let payload = vec![b'x'; 4096];
        for _ in 0..10_000 {
            if client
                .publish(
                    reply_topic("flood"),
                    QoS::AtMostOnce,
                    false,
                    payload.clone(),
                )
                .is_err()
            {
                break;
            }
        }
        let _ = client.disconnect();
        let _ = pump.join();
    });

    // Meanwhile another backend's commands go straight through.
    let mut other = relay.connect();
    let started = Instant::now();
    for i in 0..200 {
        other
            .write_all(format!(r#"{{"type":"IMG","unit":"busy","id":{i}}}"#).as_bytes())
            .unwrap();
    }
    let got = sub.collect(200, WAIT);
    assert_eq!(got.len(), 200, "log tail:\n{}", relay.log_tail(20));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "other backends were held up for {:?}",
        started.elapsed()
    );
    flooder.join().unwrap();
    relay.expect_log("is not reading", Duration::from_secs(20));
    drop(lazy);
}

fn after_a_broker_restart_heartbeats_are_seen_and_replies_reach_their_route_again(protocol: &str) {
    let mut broker = Broker::start();
    let relay = Relay::start(broker.port, &on(protocol, &[("LOG_LEVEL", "debug")]));
    relay.expect_ready();
    let mut a = relay.connect();
    a.write_all(br#"{"type":"SCS","unit":"cam-re"}"#).unwrap();
    relay.expect_log("accepted SCS for unit cam-re", WAIT);
    let device_links = || {
        relay
            .log()
            .matches("device link connected to broker")
            .count()
    };
    let before = device_links();

    // The broker loses everything: sessions, subscriptions.
    broker.stop();
    broker.restart();
    assert!(
        support::wait_until(Duration::from_secs(40), || device_links() > before),
        "the device link never came back; log:\n{}",
        relay.log()
    );
    // Subscribed again: from here on nothing published is missed.
    relay.expect_subscribed_times(2);
    publish(
        broker.port,
        &heartbeat_topic("cam-re"),
        b"{\"ip\":\"10.9.9.9\"}",
        QoS::AtLeastOnce,
    );
    relay.expect_log("heartbeat cam-re:", WAIT);
    // The route lives in the relay: it outlived the broker.
    publish(
        broker.port,
        &reply_topic("cam-re"),
        b"{\"after\":\"restart\"}",
        QoS::AtLeastOnce,
    );
    let line = read_lines(&a, 1, WAIT);
    assert_eq!(
        line,
        vec!["{\"after\":\"restart\"}".to_string()],
        "no reply after the restart; log:\n{}",
        relay.log()
    );
}

fn a_route_taken_over_survives_the_old_holder_closing_and_a_closed_route_can_be_claimed_again(
    protocol: &str,
) {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &on(protocol, &[]));
    relay.expect_ready();
    let mut a = relay.connect();
    let mut b = relay.connect();
    a.write_all(br#"{"type":"SCS","unit":"cam-t"}"#).unwrap();
    relay.expect_log("accepted SCS for unit cam-t from", WAIT);
    b.write_all(br#"{"type":"UDS","unit":"cam-t","settings":{"x":1}}"#)
        .unwrap();
    relay.expect_log("accepted UDS for unit cam-t from", WAIT);

    // The old holder leaves: b's route stays.
    drop(a);
    // Whenever a's routes go, b's claim on cam-t is not among them.
    relay.expect_log("closed the connection", WAIT);
    publish(
        broker.port,
        &reply_topic("cam-t"),
        b"{\"to\":\"b\"}",
        QoS::AtLeastOnce,
    );
    assert_eq!(read_lines(&b, 1, WAIT), vec!["{\"to\":\"b\"}".to_string()]);

    // b leaves too; a new connection claims the same unit and gets its replies.
    drop(b);
    relay.expect_log_count("closed the connection", 2, WAIT);
    let mut c = relay.connect();
    c.write_all(br#"{"type":"SCS","unit":"cam-t"}"#).unwrap();
    relay.expect_log_count("accepted SCS for unit cam-t from", 2, WAIT);
    publish(
        broker.port,
        &reply_topic("cam-t"),
        b"{\"to\":\"c\"}",
        QoS::AtLeastOnce,
    );
    assert_eq!(read_lines(&c, 1, WAIT), vec!["{\"to\":\"c\"}".to_string()]);
}

/// A TCP proxy to `broker` that holds the broker's first answer on each
/// connection (the CONNACK) for `delay`, like a slow link.
fn slow_first_answer(broker: u16, delay: Duration) -> u16 {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { continue };
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", broker)) else {
                continue;
            };
            let (mut up_from, mut up_to) =
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up_from, &mut up_to);
                let _ = up_to.shutdown(std::net::Shutdown::Both);
            });
            let (mut down_from, mut down_to) = (outbound, inbound);
            std::thread::spawn(move || {
                let mut first = [0u8; 4096];
                let Ok(n) = std::io::Read::read(&mut down_from, &mut first) else {
                    return;
                };
                // Time is the test: the broker's first answer comes late.
                std::thread::sleep(delay);
                if down_to.write_all(&first[..n]).is_ok() {
                    let _ = std::io::copy(&mut down_from, &mut down_to);
                }
                let _ = down_to.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

fn a_broker_whose_connack_takes_two_seconds_is_still_reached_by_the_device_link(protocol: &str) {
    let broker = Broker::start();
    let slow = slow_first_answer(broker.port, Duration::from_secs(2));
    let relay = Relay::start(slow, &on(protocol, &[("LOG_LEVEL", "debug")]));
    relay.expect_log("device link connected to broker", WAIT);
    relay.expect_subscribed();
    publish(
        broker.port,
        &heartbeat_topic("cam-slow"),
        b"{}",
        QoS::AtMostOnce,
    );
    relay.expect_log("heartbeat cam-slow:", WAIT);
}

/// Finding 4 of issue 22: a device cannot forge status lines. With status
/// lines on, each reply comes wrapped and names its unit; a reply holding a
/// raw newline or two values is dropped and counted, whatever ACK_MODE.
#[test]
fn a_device_reply_cannot_pass_for_a_status_line() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("ACK_MODE", "errors")]);
    relay.expect_subscribed();
    let mut s = relay.connect();
    s.write_all(br#"{"type":"SCS","unit":"cam-01"}"#).unwrap();
    s.write_all(br#"{"type":"AIM","unit":"cam-02","id":7}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-01", WAIT);
    let error = read_lines(&s, 1, WAIT);
    assert_eq!(parse(&error[0])["status"], "error", "{error:?}");
    let forged = "{\"fw\":1}\n{\"status\":\"ok\",\"type\":\"AIM\",\"unit\":\"cam-02\",\"id\":7}";
    let two = r#"{"fw":1}{"status":"ok","type":"AIM","unit":"cam-02","id":7}"#;
    let honest = r#"{"status":"ok","type":"AIM","unit":"cam-02","id":7}"#;
    for payload in [forged, two, honest] {
        publish(
            broker.port,
            &reply_topic("cam-01"),
            payload.as_bytes(),
            QoS::AtLeastOnce,
        );
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
        publish(
            broker.port,
            &reply_topic("cam-01"),
            payload.as_bytes(),
            QoS::AtLeastOnce,
        );
    }
    relay.expect_log_count("reply from unit cam-01 dropped", 2, WAIT);
    let lines = read_lines(&s, 2, Duration::from_secs(2));
    assert_eq!(lines, [honest.to_string()]);
}

/// Finding 4: a reply shaped like an error line does not make `send` fail.
#[test]
fn send_tells_a_reply_shaped_like_an_error_from_a_status_line() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[]);
    relay.expect_subscribed();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let port = broker.port;
    let device = std::thread::spawn(move || {
        sub.recv(WAIT).expect("the SCS reaches the camera");
        publish(
            port,
            &reply_topic("cam-01"),
            br#"{"status":"error","type":"AIM","unit":"cam-01","error":"x"}"#,
            QoS::AtLeastOnce,
        );
    });
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, err) = support::run_bin(
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
    assert!(
        out.contains(r#"{"reply":{"status":"error""#),
        "the reply is printed as one:\n{out}"
    );
}
