//! The broker is not always there: commands wait, the relay does not spin,
//! and everything is delivered once the broker is back.

use std::io::Write;
use std::time::Duration;

use crate::support;
use crate::support::{Broker, Relay, Subscriber, WAIT};

#[test]
fn broker_absent_at_start_commands_wait_without_burning_cpu_then_arrive() {
    let mut broker = Broker::unstarted("");
    let relay = Relay::start(broker.port, &[("LOG_LEVEL", "debug")]);
    let mut s = relay.connect();
    let cmds: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"type":"IMG","unit":"late","id":{i}}}"#))
        .collect();
    for c in &cmds {
        s.write_all(c.as_bytes()).unwrap();
    }
    relay.expect_log("cannot connect to broker", Duration::from_secs(10));
    relay.expect_log("accepted IMG for unit late", Duration::from_secs(10));

    let before = relay.cpu_seconds();
    // Time is the test: CPU used over 3 s of waiting.
    std::thread::sleep(Duration::from_secs(3));
    let used = relay.cpu_seconds() - before;
    assert!(
        used < 0.5,
        "relay used {used} CPU s in 3 s with the broker away: busy loop"
    );
    let attempts = relay
        .log()
        .matches("WARN  cannot connect to broker")
        .count();
    assert_eq!(
        attempts,
        1,
        "a state change is logged once, not per attempt:\n{}",
        relay.log()
    );

    // Start the broker right after a failed attempt, so the subscriber is in
    // place seconds before the relay's next try.
    let retries = |log: String| log.matches("still unreachable").count();
    let seen = retries(relay.log());
    assert!(
        support::wait_until(Duration::from_secs(20), || retries(relay.log()) > seen),
        "no retry logged:\n{}",
        relay.log()
    );
    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let got: Vec<Vec<u8>> = sub
        .collect(50, Duration::from_secs(40))
        .into_iter()
        .map(|m| m.payload)
        .collect();
    let expected: Vec<Vec<u8>> = cmds.iter().map(|c| c.as_bytes().to_vec()).collect();
    assert_eq!(got, expected);
    relay.expect_connected();
}

#[test]
fn a_broker_killed_in_the_middle_of_a_burst_leaves_the_relay_idle_until_it_is_back() {
    let mut broker = Broker::start();
    let relay = Relay::start(broker.port, &[]);
    relay.expect_connected();
    let mut s = relay.connect();
    // Enough to keep the window full (the publisher holds writes for room).
    let burst: String = (0..200_000)
        .map(|i| format!(r#"{{"type":"IMG","unit":"burst","id":{i}}}"#))
        .collect();
    let writer = std::thread::spawn(move || {
        let _ = s.write_all(burst.as_bytes());
        s
    });
    // Mid-burst: the first commands are in.
    assert!(support::wait_until(WAIT, || support::accepted_count(
        &relay
    ) > 0));
    broker.stop();
    relay.expect_log("lost connection to broker", Duration::from_secs(10));
    let before = relay.cpu_seconds();
    // Time is the test: CPU used over 3 s of waiting.
    std::thread::sleep(Duration::from_secs(3));
    let used = relay.cpu_seconds() - before;
    assert!(
        used < 0.5,
        "relay used {used} CPU s in 3 s with the broker gone mid-burst: busy loop"
    );
    broker.restart();
    let _s = writer.join().unwrap();
}
