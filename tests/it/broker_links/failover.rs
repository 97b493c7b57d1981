//! A list of brokers to fail over to (`MQTT_BROKER = a, b`): the relay keeps
//! delivering when the broker it uses dies or freezes, and goes back to the
//! first one once it answers again, duplicating nothing. Two real
//! mosquittos, a subscriber on each: every command must reach one of them.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{
    collect_ids, id_of, numbered_command as command, publish_link_on, wait_until, Broker, Relay,
    Subscriber, COMMANDS, WAIT,
};

/// Drains both subscribers until every id in 0..n was seen by one of them,
/// or nothing arrives for `quiet`; returns the ids seen on each.
fn collect_both(
    a: &Subscriber,
    b: &Subscriber,
    n: usize,
    quiet: Duration,
) -> (HashSet<u64>, HashSet<u64>) {
    let (mut on_a, mut on_b) = (HashSet::new(), HashSet::new());
    let mut last = Instant::now();
    while on_a.union(&on_b).count() < n && last.elapsed() < quiet {
        let mut got = false;
        while let Some(m) = a.recv(Duration::from_millis(5)) {
            on_a.insert(id_of(&m));
            got = true;
        }
        while let Some(m) = b.recv(Duration::from_millis(5)) {
            on_b.insert(id_of(&m));
            got = true;
        }
        if got {
            last = Instant::now();
        }
    }
    (on_a, on_b)
}

/// Subscribers at QoS 0: a broker killed with SIGKILL then cannot reset the
/// subscriber's connection over PUBACKs it had not read yet, which would
/// throw away what it had already sent on (the relay cannot see that).
fn subscriber(broker: &Broker) -> Subscriber {
    Subscriber::with_qos(broker.port, COMMANDS, rumqttc::QoS::AtMostOnce)
}

#[test]
fn the_first_broker_killed_in_the_middle_of_a_3000_command_stream_loses_nothing() {
    let mut a = Broker::start();
    let b = Broker::start();
    let (sub_a, sub_b) = (subscriber(&a), subscriber(&b));
    let relay = Relay::start_listing(&[a.port, b.port], &[]);
    relay.expect_log(&publish_link_on(a.port), WAIT);
    let n = 3000;
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
                let burst: String = chunk.iter().map(|&i| command(i)).collect();
                s.write_all(burst.as_bytes()).unwrap();
                // Paced, so that the kill falls mid-stream.
                std::thread::sleep(Duration::from_millis(10));
            }
            s
        })
    };
    // Kill the first broker once part of the stream went through it.
    assert!(wait_until(WAIT, || support::accepted_count(&relay) >= 1000));
    a.stop();
    let _s = sender.join().unwrap();
    let (on_a, on_b) = collect_both(&sub_a, &sub_b, n, Duration::from_secs(10));
    let missing: Vec<u64> = (0..n as u64)
        .filter(|i| !on_a.contains(i) && !on_b.contains(i))
        .collect();
    println!(
        "failover: {} via the first broker, {} via the second",
        on_a.len(),
        on_b.len()
    );
    // A broker killed with SIGKILL may have acknowledged a command and died
    // before passing it on (mosquitto queues the PUBACK and the delivery to
    // subscribers alike); the relay publishes what was acknowledged just
    // before the break again, so even those reach the second broker.
    let log = relay.log();
    assert!(
        missing.is_empty(),
        "lost {} ({:?}...); log:\n{log}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "both brokers carried part of the stream"
    );
    assert!(
        log.contains(&format!("lost connection to broker 127.0.0.1:{}", a.port)),
        "{log}"
    );
    assert!(
        log.contains(&format!("trying broker 127.0.0.1:{} now", b.port)),
        "{log}"
    );
    relay.expect_log(&publish_link_on(b.port), WAIT);
}

