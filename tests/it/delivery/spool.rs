//! The spool (`SPOOL_FILE`) keeps every accepted command for the next
//! start: after kill -9, a SIGTERM with the broker away, a torn or damaged
//! record, the file deleted or truncated under the relay, and a full or
//! read-only disk (a small tmpfs, as root).

use std::io::Write;
use std::net::TcpStream;
use std::ops::Range;
use std::time::Duration;

use super::{replayed, spooling_with_the_broker_away};
use crate::support::{
    accepted_count, broker_back, collect_ids, expect_all, id_of, numbered_command as command,
    numbered_commands, path_text, relay_with_subscriber, wait_until, Broker, Relay, Tmpfs,
    COMMANDS, WAIT,
};

/// A relay with the broker away that spooled `n` commands to `{dir}/spool.bin`,
/// one record each (each accepted before the next is sent), and was killed.
fn spooled_one_by_one(n: usize) -> (Broker, Relay) {
    let (broker, mut relay) = spooling_with_the_broker_away("{dir}/spool.bin", &[]);
    let mut s = relay.connect();
    for i in 0..n {
        s.write_all(command(i).as_bytes()).unwrap();
        assert!(wait_until(WAIT, || accepted_count(&relay) == i + 1));
    }
    relay.crash();
    (broker, relay)
}

/// A relay spooling to a tmpfs of `size_kib` (see [`Tmpfs`]), and its
/// broker, not running yet.
fn spooling_to_a_tmpfs(size_kib: u64) -> (Tmpfs, Broker, Relay) {
    let fs = Tmpfs::mount(size_kib, false);
    let spool = path_text(&fs.dir.join("spool.bin"));
    let (broker, relay) = spooling_with_the_broker_away(&spool, &[]);
    (fs, broker, relay)
}

#[test]
fn kill_9_while_the_broker_is_away_then_restart_delivers_every_accepted_command() {
    let (mut broker, mut relay) = spooling_with_the_broker_away("{dir}/relay.spool", &[]);
    let mut s = relay.connect();
    let n = 300;
    s.write_all(numbered_commands(0..n).as_bytes()).unwrap();
    assert!(
        wait_until(WAIT, || accepted_count(&relay) == n),
        "accepted {} of {n}",
        accepted_count(&relay)
    );
    relay.crash();
    drop(s);
    assert!(std::fs::metadata(relay.path("relay.spool")).unwrap().len() > 0);

    let sub = replayed(&mut broker, &mut relay);
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
    // One record each, so the last record is command 9.
    let (mut broker, mut relay) = spooled_one_by_one(10);
    let spool = relay.path("spool.bin");
    let len = std::fs::metadata(&spool).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&spool)
        .unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    // Garbage after a torn record must not matter either.
    let sub = replayed(&mut broker, &mut relay);
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
fn sigterm_with_the_broker_away_leaves_the_queue_in_the_spool_for_the_next_start() {
    let (mut broker, mut relay) =
        spooling_with_the_broker_away("{dir}/relay.spool", &[("SHUTDOWN_GRACE", "1")]);
    let n = 40;
    let burst = numbered_commands(0..n);
    relay.connect().write_all(burst.as_bytes()).unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == n));
    relay.signal("TERM");
    let status = relay.wait_exit(WAIT).expect("exits after the grace");
    assert_eq!(status.code(), Some(0), "log:\n{}", relay.log());
    relay.expect_log("stay in the spool", WAIT);

    let sub = replayed(&mut broker, &mut relay);
    let (seen, _) = collect_ids(&sub, n, WAIT);
    assert_eq!(seen.len(), n, "log:\n{}", relay.log());
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_spool_costs_one_command_and_the_file_is_kept() {
    let (mut broker, mut relay) = spooled_one_by_one(100);
    let spool = relay.path("spool.bin");
    let mut bytes = std::fs::read(&spool).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&spool, &bytes).unwrap();

    let sub = replayed(&mut broker, &mut relay);
    let (seen, _) = collect_ids(&sub, 100, Duration::from_secs(3));
    assert_eq!(seen.len(), 99, "log:\n{}", relay.log());
    relay.expect_log("damaged bytes in 1 places skipped", WAIT);
    let aside: Vec<String> = std::fs::read_dir(relay.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spool.bin.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside");
    assert_eq!(
        std::fs::read(relay.path(&aside[0])).unwrap(),
        bytes,
        "kept as it was"
    );
}

