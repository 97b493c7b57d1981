//! The device link on brokers that differ: RabbitMQ 3.10 and others that
//! speak only MQTT 3.1.1, a CONNACK that takes two seconds, and a broker
//! that never confirms the subscriptions.

use std::io::Write;
use std::time::Duration;

use rumqttc::QoS;

use crate::support::fake_broker::{FakeBroker, Script};
use crate::support::rabbit::Rabbit;
use crate::support::{
    device_reply, heartbeat, publish, read_lines, require, wait_until, with_protocol, Broker,
    Relay, Subscriber, COMMANDS, WAIT,
};

on_each_version!(a_broker_whose_connack_takes_two_seconds_is_still_reached_by_the_device_link,);

/// RabbitMQ before 3.13 speaks only MQTT 3.1.1 (Debian 12 ships 3.10): with
/// `MQTT_PROTOCOL = auto` the device link learns it at the first CONNECT,
/// and heartbeats, replies and commands all flow.
#[test]
fn on_rabbitmq_3_10_the_device_link_speaks_3_1_1_and_replies_come_back() {
    require(
        Rabbit::installed(),
        "rabbitmq-server is not installed (scripts/test.sh installs it)",
    );
    let rabbit = Rabbit::start();
    // Heartbeat lines are debug.
    let relay = Relay::start_with_status(rabbit.port, &[("LOG_LEVEL", "debug")]);
    relay.expect_log(
        "does not take MQTT 5: the device link speaks MQTT 3.1.1 to it from now on",
        WAIT,
    );
    relay.expect_subscribed();
    publish(
        rabbit.port,
        "/device/ms500/cam-r/online",
        br#"{"ip":"10.0.0.9"}"#,
        QoS::AtLeastOnce,
    );
    relay.expect_log("heartbeat cam-r:", WAIT);
    let sub = Subscriber::new(rabbit.port, COMMANDS);
    let mut backend = relay.connect();
    backend
        .write_all(br#"{"type":"SCS","unit":"cam-r"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some(), "the command reached RabbitMQ");
    device_reply(rabbit.port, "cam-r", br#"{"fps":12}"#);
    assert_eq!(read_lines(&backend, 1, WAIT), [r#"{"fps":12}"#]);
    assert!(wait_until(WAIT, || {
        let link = &relay.status()["device_link"];
        link["protocol"] == "3.1.1" && link["subscribed"] == true
    }));
}

#[test]
fn a_broker_refusing_mqtt_5_is_spoken_to_in_3_1_1_and_a_fixed_5_is_kept() {
    let old = FakeBroker::start(Script::Only311);
    let relay = Relay::start(old.port, &[]);
    relay.expect_log("trying MQTT 3.1.1", WAIT);
    relay.expect_log("device link connected to broker", WAIT);
    relay.expect_subscribed();
    assert!(relay.log().contains("(MQTT 3.1.1)"), "{}", relay.log());
    let fixed = Relay::start(old.port, &[("MQTT_PROTOCOL", "5")]);
    fixed.expect_log("device link to broker", WAIT);
    assert!(!fixed.log().contains("trying MQTT 3.1.1"));
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
    let relay = Relay::start(slow, &with_protocol(protocol, &[("LOG_LEVEL", "debug")]));
    relay.expect_log("device link connected to broker", WAIT);
    relay.expect_subscribed();
    heartbeat(broker.port, "cam-slow", b"{}");
    relay.expect_log("heartbeat cam-slow:", WAIT);
}

#[test]
fn a_broker_that_never_confirms_the_subscriptions_is_left_and_dialed_again() {
    let deaf = FakeBroker::start(Script::NoSuback);
    let relay = Relay::start(deaf.port, &[]);
    relay.expect_log("device link connected to broker", WAIT);
    relay.expect_log("WARN  device link to broker", Duration::from_secs(20));
    assert!(
        relay.log().contains("no SUBACK within 10 s"),
        "{}",
        relay.log()
    );
    relay.expect_log_count("device link connected to broker", 2, WAIT);
}