#[test]
fn a_frozen_broker_is_left_within_one_and_a_half_keepalives_and_the_first_is_taken_back() {
    let a = Broker::start();
    let b = Broker::start();
    let (sub_a, sub_b) = (subscriber(&a), subscriber(&b));
    let relay = Relay::start_listing(&[a.port, b.port], &[("MQTT_KEEPALIVE", "5")]);
    relay.expect_log(&publish_link_on(a.port), WAIT);
    let mut s = relay.connect();
    s.write_all(command(0).as_bytes()).unwrap();
    assert_eq!(sub_a.recv(WAIT).map(|m| id_of(&m)), Some(0));

    // Frozen: the TCP connection stays open, nothing is answered.
    a.freeze(true);
    let frozen_at = Instant::now();
    let burst: String = (1..=100).map(command).collect();
    s.write_all(burst.as_bytes()).unwrap();
    let (_, on_b) = collect_both(&sub_a, &sub_b, 100, Duration::from_secs(15));
    let took = frozen_at.elapsed();
    let missing: Vec<u64> = (1..=100).filter(|i| !on_b.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "not on the second broker: {missing:?}; log:\n{}",
        relay.log()
    );
    // 1.5 x keepalive (7.5 s) to notice, then the next broker at once.
    assert!(
        took < Duration::from_secs(11),
        "took {took:?}; log:\n{}",
        relay.log()
    );
    assert_eq!(
        relay.log().matches("lost connection to broker").count(),
        1,
        "{}",
        relay.log()
    );

    // Thawed, the first broker answers again; after answering for 2 x
    // keepalive the relay moves back to it.
    a.freeze(false);
    relay.expect_log("answers again: moving back to it", Duration::from_secs(30));
    relay.expect_log(&publish_link_on(a.port), WAIT);
    while sub_a.recv(Duration::from_millis(100)).is_some() {}
    s.write_all(command(500).as_bytes()).unwrap();
    let back = sub_a.recv(WAIT).map(|m| id_of(&m));
    assert_eq!(back, Some(500), "log:\n{}", relay.log());
}

#[test]
fn with_every_broker_away_commands_wait_and_reach_the_first_one_back() {
    let a = Broker::unstarted("");
    let mut b = Broker::unstarted("");
    let relay = Relay::start_listing(&[a.port, b.port], &[]);
    relay.expect_log("every broker failed", WAIT);
    let mut s = relay.connect();
    let burst: String = (0..50).map(command).collect();
    s.write_all(burst.as_bytes()).unwrap();
    b.restart();
    let sub_b = subscriber(&b);
    let got: HashSet<u64> = sub_b
        .collect(50, Duration::from_secs(40))
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(got.len(), 50, "log:\n{}", relay.log());
}

#[test]
fn moving_back_to_the_first_broker_says_goodbye_and_duplicates_nothing() {
    let mut a = Broker::unstarted("");
    let b = Broker::start();
    let relay = Relay::start_listing(&[a.port, b.port], &[("MQTT_KEEPALIVE", "5")]);
    relay.expect_log(&publish_link_on(b.port), WAIT);
    a.restart();
    let (sub_a, sub_b) = (
        Subscriber::new(a.port, COMMANDS),
        Subscriber::new(b.port, COMMANDS),
    );
    let n = 1500;
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            for i in 0..n {
                s.write_all(command(i).as_bytes()).unwrap();
                // Paced over ~15 s, so that the move falls mid-stream.
                std::thread::sleep(Duration::from_millis(10));
            }
            s
        })
    };
    relay.expect_log("answers again: moving back to it", Duration::from_secs(30));
    let _s = sender.join().unwrap();
    let (on_a, _) = collect_ids(&sub_a, n, Duration::from_secs(3));
    let (on_b, _) = collect_ids(&sub_b, n, Duration::from_secs(1));
    let twice: Vec<&u64> = on_a.keys().filter(|id| on_b.contains_key(id)).collect();
    let repeated = on_a
        .values()
        .chain(on_b.values())
        .filter(|c| **c > 1)
        .count();
    assert!(!on_a.is_empty() && !on_b.is_empty(), "both carried part");
    assert_eq!(on_a.len() + on_b.len(), n, "every command arrived");
    assert!(twice.is_empty() && repeated == 0, "duplicated: {twice:?}");
    // DISCONNECT: the second broker did not publish the relay's will.
    let state = Subscriber::new(b.port, "/service/ms500-relay/+/state");
    let retained = state
        .recv(Duration::from_secs(2))
        .expect("the retained state");
    assert!(
        !String::from_utf8_lossy(&retained.payload).contains("offline"),
        "the will was published"
    );
}
