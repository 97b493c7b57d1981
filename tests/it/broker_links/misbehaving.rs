//! Brokers that misbehave (issue 21), against the real binary: a scriptable
//! fake broker (`support::fake_broker`) for what no real broker can be made
//! to do (a trickled CONNACK, a withheld PUBACK, no PUBACK at all), and
//! real mosquittos beside it for everything that must still flow; a command
//! larger than the broker takes is set aside, not retried for ever.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::fake_broker::{FakeBroker, Script};
use crate::support::{
    collect_ids, numbered_command as command, numbered_commands, publish_link_on, read_lines,
    Broker, Relay, Subscriber, COMMANDS, WAIT,
};

#[test]
fn a_broker_trickling_its_connack_costs_one_attempt_and_sigterm_is_honoured() {
    let trickler = FakeBroker::start(Script::Trickle);
    let b = Broker::start();
    let sub = Subscriber::new(b.port, COMMANDS);
    let mut relay = Relay::start_listing(&[trickler.port, b.port], &[("SHUTDOWN_GRACE", "2")]);
    relay.expect_log(
        &format!(
            "cannot connect to broker 127.0.0.1:{}: no CONNACK from the broker within",
            trickler.port
        ),
        WAIT,
    );
    relay.expect_log(&publish_link_on(b.port), WAIT);
    let mut backend = relay.connect();
    let n = 100;
    let burst: String = (0..n).map(command).collect();
    backend.write_all(burst.as_bytes()).unwrap();
    let (ids, _) = collect_ids(&sub, n, Duration::from_secs(10));
    assert_eq!(ids.len(), n, "every command reached the second broker");
    // The relay is probing the trickling first broker meanwhile: SIGTERM
    // must still end it within SHUTDOWN_GRACE + 1 s. (The backend leaves
    // first: a backend that stays is given SHUTDOWN_GRACE + 1 s itself.)
    drop(backend);
    stops_on_sigterm_within(&mut relay, Duration::from_secs(3));
}

#[test]
fn sigterm_is_honoured_while_the_only_broker_trickles() {
    let trickler = FakeBroker::start(Script::Trickle);
    let mut relay = Relay::start(trickler.port, &[("SHUTDOWN_GRACE", "5")]);
    relay.expect_log("no CONNACK from the broker within", WAIT);
    stops_on_sigterm_within(&mut relay, Duration::from_secs(6));
}

/// SIGTERM stops the relay, with exit 0, within `limit`.
#[track_caller]
fn stops_on_sigterm_within(relay: &mut Relay, limit: Duration) {
    let asked = Instant::now();
    relay.signal("TERM");
    let status = relay.wait_exit(WAIT).expect("the relay stops");
    let took = asked.elapsed();
    println!("stopped {took:?} after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(took <= limit, "stopping took {took:?}\n{}", relay.log());
}

#[test]
fn one_lost_puback_is_published_again_within_its_deadline_while_others_arrive() {
    // MQTT_KEEPALIVE 5: each command has 10 s for its PUBACK.
    let broker = FakeBroker::start(Script::WithholdPuback(2));
    let relay = Relay::start(broker.port, &[("MQTT_KEEPALIVE", "5"), ("ACK_MODE", "all")]);
    relay.expect_connected();
    let mut backend = relay.connect();
    let n = 30;
    let started = Instant::now();
    for i in 0..n {
        backend.write_all(command(i).as_bytes()).unwrap();
        // Time is the test: PUBACKs of later commands keep arriving while
        // the third one's is withheld.
        std::thread::sleep(Duration::from_millis(500));
    }
    let lines = read_lines(&backend, n, WAIT);
    let took = started.elapsed();
    assert_eq!(lines.len(), n, "{lines:?}\n{}", relay.log());
    assert!(lines.iter().all(|l| l.contains("\"ok\"")), "{lines:?}");
    relay.expect_log("WARN  no PUBACK for IMG for unit d2 within 10 s", WAIT);
    let third = command(2);
    let copies = broker
        .published()
        .iter()
        .filter(|p| third.trim_end().as_bytes() == p.as_slice())
        .count();
    assert_eq!(copies, 2, "published again once");
    // 10 s deadline plus the reconnect after the 15 s of sending.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_trickling_first_broker_being_probed_never_slows_the_live_link() {
    // MQTT_KEEPALIVE 5: the first broker is probed every 2.5 s.
    let trickler = FakeBroker::start(Script::Trickle);
    let b = Broker::start();
    let relay = Relay::start_listing(
        &[trickler.port, b.port],
        &[("MQTT_KEEPALIVE", "5"), ("ACK_MODE", "all")],
    );
    relay.expect_log(&publish_link_on(b.port), WAIT);
    let mut backend = relay.connect();
    let reader = backend.try_clone().unwrap();
    let n = 600;
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let sent = Instant::now();
        backend.write_all(command(i).as_bytes()).unwrap();
        let line = read_lines(&reader, 1, WAIT);
        assert!(
            line.len() == 1 && line[0].contains("\"ok\""),
            "{i}: {line:?}"
        );
        slowest = slowest.max(sent.elapsed());
        // Time is the test: the stream must span several probes.
        std::thread::sleep(Duration::from_millis(10));
    }
    let probes = trickler.seen.connects.lock().unwrap().len();
    println!("probed {probes} times; slowest ok line {slowest:?}");
    assert!(probes >= 2, "the stream spanned probes");
    assert!(
        slowest < Duration::from_millis(500),
        "a command waited {slowest:?}"
    );
}

