//! Fault injection against a real mosquitto: the relay loses no accepted
//! command through broker restarts, relay crashes, a full queue or shutdown.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{
    accepted_count, collect_ids, expect_all_in_order, id_of, numbered_command as command,
    wait_until, Broker, Cutter, Relay, Subscriber, TempDir, WAIT,
};

/// A relay with `SPOOL_FILE` (relay.spool in the returned dir) whose broker is not running yet.
fn spooled_relay_with_the_broker_away(settings: &[(&str, &str)]) -> (TempDir, Broker, Relay) {
    let dir = TempDir::new("spool");
    let spool = dir
        .path()
        .join("relay.spool")
        .to_string_lossy()
        .into_owned();
    let broker = Broker::unstarted("");
    let mut all = vec![("SPOOL_FILE", spool.as_str())];
    all.extend_from_slice(settings);
    let relay = Relay::start(broker.port, &all);
    (dir, broker, relay)
}

#[test]
fn broker_restart_in_the_middle_of_a_5000_command_stream_loses_nothing() {
    let state = TempDir::new("persist");
    let mut broker = Broker::start_with(&Broker::persistent_config(state.path()));
    let sub = Subscriber::with_session(
        broker.port,
        "/service/ms500/+/socket",
        Some(&format!("durable-{}", std::process::id())),
    );
    let relay = Relay::start(broker.port, &[]);
    relay.expect_connected();

    let mut s = relay.connect();
    let writer = std::thread::spawn(move || {
        for chunk in 0..50 {
            let mut out = String::new();
            for i in chunk * 100..(chunk + 1) * 100 {
                out.push_str(&command(i));
            }
            s.write_all(out.as_bytes()).unwrap();
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
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
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
                let out: String = (n..n + 10).map(command).collect();
                s.write_all(out.as_bytes()).unwrap();
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
fn kill_9_while_the_broker_is_away_then_restart_delivers_every_accepted_command() {
    let (dir, mut broker, mut relay) = spooled_relay_with_the_broker_away(&[]);
    let spool = dir.path().join("relay.spool");
    let mut s = relay.connect();
    let n = 300;
    let burst: String = (0..n).map(command).collect();
    s.write_all(burst.as_bytes()).unwrap();
    assert!(
        wait_until(WAIT, || accepted_count(&relay) == n),
        "accepted {} of {n}",
        accepted_count(&relay)
    );
    relay.crash();
    drop(s);
    assert!(std::fs::metadata(&spool).unwrap().len() > 0);

    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay.relaunch();
    let (seen, total) = collect_ids(&sub, n, WAIT);
    assert_eq!(seen.len(), n, "log:\n{}", relay.log());
    println!(
        "spool replay after kill -9: {n} delivered, {} duplicates",
        total - n
    );
    relay.expect_log("300 unacknowledged commands from the last run", WAIT);
}

#[test]
fn a_spool_with_a_torn_last_record_replays_the_intact_ones() {
    let (dir, mut broker, mut relay) = spooled_relay_with_the_broker_away(&[]);
    let spool = dir.path().join("relay.spool");
    let mut s = relay.connect();
    for i in 0..10 {
        s.write_all(command(i).as_bytes()).unwrap();
        // One record each, so the last record is command 9.
        assert!(wait_until(WAIT, || accepted_count(&relay) == i + 1));
    }
    relay.crash();
    let len = std::fs::metadata(&spool).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&spool)
        .unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    // Garbage after a torn record must not matter either.
    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay.relaunch();
    let got = sub.collect(10, Duration::from_secs(5));
    let ids: Vec<u64> = got.iter().map(id_of).collect();
    assert_eq!(ids, (0..9).collect::<Vec<u64>>(), "log:\n{}", relay.log());
    relay.expect_log("a record cut short at offset", WAIT);
    // The relay runs on normally with the repaired spool.
    relay.connect().write_all(command(42).as_bytes()).unwrap();
    let m = sub.recv(WAIT).expect("new command after recovery");
    assert_eq!(id_of(&m), 42);
}

#[test]
fn expired_commands_are_logged_reported_and_never_published() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    broker.freeze(true);
    let relay = Relay::start(broker.port, &[("COMMAND_TTL", "1"), ("ACK_MODE", "errors")]);
    let mut s = relay.connect();
    for i in 0..3 {
        s.write_all(command(i).as_bytes()).unwrap();
    }
    assert!(wait_until(WAIT, || accepted_count(&relay) == 3));
    // Time is the test: the commands outlive their COMMAND_TTL of 1 s.
    std::thread::sleep(Duration::from_millis(2500));
    broker.freeze(false);
    relay.expect_log("expired IMG for unit d0", Duration::from_secs(30));
    let lines = support::read_lines(&s, 3, WAIT);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["status"], "error");
        assert!(v["error"].as_str().unwrap().contains("expired"), "{line}");
    }
    s.write_all(command(99).as_bytes()).unwrap();
    let m = sub.recv(WAIT).expect("a fresh command still goes out");
    assert_eq!(id_of(&m), 99, "expired commands must not be published");
    sub.assert_silent(Duration::from_millis(300));
}

