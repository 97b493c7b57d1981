//! The broker is not always there: commands wait (within the queue's byte
//! budget, the backend held back), the relay does not spin, and everything
//! is delivered once the broker is back, through restarts, cuts and a
//! frozen broker.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support;
use crate::support::{
    accepted_count, broker_and_relay, broker_back, bytes_of, collect_ids, expect_all_in_order,
    numbered_commands, peak_rss_kib, relay_with_subscriber, wait_until, Broker, Cutter, Relay,
    Subscriber, TempDir, COMMANDS, RSS_LIMIT_KIB, WAIT,
};

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

    let used = cpu_seconds_in_3_s(&relay);
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
    let sub = broker_back(&mut broker);
    let got = sub.payloads(50, Duration::from_secs(40));
    assert_eq!(got, bytes_of(&cmds));
    relay.expect_connected();
}

#[test]
fn a_broker_killed_in_the_middle_of_a_burst_leaves_the_relay_idle_until_it_is_back() {
    let (mut broker, relay) = broker_and_relay(&[]);
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
    assert!(wait_until(WAIT, || accepted_count(&relay) > 0));
    broker.stop();
    relay.expect_log("lost connection to broker", Duration::from_secs(10));
    let used = cpu_seconds_in_3_s(&relay);
    assert!(
        used < 0.5,
        "relay used {used} CPU s in 3 s with the broker gone mid-burst: busy loop"
    );
    broker.restart();
    let _s = writer.join().unwrap();
}

#[test]
fn broker_restart_in_the_middle_of_a_5000_command_stream_loses_nothing() {
    let (_state, mut broker, sub) = persistent_broker_and_subscriber("durable");
    let relay = Relay::start(broker.port, &[]);
    relay.expect_connected();

    let mut s = relay.connect();
    let writer = std::thread::spawn(move || {
        for chunk in 0..50 {
            let ids = chunk * 100..(chunk + 1) * 100;
            s.write_all(numbered_commands(ids).as_bytes()).unwrap();
            // Paced over 2 s, so that the broker's restart falls mid-stream.
            std::thread::sleep(Duration::from_millis(40));
        }
        s
    });
    // Part of the stream went out, then the broker goes; it comes back once
    // the relay has noticed and accepted more meanwhile.
    assert!(wait_until(WAIT, || accepted_count(&relay) >= 1000));
    broker.terminate();
    relay.expect_log("lost connection to broker", WAIT);
    let at_loss = accepted_count(&relay);
    let more = (at_loss + 500).min(5000);
    assert!(wait_until(WAIT, || accepted_count(&relay) >= more));
    broker.restart();
    let _s = writer.join().unwrap();

    expect_all_in_order(
        &sub,
        5000,
        Duration::from_secs(30),
        "broker restart mid-stream",
        &relay,
    );
    assert!(
        relay.log().contains("lost connection to broker"),
        "the restart was noticed"
    );
}

/// A broker that keeps its sessions across a SIGTERM restart (in the
/// returned directory), and a subscriber to every command whose session it
/// keeps, under a client id starting with `tag`.
fn persistent_broker_and_subscriber(tag: &str) -> (TempDir, Broker, Subscriber) {
    let state = TempDir::new(tag);
    let broker = Broker::start_with(&Broker::persistent_config(state.path()));
    let id = format!("{tag}-{}", std::process::id());
    let sub = Subscriber::with_session(broker.port, COMMANDS, Some(&id));
    (state, broker, sub)
}

/// The CPU seconds the relay uses in the next 3 s.
fn cpu_seconds_in_3_s(relay: &Relay) -> f64 {
    let before = relay.cpu_seconds();
    // Time is the test: CPU used over 3 s of waiting.
    std::thread::sleep(Duration::from_secs(3));
    relay.cpu_seconds() - before
}

/// The publish link's log lines: each connection made, each one lost.
fn link_ups_and_downs(relay: &Relay) -> (usize, usize) {
    let log = relay.log();
    (
        log.matches("INFO  connected to broker ").count(),
        log.matches("WARN  lost connection to broker ").count(),
    )
}