#[test]
fn a_first_broker_that_takes_no_publish_is_not_taken_back() {
    let deaf = FakeBroker::start(Script::NoPuback);
    let b = Broker::start();
    let relay = Relay::start_listing(&[deaf.port, b.port], &[("MQTT_KEEPALIVE", "5")]);
    relay.expect_log(&publish_link_on(deaf.port), WAIT);
    let mut backend = relay.connect();
    backend.write_all(command(0).as_bytes()).unwrap();
    // No PUBACK: the link is dropped and the relay moves to the second.
    relay.expect_log(&publish_link_on(b.port), WAIT);
    // Time is the test: answered probes for 2 × MQTT_KEEPALIVE (10 s)
    // would take the first back; it answers CONNECT but takes no publish.
    std::thread::sleep(Duration::from_secs(14));
    assert!(
        deaf.seen.connects.lock().unwrap().len() >= 4,
        "it was probed"
    );
    assert!(
        !relay.log().contains("moving back to it"),
        "{}",
        relay.log()
    );
}

/// A mosquitto that closes the connection over a packet above 20,000
/// bytes, a subscriber to the commands on it, and the relay with
/// ACK_MODE errors and `settings`, its publish link up.
fn small_broker_and_relay(settings: &[(&str, &str)]) -> (Broker, Subscriber, Relay) {
    let broker = Broker::start_with("max_packet_size 20000\n");
    let sub = Subscriber::new(broker.port, COMMANDS);
    let mut all = vec![("ACK_MODE", "errors")];
    all.extend_from_slice(settings);
    let relay = Relay::start(broker.port, &all);
    relay.expect_connected();
    (broker, sub, relay)
}

/// A command of 30,000 bytes, then 20 small ones, on one connection:
/// every small one arrives (each within `quiet` of the last); the first
/// line the backend reads back.
fn big_then_20_small(relay: &Relay, sub: &Subscriber, quiet: Duration) -> Vec<String> {
    let mut backend = relay.connect();
    let blob = "b".repeat(30_000);
    let big = format!(r#"{{"type":"CFG","unit":"big","id":"big","configs":{{"blob":"{blob}"}}}}"#);
    backend.write_all(big.as_bytes()).unwrap();
    backend
        .write_all(numbered_commands(0..20).as_bytes())
        .unwrap();
    let (ids, _) = collect_ids(sub, 20, quiet);
    assert_eq!(
        ids.len(),
        20,
        "every small command arrived\n{}",
        relay.log()
    );
    read_lines(&backend, 1, WAIT)
}

#[test]
fn a_command_the_broker_cannot_take_is_set_aside_after_two_breaks_and_the_rest_flows() {
    // On MQTT 3.1.1 the device link learns no limit from the broker.
    let (_broker, sub, relay) = small_broker_and_relay(&[("MQTT_PROTOCOL", "3.1.1")]);
    relay.expect_subscribed();
    let lines = big_then_20_small(&relay, &sub, Duration::from_secs(15));
    assert!(
        lines.len() == 1 && lines[0].contains("set aside") && lines[0].contains("\"big\""),
        "{lines:?}"
    );
    relay.expect_log(
        "bytes): the broker closed the connection twice with it first unacknowledged (its \
         PUBLISH is",
        WAIT,
    );
}

#[test]
fn with_mqtt_max_packet_bytes_a_larger_command_is_set_aside_at_once() {
    let (_broker, sub, relay) = small_broker_and_relay(&[("MQTT_MAX_PACKET_BYTES", "20000")]);
    let lines = big_then_20_small(&relay, &sub, Duration::from_secs(10));
    assert!(
        lines[0].contains("MQTT_MAX_PACKET_BYTES 20000"),
        "{lines:?}"
    );
    relay.expect_log(
        "more than the broker takes (MQTT_MAX_PACKET_BYTES 20000)",
        WAIT,
    );
    assert!(
        !relay.log().contains("lost connection to broker"),
        "the link never broke\n{}",
        relay.log()
    );
}

#[test]
fn the_maximum_packet_size_a_broker_announces_sets_a_larger_command_aside_at_once() {
    let (_broker, sub, relay) = small_broker_and_relay(&[]);
    // The device link's MQTT 5 CONNACK carries the broker's limit.
    relay.expect_subscribed();
    let lines = big_then_20_small(&relay, &sub, Duration::from_secs(10));
    assert!(
        lines[0].contains("the broker's Maximum Packet Size 20000"),
        "{lines:?}"
    );
    assert!(
        !relay.log().contains("lost connection to broker"),
        "the link never broke\n{}",
        relay.log()
    );
}
