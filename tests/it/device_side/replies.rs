//! Device replies (to SCS and UDS) reach the connection that asked, and
//! only it: a UDS moves the route, a route outlives a broker restart and a
//! cut device link, a flood of SCS evicts only its sender's routes, and a
//! backend that never reads its replies costs only its own budget.

use std::io::Write;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::support;
use crate::support::{
    broker_and_relay, closed_by_peer, device, device_reply, heartbeat_topic, peak_rss_kib, publish,
    read_lines, ready_on, reply_topic, with_protocol, Broker, Relay, RSS_LIMIT_KIB, WAIT,
};

on_each_version!(
    scs_reply_reaches_the_asking_connection_only_and_uds_moves_the_route,
    after_a_broker_restart_heartbeats_are_seen_and_replies_reach_their_route_again,
    a_route_taken_over_survives_the_old_holder_closing_and_a_closed_route_can_be_claimed_again,
    a_reply_sent_while_the_device_link_is_cut_arrives_through_its_session,
);

fn scs_reply_reaches_the_asking_connection_only_and_uds_moves_the_route(protocol: &str) {
    let broker = Broker::start();
    // Unrouted replies are counted and logged at debug only (several relays
    // on one broker all see every reply).
    let relay = Relay::start(
        broker.port,
        &with_protocol(protocol, &[("LOG_LEVEL", "debug")]),
    );
    relay.expect_ready();
    let mut a = relay.connect();
    let mut b = relay.connect();
    a.write_all(br#"{"type":"SCS","unit":"cam-r"}"#).unwrap();
    relay.expect_log("accepted SCS for unit cam-r", WAIT);
    let reply = "{\"fps\": 15, \"name\": \"caf\u{e9}\"}";
    device_reply(broker.port, "cam-r", reply.as_bytes());
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
    device_reply(broker.port, "cam-r", b"{\"ok\":true}");
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
    device_reply(broker.port, "cam-r", b"{\"late\":1}");
    relay.expect_log("reply from unit cam-r has no backend route", WAIT);
    assert!(read_lines(&a, 1, Duration::from_millis(500)).is_empty());

    // An unrouted reply for an unknown unit is survived; a is still served.
    publish(broker.port, &reply_topic("ghost"), b"{}", QoS::AtLeastOnce);
    relay.expect_log("reply from unit ghost has no backend route", WAIT);
    a.write_all(br#"{"type":"SCS","unit":"cam-s"}"#).unwrap();
    relay.expect_log("accepted SCS for unit cam-s", WAIT);
    device_reply(broker.port, "cam-s", b"{\"s\":1}");
    assert_eq!(read_lines(&a, 1, WAIT), vec!["{\"s\":1}".to_string()]);
}

fn after_a_broker_restart_heartbeats_are_seen_and_replies_reach_their_route_again(protocol: &str) {
    let (mut broker, relay) = ready_on(protocol, &[("LOG_LEVEL", "debug")]);
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
    device_reply(broker.port, "cam-re", b"{\"after\":\"restart\"}");
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
    let (broker, relay) = ready_on(protocol, &[]);
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
    device_reply(broker.port, "cam-t", b"{\"to\":\"b\"}");
    assert_eq!(read_lines(&b, 1, WAIT), vec!["{\"to\":\"b\"}".to_string()]);

    // b leaves too; a new connection claims the same unit and gets its replies.
    drop(b);
    relay.expect_log_count("closed the connection", 2, WAIT);
    let mut c = relay.connect();
    c.write_all(br#"{"type":"SCS","unit":"cam-t"}"#).unwrap();
    relay.expect_log_count("accepted SCS for unit cam-t from", 2, WAIT);
    device_reply(broker.port, "cam-t", b"{\"to\":\"c\"}");
    assert_eq!(read_lines(&c, 1, WAIT), vec!["{\"to\":\"c\"}".to_string()]);
}

/// The session is kept (clean start/session off, QoS 1 for both
/// subscriptions): a reply and a heartbeat a camera publishes while the
/// device link's connection is cut arrive once it is back (issue 20: the
/// heartbeat is what releases a camera's held commands).
fn a_reply_sent_while_the_device_link_is_cut_arrives_through_its_session(protocol: &str) {
    let broker = Broker::start();
    let cutter = support::Cutter::new(broker.port);
    let relay = Relay::start(
        cutter.port,
        &with_protocol(protocol, &[("LOG_LEVEL", "debug")]),
    );
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
    device_reply(broker.port, "cam-s", br#"{"fps":15}"#);
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

/// Finding 1: a connection claiming more units than MAX_DEVICES evicts its
/// own oldest routes, never another connection's.
#[test]
fn a_flood_of_scs_evicts_only_its_own_routes() {
    let (broker, relay) = broker_and_relay(&[("MAX_DEVICES", "4")]);
    relay.expect_subscribed();
    let mut root = relay.connect();
    root.write_all(br#"{"type":"SCS","unit":"cam-01"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-01", WAIT);
    let mut flood = relay.connect();
    for i in 0..50 {
        flood
            .write_all(format!(r#"{{"type":"SCS","unit":"made-up-{i}"}}"#).as_bytes())
            .unwrap();
    }
    relay.expect_log("accepted SCS for unit made-up-49", WAIT);
    device_reply(broker.port, "cam-01", b"{\"fw\":1}");
    assert_eq!(
        read_lines(&root, 1, WAIT),
        ["{\"fw\":1}"],
        "root's route held"
    );
}

#[test]
fn a_backend_that_never_reads_its_replies_costs_its_budget_and_is_closed_after_5_s() {
    let (broker, relay) = broker_and_relay(&[]);
    let mut backend = relay.connect();
    backend
        .write_all(br#"{"type":"SCS","unit":"cam-big"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-big", WAIT);
    let dev = device(broker.port, "replier");
    let started = Instant::now();
    for _ in 0..300 {
        dev.publish(
            "/device/ms500/cam-big/socket_reply",
            QoS::AtLeastOnce,
            false,
            vec![b'r'; 1_000_000],
        )
        .unwrap();
    }
    // The backend reads nothing: at most 1 MiB waits for it, the rest is
    // dropped, and the write that cannot complete closes it after 5 s.
    relay.expect_log(
        "did not read for 5 s: closing the connection",
        Duration::from_secs(30),
    );
    println!("closed {:?} after the replies started", started.elapsed());
    assert!(closed_by_peer(&mut backend, Duration::from_secs(5)));
    let peak = peak_rss_kib(relay.pid());
    println!("peak RSS {peak} KiB");
    assert!(peak <= RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    let log = relay.log();
    assert!(
        log.matches("is not reading: dropped device reply").count() <= 1,
        "one warn line per 1000 drops"
    );
}
