//! Brokers that misbehave (issue 21), against the real binary: a scriptable
//! fake broker (`support::fake_broker`) for what no real broker can be made
//! to do, and real mosquittos beside it for everything that must still flow.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::fake_broker::{FakeBroker, Script};
use crate::support::{
    collect_ids, numbered_command as command, Broker, Relay, Subscriber, PUBLISH_LINK_UP, WAIT,
};

const COMMANDS: &str = "/service/ms500/+/socket";

#[test]
fn a_broker_trickling_its_connack_costs_one_attempt_and_sigterm_is_honoured() {
    let trickler = FakeBroker::start(Script::Trickle);
    let b = Broker::start();
    let sub = Subscriber::new(b.port, COMMANDS);
    let list = format!("127.0.0.1:{}, 127.0.0.1:{}", trickler.port, b.port);
    let mut relay = Relay::start(
        b.port,
        &[("MQTT_BROKER", list.as_str()), ("SHUTDOWN_GRACE", "2")],
    );
    relay.expect_log(
        &format!(
            "cannot connect to broker 127.0.0.1:{}: no CONNACK from the broker within",
            trickler.port
        ),
        WAIT,
    );
    relay.expect_log(&format!("{PUBLISH_LINK_UP}127.0.0.1:{}", b.port), WAIT);
    let mut backend = relay.connect();
    let n = 100;
    let burst: String = (0..n).map(command).collect();
    backend.write_all(burst.as_bytes()).unwrap();
    let (ids, _) = collect_ids(&sub, n, Duration::from_secs(10));
    assert_eq!(ids.len(), n, "every command reached the second broker");
    // The relay is probing the trickling first broker meanwhile: SIGTERM
    // must still end it within SHUTDOWN_GRACE + 1 s.
    let asked = Instant::now();
    relay.signal("TERM");
    let status = relay.wait_exit(WAIT).expect("the relay stops");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took <= Duration::from_secs(3), "stopping took {took:?}");
}