#[test]
fn sigterm_with_commands_queued_delivers_them_all_and_exits_0_within_the_grace() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let mut relay = Relay::start(broker.port, &[("SHUTDOWN_GRACE", "15")]);
    relay.expect_connected();
    broker.freeze(true);
    // Fewer than the 400 the relay holds while connected, so all are accepted (spooled
    // and logged) before the signal; more would wait in the socket as backpressure.
    let n = 300;
    let burst: String = (0..n).map(command).collect();
    relay.connect().write_all(burst.as_bytes()).unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == n));
    let started = Instant::now();
    relay.signal("TERM");
    // In its grace, with the broker still frozen.
    relay.expect_log("shutting down", WAIT);
    broker.freeze(false);
    let status = relay
        .wait_exit(Duration::from_secs(20))
        .expect("relay exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", relay.log());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "within the grace"
    );
    let (seen, _) = collect_ids(&sub, n, WAIT);
    assert_eq!(seen.len(), n);
}

#[test]
fn a_connection_that_stops_making_progress_is_dropped_and_rebuilt() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("MQTT_KEEPALIVE", "10")]);
    relay.expect_connected();
    // A frozen broker keeps the TCP connection open and answers nothing: the
    // link is dropped after 1.5 x MQTT_KEEPALIVE without an answer or a PUBACK.
    broker.freeze(true);
    let n = 50;
    let burst: String = (0..n).map(command).collect();
    relay.connect().write_all(burst.as_bytes()).unwrap();
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
fn a_second_signal_exits_at_once() {
    let broker = Broker::unstarted("");
    let mut relay = Relay::start(broker.port, &[("SHUTDOWN_GRACE", "120")]);
    relay.connect().write_all(command(1).as_bytes()).unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == 1));
    relay.signal("TERM");
    relay.expect_log("shutting down", WAIT);
    relay.signal("INT");
    let status = relay
        .wait_exit(Duration::from_secs(5))
        .expect("second signal ends it at once");
    assert_eq!(status.code(), Some(1));
    assert!(relay.log().contains("second signal"));
}

#[test]
fn a_full_queue_blocks_the_backend_and_drops_nothing() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("QUEUE_CAPACITY", "50")]);
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
fn sigterm_with_the_broker_away_leaves_the_queue_in_the_spool_for_the_next_start() {
    let (_dir, mut broker, mut relay) =
        spooled_relay_with_the_broker_away(&[("SHUTDOWN_GRACE", "1")]);
    let n = 40;
    let burst: String = (0..n).map(command).collect();
    relay.connect().write_all(burst.as_bytes()).unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == n));
    relay.signal("TERM");
    let status = relay.wait_exit(WAIT).expect("exits after the grace");
    assert_eq!(status.code(), Some(0), "log:\n{}", relay.log());
    relay.expect_log("stay in the spool", WAIT);

    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay.relaunch();
    let (seen, _) = collect_ids(&sub, n, WAIT);
    assert_eq!(seen.len(), n, "log:\n{}", relay.log());
}

#[test]
fn spooled_commands_older_than_the_ttl_expire_at_the_next_start() {
    let (_dir, mut broker, mut relay) = spooled_relay_with_the_broker_away(&[("COMMAND_TTL", "1")]);
    relay.connect().write_all(command(5).as_bytes()).unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == 1));
    relay.crash();
    // Time is the test: the spooled command outlives its COMMAND_TTL of 1 s.
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay.relaunch();
    relay.expect_log("in the spool (COMMAND_TTL 1 s): not published", WAIT);
    relay.expect_connected();
    sub.assert_silent(Duration::from_millis(500));
}