#[test]
fn cutting_the_broker_connection_again_and_again_loses_nothing() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, COMMANDS);
    let cutter = Cutter::new(broker.port);
    let relay = Relay::start(cutter.port, &[]);
    relay.expect_log("INFO  connected to broker ", WAIT);
    let (ups, downs) = link_ups_and_downs(&relay);
    assert_eq!((ups, downs), (1, 0), "log:\n{}", relay.log());

    // Commands keep coming, 500 a second, until the last cut was recovered
    // from: every cut falls mid-stream.
    let stop = Arc::new(AtomicBool::new(false));
    let mut s = relay.connect();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                s.write_all(numbered_commands(n..n + 10).as_bytes())
                    .unwrap();
                n += 10;
                // Paced (500 a second): the stream must outlast the cuts.
                std::thread::sleep(Duration::from_millis(20));
            }
            (s, n)
        })
    };
    // The backoff after a lost link starts at 1 s and doubles (the links
    // here live shorter than STABLE): the reconnections take about
    // 1 + 2 + 4 + 8 s. Each cut waits until the relay is connected again,
    // so each one cuts a live link.
    for cut in 1..=4 {
        // Commands flow on the new link before it is cut.
        let before = accepted_count(&relay);
        assert!(wait_until(WAIT, || accepted_count(&relay) >= before + 50));
        cutter.cut();
        assert!(
            wait_until(Duration::from_secs(30), || {
                link_ups_and_downs(&relay) == (ups + cut, downs + cut)
            }),
            "cut {cut}: (connections, losses) {:?}, expected {:?}; log:\n{}",
            link_ups_and_downs(&relay),
            (ups + cut, downs + cut),
            relay.log()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (_s, n) = writer.join().unwrap();
    expect_all_in_order(
        &sub,
        n,
        Duration::from_secs(40),
        "connection cut 4 times mid-stream",
        &relay,
    );
    // Four reconnections, one per cut, and no other.
    assert_eq!(
        link_ups_and_downs(&relay),
        (ups + 4, downs + 4),
        "log:\n{}",
        relay.log()
    );
}

#[test]
fn a_connection_that_stops_making_progress_is_dropped_and_rebuilt() {
    let (broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("MQTT_KEEPALIVE", "10")]);
    relay.expect_connected();
    // A frozen broker keeps the TCP connection open and answers nothing: the
    // link is dropped after 1.5 x MQTT_KEEPALIVE without an answer or a PUBACK.
    broker.freeze(true);
    let n = 50;
    relay
        .connect()
        .write_all(numbered_commands(0..n).as_bytes())
        .unwrap();
    relay.expect_log("lost connection to broker", Duration::from_secs(25));
    let log = relay.log();
    assert!(
        log.contains("no answer from the broker for") || log.contains("no PUBACK for"),
        "{log}"
    );
    broker.freeze(false);
    let (seen, _) = collect_ids(&sub, n, Duration::from_secs(40));
    assert_eq!(seen.len(), n, "log:\n{}", relay.log());
}

#[test]
fn a_full_queue_blocks_the_backend_and_drops_nothing() {
    let (broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("QUEUE_CAPACITY", "50")]);
    relay.expect_connected();
    broker.freeze(true);

    // 20,000 commands of about 1 KB: far more than the queue plus socket buffers.
    let pad = "p".repeat(1000);
    let n = 20_000;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| {
            format!(r#"{{"type":"IMG","unit":"bp","id":{i},"pad":"{pad}"}}"#).into_bytes()
        })
        .collect();
    let mut s: TcpStream = relay.connect();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut pos = 0;
    let mut blocked = false;
    while pos < data.len() {
        match s.write(&data[pos..]) {
            Ok(k) => pos += k,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked = true;
                break;
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(
        blocked,
        "the backend's writes never blocked ({pos} bytes taken)"
    );
    let accepted = accepted_count(&relay);
    assert!(
        accepted < n,
        "relay accepted {accepted} with the broker frozen"
    );

    broker.freeze(false);
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&data[pos..]).unwrap();
    let (seen, _) = collect_ids(&sub, n, WAIT);
    assert_eq!(seen.len(), n, "log tail:\n{}", relay.log_tail(10));
}

#[test]
fn broker_away_and_commands_of_64_kb_the_queue_stays_within_its_byte_budget() {
    // The subscriber's session outlives the broker's absence, so it misses
    // nothing the relay sends the moment the broker is back.
    let (_state, mut broker, sub) = persistent_broker_and_subscriber("bounds");
    broker.terminate();
    let relay = Relay::start(broker.port, &[]);
    let blob = "b".repeat(64_000);
    let n = 2000;
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            for i in 0..n {
                let cmd = format!(
                    r#"{{"type":"CFG","unit":"big","id":{i},"configs":{{"blob":"{blob}"}}}}"#
                );
                if s.write_all(cmd.as_bytes()).is_err() {
                    break;
                }
            }
            s
        })
    };
    // The relay takes what QUEUE_MAX_BYTES (16 MiB) allows, then stops reading.
    let mut last = 0;
    assert!(wait_until(WAIT, || {
        let now = accepted_count(&relay);
        let settled = now > 0 && now == last;
        last = now;
        // Time is the test: "stopped reading" shows only as a count that
        // stays put between two looks 300 ms apart.
        std::thread::sleep(Duration::from_millis(300));
        settled
    }));
    let held = accepted_count(&relay);
    assert!((240..=300).contains(&held), "{held} commands of 64 KB held");
    let peak = peak_rss_kib(relay.pid());
    println!("held {held} commands of 64 KB; peak RSS {peak} KiB");
    assert!(peak <= RSS_LIMIT_KIB, "peak RSS {peak} KiB");

    // Nothing is lost: the backend waited, and everything goes out when the broker is back.
    broker.restart();
    let mut got = 0;
    while got < n && sub.recv(Duration::from_secs(10)).is_some() {
        got += 1;
    }
    assert_eq!(got, n, "log tail:\n{}", relay.log_tail(20));
    drop(sender.join());
    let peak = peak_rss_kib(relay.pid());
    assert!(
        peak <= RSS_LIMIT_KIB,
        "peak RSS {peak} KiB after delivering {n} x 64 KB"
    );
}
