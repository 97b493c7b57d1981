//! Connections within their limits: past MAX_CONNECTIONS a backend waits
//! for a place instead of being dropped, one-shot senders are served back
//! to back (also during an outage, under a low `ulimit -n`), a backend that
//! never reads holds up nobody else, and a connection that never completes
//! a value is closed after 60 s.

use std::collections::HashSet;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::support::{
    accepted_count, closed_by_peer, closed_within, expect_all, numbered_command as command,
    open_fds, relay_with_subscriber, reply_topic, wait_until, Broker, Launch, Relay, Subscriber,
    ANY_COMMAND, COMMANDS, VALID, WAIT,
};

#[test]
fn connection_past_max_connections_waits_for_a_freed_slot() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("MAX_CONNECTIONS", "2")]);
    let mut a = relay.connect();
    let mut b = relay.connect();
    a.write_all(VALID.as_bytes()).unwrap();
    b.write_all(VALID.as_bytes()).unwrap();
    assert_eq!(sub.collect(2, WAIT).len(), 2, "two connections are served");
    let mut third = relay.connect();
    third.write_all(VALID.as_bytes()).unwrap();
    relay.expect_log("MAX_CONNECTIONS places taken", WAIT);
    assert!(
        sub.recv(Duration::from_millis(500)).is_none(),
        "connection 3 of 2 waits in the backlog"
    );
    drop(a);
    relay.expect_log("closed the connection", WAIT);
    assert!(
        sub.recv(WAIT).is_some(),
        "the waiting connection takes the freed slot; log:\n{}",
        relay.log()
    );
    let _ = b.write_all(VALID.as_bytes());
    assert!(sub.recv(WAIT).is_some(), "b still works");
}

#[test]
fn one_shot_connections_at_the_limit_are_served_back_to_back() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("MAX_CONNECTIONS", "1")]);
    for _ in 0..20 {
        let mut s = relay.connect();
        s.write_all(VALID.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // Wait for the relay's side to close, then reconnect at once.
        assert!(closed_by_peer(&mut s, WAIT));
    }
    assert_eq!(sub.collect(20, WAIT).len(), 20, "log:\n{}", relay.log());
    assert!(
        !relay.log().contains("MAX_CONNECTIONS places"),
        "{}",
        relay.log()
    );
}

#[test]
fn twenty_bursts_of_32_one_shot_connections_at_default_settings_lose_no_command() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[]);
    relay.expect_ready();
    let (rounds, burst) = (20, 32);
    for round in 0..rounds {
        // The original backend: connect, send one command, close; 32 at
        // once, twice MAX_CONNECTIONS (16).
        let sent: Vec<_> = (0..burst)
            .map(|i| {
                let mut s = relay.connect();
                let n = round * burst + i;
                s.write_all(format!(r#"{{"type":"IMG","unit":"b{n}","id":{n}}}"#).as_bytes())
                    .unwrap();
                s
            })
            .collect();
        drop(sent);
    }
    let got = sub.collect(rounds * burst, WAIT);
    let ids: HashSet<u64> = got
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert_eq!(
        ids.len(),
        rounds * burst,
        "every command delivered once; log:\n{}",
        relay.log_tail(40)
    );
    assert!(
        !relay.log().contains("refused"),
        "nobody waited 10 s: {}",
        relay.log_tail(40)
    );
}

/// During an outage, one-shot senders (connect, send, close) with status
/// lines asked for: each closed connection costs at most its descriptor
/// while it waits, and a cap releases the oldest, so 600 of them under
/// `ulimit -n 256` are all accepted and all delivered once the broker returns.
#[test]
fn six_hundred_one_shot_connections_during_an_outage_under_ulimit_256() {
    let mut broker = Broker::unstarted("");
    let relay = Relay::start_with(
        broker.port,
        &[("ACK_MODE", "all")],
        Launch {
            open_files: Some(256),
            ..Launch::default()
        },
    );
    let mut most_fds = 0;
    let mut refused = 0;
    for i in 0..600 {
        match TcpStream::connect(("127.0.0.1", relay.port())) {
            Ok(mut s) => {
                if s.write_all(command(i).as_bytes()).is_err() {
                    refused += 1;
                }
                let _ = s.shutdown(Shutdown::Write);
            }
            Err(_) => refused += 1,
        }
        // Paced: connections arrive one at a time, not as one burst.
        std::thread::sleep(Duration::from_millis(2));
        if i % 50 == 0 {
            most_fds = most_fds.max(open_fds(relay.pid()));
        }
    }
    assert_eq!(refused, 0);
    assert!(
        wait_until(WAIT, || accepted_count(&relay) == 600),
        "accepted {} of 600; log:\n{}",
        accepted_count(&relay),
        relay.log()
    );
    most_fds = most_fds.max(open_fds(relay.pid()));
    assert!(
        most_fds < 200,
        "{most_fds} descriptors open during the outage"
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", relay.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(threads < 30, "{threads} threads for closed connections");
    broker.restart();
    let sub = Subscriber::new(broker.port, COMMANDS);
    expect_all(
        &sub,
        600,
        Duration::from_secs(5),
        "one-shots after the outage",
        &relay,
    );
    let log = relay.log();
    assert!(!log.contains("Too many open files"), "{log}");
}

#[test]
fn a_backend_that_never_reads_does_not_delay_other_connections() {
    let (broker, relay, sub) = relay_with_subscriber(COMMANDS, &[]);
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

/// Finding 1: idle sockets that never send a value cannot hold the places
/// for 60 s more; one that sent a value may stay idle.
#[test]
fn connections_that_never_send_a_value_are_closed_after_60_s() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("MAX_CONNECTIONS", "2")]);
    relay.expect_subscribed();
    let mut talker = relay.connect();
    talker
        .write_all(br#"{"type":"IMG","unit":"cam-01"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some());
    let mut idle = relay.connect();
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(90)),
        "closed after {:?}",
        started.elapsed()
    );
    // Time itself is what is tested here.
    let early = started.elapsed() < Duration::from_secs(55);
    let mut relay = relay;
    assert!(
        !early,
        "{:?}; exit {:?}; log:\n{}",
        started.elapsed(),
        relay.wait_exit(Duration::from_secs(1)),
        relay.log()
    );
    relay.expect_log("sent no complete value within 60 s", WAIT);
    let mut next = relay.connect();
    next.write_all(br#"{"type":"IMG","unit":"cam-02"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some(), "its place was free again");
    talker
        .write_all(br#"{"type":"IMG","unit":"cam-03"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some(), "the talker stayed");
}

#[test]
fn a_value_left_incomplete_for_60_s_is_dropped_and_its_connection_closed_but_idle_ones_stay() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[]);
    let mut slow = relay.connect();
    let mut idle = relay.connect();
    // Idle after one complete value: it may stay (one that never sent a
    // value is closed after 60 s, local_users.rs).
    idle.write_all(VALID.as_bytes()).unwrap();
    assert!(sub.recv(WAIT).is_some());
    slow.write_all(br#"{"type":"IMG","un"#).unwrap();
    let started = Instant::now();
    assert!(
        closed_by_peer(&mut slow, Duration::from_secs(90)),
        "slow-loris connection must be closed"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(55),
        "closed too early: {:?}",
        started.elapsed()
    );
    relay.expect_log("left a value incomplete for 60 s", WAIT);
    sub.assert_silent(Duration::from_millis(200));
    // The idle connection (nothing pending) is still open and works.
    idle.write_all(VALID.as_bytes()).unwrap();
    assert!(sub.recv(WAIT).is_some(), "idle connection must stay usable");
}