#[test]
fn a_spool_deleted_or_truncated_under_the_relay_is_written_again() {
    let (mut broker, mut relay) = spooling_with_the_broker_away("{dir}/spool.bin", &[]);
    let spool = relay.path("spool.bin");
    let mut s = relay.connect();
    let send = |s: &mut TcpStream, ids: Range<usize>| {
        s.write_all(numbered_commands(ids).as_bytes()).unwrap();
    };
    send(&mut s, 0..10);
    assert!(wait_until(WAIT, || accepted_count(&relay) == 10));
    std::fs::remove_file(&spool).unwrap();
    send(&mut s, 10..20);
    assert!(wait_until(WAIT, || accepted_count(&relay) == 20));
    relay.expect_log("the file was deleted; writing it again", WAIT);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&spool)
        .unwrap()
        .set_len(0)
        .unwrap();
    send(&mut s, 20..30);
    assert!(wait_until(WAIT, || accepted_count(&relay) == 30));
    relay.expect_log("the file was truncated", WAIT);
    relay.crash();

    let sub = replayed(&mut broker, &mut relay);
    expect_all(
        &sub,
        30,
        Duration::from_secs(5),
        "spool rewritten twice",
        &relay,
    );
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_full_disk_stops_intake_without_losing_what_was_accepted() {
    let (fs, mut broker, mut relay) = spooling_to_a_tmpfs(256);
    fs.fill_leaving(24);
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            let _ = s.write_all(numbered_commands(0..1000).as_bytes());
            s
        })
    };
    relay.expect_log("cannot be written", WAIT);
    // Intake stops: the count of accepted commands no longer moves.
    let stalled = accepted_count(&relay);
    // Time is the test: nothing more is accepted for 1.5 s.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        accepted_count(&relay),
        stalled,
        "accepted while the disk was full"
    );
    assert!(
        stalled < 1000,
        "the disk never filled up ({stalled} accepted)"
    );
    relay.crash();
    drop(sender);

    // Everything accepted is in the spool: after kill -9, with space back and
    // the broker up, each one arrives.
    fs.free();
    let sub = replayed(&mut broker, &mut relay);
    // One connection: the accepted commands are the first `stalled` ids.
    expect_all(
        &sub,
        stalled,
        Duration::from_secs(3),
        "accepted before kill -9",
        &relay,
    );
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn spooling_resumes_by_itself_when_space_returns() {
    let (fs, mut broker, relay) = spooling_to_a_tmpfs(512);
    fs.fill_leaving(24);
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            s.write_all(numbered_commands(0..1000).as_bytes()).unwrap();
            s
        })
    };
    relay.expect_log("cannot be written", WAIT);
    let stalled = accepted_count(&relay);
    fs.free();
    relay.expect_log("writable again", WAIT);
    assert!(
        wait_until(WAIT, || accepted_count(&relay) >= 1000),
        "{} accepted after space returned (was {stalled}); log:\n{}",
        accepted_count(&relay),
        relay.log()
    );
    let _s = sender.join().unwrap();
    let sub = broker_back(&mut broker);
    expect_all(
        &sub,
        1000,
        Duration::from_secs(5),
        "after the disk was full",
        &relay,
    );
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_read_only_spool_directory_does_not_stop_the_start_and_commands_flow_while_connected() {
    let fs = Tmpfs::mount(64, true);
    let spool = path_text(&fs.dir.join("spool.bin"));
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[("SPOOL_FILE", &spool)]);
    relay.expect_log("cannot be written", WAIT);
    let mut s = relay.connect();
    s.write_all(numbered_commands(0..300).as_bytes()).unwrap();
    expect_all(&sub, 300, Duration::from_secs(5), "read-only spool", &relay);
    assert!(
        relay.log().contains("ERROR"),
        "the failing spool is an error"
    );
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_spool_on_a_full_disk_at_start_does_not_stop_the_start() {
    let fs = Tmpfs::mount(64, false);
    fs.fill_leaving(0);
    let spool = path_text(&fs.dir.join("spool.bin"));
    let (_broker, mut relay, sub) = relay_with_subscriber(COMMANDS, &[("SPOOL_FILE", &spool)]);
    relay.expect_log("cannot be written", WAIT);
    relay.connect().write_all(command(1).as_bytes()).unwrap();
    assert_eq!(
        id_of(&sub.recv(WAIT).expect("delivered while connected")),
        1
    );
    relay.signal("TERM");
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}
