//! Stopping: SIGTERM publishes what is queued within SHUTDOWN_GRACE and
//! exits 0, also what the kernel held for a stopped relay; what the grace
//! cannot publish is counted in the log; a second signal ends it at once.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::{
    accepted_count, broker_and_relay, collect_ids, expect_ids, id_of, numbered_command as command,
    numbered_commands, peer_kernel_has_all, relay_with_subscriber, wait_until, Broker, Relay,
    COMMANDS, WAIT,
};

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let (_broker, mut relay) = broker_and_relay(&[]);
    relay.expect_connected();
    relay.signal("TERM");
    let status = relay.wait_exit(WAIT).expect("relay stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", relay.log());
}

#[test]
fn sigterm_with_commands_queued_delivers_them_all_and_exits_0_within_the_grace() {
    let (broker, mut relay, sub) = relay_with_subscriber(COMMANDS, &[("SHUTDOWN_GRACE", "15")]);
    relay.expect_connected();
    broker.freeze(true);
    // Fewer than the 400 the relay holds while connected, so all are accepted (spooled
    // and logged) before the signal; more would wait in the socket as backpressure.
    let n = 300;
    let burst = numbered_commands(0..n);
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

/// SIGSTOP (the relay is hung), commands written meanwhile, then what the
/// watchdog does: SIGTERM + SIGCONT. Every command whose bytes reached the
/// relay's socket is published before it exits 0, on an open connection and
/// on one still waiting in the listen backlog.
fn stopped_relay_publishes_what_the_kernel_held(settings: &[(&str, &str)]) {
    let mut all = settings.to_vec();
    all.push(("SHUTDOWN_GRACE", "5"));
    let (_broker, mut relay, sub) = relay_with_subscriber(COMMANDS, &all);
    let mut open = relay.connect();
    open.write_all(command(0).as_bytes()).unwrap();
    assert_eq!(id_of(&sub.recv(WAIT).expect("relay works")), 0);

    relay.signal("STOP");
    open.write_all(numbered_commands(1..201).as_bytes())
        .unwrap();
    // A connection the relay has not accepted yet: it waits in the backlog.
    let mut waiting = relay.connect();
    waiting
        .write_all(numbered_commands(201..251).as_bytes())
        .unwrap();
    assert!(wait_until(WAIT, || peer_kernel_has_all(&open)
        && peer_kernel_has_all(&waiting)));
    relay.signal("TERM");
    relay.signal("CONT");
    let status = relay.wait_exit(WAIT).expect("relay exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", relay.log());
    let what = "held by the kernel for a stopped relay";
    expect_ids(&sub, 1..=250, Duration::from_secs(3), what, &relay);
}

#[test]
fn sigterm_to_a_stopped_relay_publishes_what_the_kernel_held_without_spool() {
    stopped_relay_publishes_what_the_kernel_held(&[]);
}

#[test]
fn sigterm_to_a_stopped_relay_publishes_what_the_kernel_held_with_spool() {
    stopped_relay_publishes_what_the_kernel_held(&[("SPOOL_FILE", "{dir}/spool.bin")]);
}

#[test]
fn when_the_grace_runs_out_the_unread_commands_are_counted_in_the_log() {
    // Broker away and no room: nothing can be taken, so the grace must end
    // with the backend's commands not accepted, and the log must say how
    // many: those the publisher was handed but could not take, and those
    // the session had not handed over or not read.
    let broker = Broker::unstarted("");
    let mut relay = Relay::start(
        broker.port,
        &[("QUEUE_CAPACITY", "1"), ("SHUTDOWN_GRACE", "1")],
    );
    let mut s = relay.connect();
    let n = 1000;
    s.write_all(numbered_commands(0..n).as_bytes()).unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == 1));
    // Nothing reports a batch the publisher was handed but cannot take:
    // give the session time to read on and hand one over.
    std::thread::sleep(Duration::from_millis(300));
    relay.signal("TERM");
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let log = relay.log();
    let count_in = |marker: &str| -> usize {
        let line = log
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?} line; log:\n{log}"));
        let digits = line.split(marker).next().unwrap();
        let digits = digits.rsplit(' ').find(|w| !w.is_empty()).unwrap();
        digits.parse().unwrap_or_else(|_| panic!("{line}"))
    };
    // The session: "... ran out with N commands (B bytes) it sent still unread".
    let unread: usize = log
        .lines()
        .find(|l| l.contains("shutdown grace of 1 s ran out with"))
        .and_then(|l| l.split("ran out with ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no unread count; log:\n{log}"));
    // The publisher: "... N commands read from backends were never accepted".
    let handed_over = count_in(" commands read from backends were never accepted");
    assert!(handed_over > 0 && unread > 0, "{log}");
    assert_eq!(
        unread + handed_over,
        n - 1,
        "all but the one accepted; log:\n{log}"
    );
}
