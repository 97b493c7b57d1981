//! Nothing accepted is lost at the edges: bytes the kernel already held when
//! the relay was told to stop, a spool on a full, read-only or damaged disk,
//! a spool deleted under the relay, a clock that jumped between runs, a
//! flood of one-shot connections during an outage, and `send` saying what
//! became of each command. Each case against a real mosquitto.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::support;
use crate::support::{
    accepted_count, collect_ids, expect_all, id_of, numbered_command as command, open_fds,
    peer_kernel_has_all, require, run_bin, testing_own_build, wait_until, Broker, Launch, Relay,
    Subscriber, TempDir, Tmpfs, WAIT,
};

fn spool_settings(spool: &Path) -> Vec<(&'static str, String)> {
    vec![("SPOOL_FILE", spool.to_string_lossy().into_owned())]
}

fn as_refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// SIGSTOP (the relay is hung), commands written meanwhile, then what the
/// watchdog does: SIGTERM + SIGCONT. Every command whose bytes reached the
/// relay's socket is published before it exits 0, on an open connection and
/// on one still waiting in the listen backlog.
fn stopped_relay_publishes_what_the_kernel_held(settings: &[(&'static str, String)]) {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let mut all = as_refs(settings);
    all.push(("SHUTDOWN_GRACE", "5"));
    let mut relay = Relay::start(broker.port, &all);
    let mut open = relay.connect();
    open.write_all(command(0).as_bytes()).unwrap();
    assert_eq!(id_of(&sub.recv(WAIT).expect("relay works")), 0);

    relay.signal("STOP");
    let burst: String = (1..=200).map(command).collect();
    open.write_all(burst.as_bytes()).unwrap();
    // A connection the relay has not accepted yet: it waits in the backlog.
    let mut waiting = relay.connect();
    let late: String = (201..=250).map(command).collect();
    waiting.write_all(late.as_bytes()).unwrap();
    assert!(wait_until(WAIT, || peer_kernel_has_all(&open)
        && peer_kernel_has_all(&waiting)));
    relay.signal("TERM");
    relay.signal("CONT");
    let status = relay.wait_exit(WAIT).expect("relay exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", relay.log());
    let (seen, _) = collect_ids(&sub, 250, Duration::from_secs(3));
    let missing: Vec<u64> = (1..=250).filter(|i| !seen.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of 250 lost: {:?}...; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        relay.log()
    );
}

#[test]
fn sigterm_to_a_stopped_relay_publishes_what_the_kernel_held_without_spool() {
    stopped_relay_publishes_what_the_kernel_held(&[]);
}

#[test]
fn sigterm_to_a_stopped_relay_publishes_what_the_kernel_held_with_spool() {
    let dir = TempDir::new("edge-spool");
    stopped_relay_publishes_what_the_kernel_held(&spool_settings(&dir.path().join("spool.bin")));
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
    let burst: String = (0..n).map(command).collect();
    s.write_all(burst.as_bytes()).unwrap();
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

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_full_disk_stops_intake_without_losing_what_was_accepted() {
    let dir = TempDir::new("edge-full");
    let fs = Tmpfs::mount(dir.path(), 256, false);
    let spool = fs.dir.join("spool.bin");
    let mut broker = Broker::unstarted("");
    let settings = spool_settings(&spool);
    let mut relay = Relay::start(broker.port, &as_refs(&settings));
    fs.fill_leaving(24);
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            let burst: String = (0..1000).map(command).collect();
            let _ = s.write_all(burst.as_bytes());
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
    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay.relaunch();
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
    let dir = TempDir::new("edge-resume");
    let fs = Tmpfs::mount(dir.path(), 512, false);
    let spool = fs.dir.join("spool.bin");
    let mut broker = Broker::unstarted("");
    let settings = spool_settings(&spool);
    let relay = Relay::start(broker.port, &as_refs(&settings));
    fs.fill_leaving(24);
    let sender = {
        let mut s = relay.connect();
        std::thread::spawn(move || {
            let burst: String = (0..1000).map(command).collect();
            s.write_all(burst.as_bytes()).unwrap();
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
    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
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
    let dir = TempDir::new("edge-ro");
    let fs = Tmpfs::mount(dir.path(), 64, true);
    let spool = fs.dir.join("spool.bin");
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let settings = spool_settings(&spool);
    let relay = Relay::start(broker.port, &as_refs(&settings));
    relay.expect_log("cannot be written", WAIT);
    let mut s = relay.connect();
    let burst: String = (0..300).map(command).collect();
    s.write_all(burst.as_bytes()).unwrap();
    expect_all(&sub, 300, Duration::from_secs(5), "read-only spool", &relay);
    assert!(
        relay.log().contains("ERROR"),
        "the failing spool is an error"
    );
}

/// The flash that holds the log, status and metrics turned read-only (ext4
/// errors=remount-ro): the relay still starts and serves, the log on
/// stderr, the failing files reported.
#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_read_only_disk_under_log_status_and_metrics_does_not_stop_the_start() {
    let dir = TempDir::new("edge-ro-all");
    let fs = Tmpfs::mount(dir.path(), 64, true);
    let at = |name: &str| fs.dir.join(name).to_string_lossy().into_owned();
    let (log, status, metrics) = (at("relay.log"), at("status.json"), at("relay.prom"));
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(
        broker.port,
        &[
            ("LOG_FILE", log.as_str()),
            ("STATUS_FILE", status.as_str()),
            ("METRICS_FILE", metrics.as_str()),
        ],
    );
    relay.expect_log("cannot be written", WAIT);
    relay.expect_log("cannot write STATUS_FILE", WAIT);
    let mut s = relay.connect();
    let burst: String = (0..100).map(command).collect();
    s.write_all(burst.as_bytes()).unwrap();
    expect_all(
        &sub,
        100,
        Duration::from_secs(5),
        "read-only log disk",
        &relay,
    );
    assert!(
        relay.log().contains("accepted IMG"),
        "the log went to stderr"
    );
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test.sh runs it with --ignored"]
fn a_spool_on_a_full_disk_at_start_does_not_stop_the_start() {
    let dir = TempDir::new("edge-full-start");
    let fs = Tmpfs::mount(dir.path(), 64, false);
    fs.fill_leaving(0);
    let spool = fs.dir.join("spool.bin");
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let settings = spool_settings(&spool);
    let mut relay = Relay::start(broker.port, &as_refs(&settings));
    relay.expect_log("cannot be written", WAIT);
    relay.connect().write_all(command(1).as_bytes()).unwrap();
    assert_eq!(
        id_of(&sub.recv(WAIT).expect("delivered while connected")),
        1
    );
    relay.signal("TERM");
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_spool_costs_one_command_and_the_file_is_kept() {
    let dir = TempDir::new("edge-flip");
    let spool = dir.path().join("spool.bin");
    let mut broker = Broker::unstarted("");
    let settings = spool_settings(&spool);
    let mut relay = Relay::start(broker.port, &as_refs(&settings));
    let mut s = relay.connect();
    for i in 0..100 {
        s.write_all(command(i).as_bytes()).unwrap();
        // One record per command.
        assert!(wait_until(WAIT, || accepted_count(&relay) == i + 1));
    }
    relay.crash();
    let mut bytes = std::fs::read(&spool).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&spool, &bytes).unwrap();

    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay.relaunch();
    let (seen, _) = collect_ids(&sub, 100, Duration::from_secs(3));
    assert_eq!(seen.len(), 99, "log:\n{}", relay.log());
    relay.expect_log("damaged bytes in 1 places skipped", WAIT);
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spool.bin.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        bytes,
        "kept as it was"
    );
}

#[test]
fn a_spool_deleted_or_truncated_under_the_relay_is_written_again() {
    let dir = TempDir::new("edge-deleted");
    let spool = dir.path().join("spool.bin");
    let mut broker = Broker::unstarted("");
    let settings = spool_settings(&spool);
    let mut relay = Relay::start(broker.port, &as_refs(&settings));
    let mut s = relay.connect();
    let send = |s: &mut TcpStream, range: std::ops::Range<usize>| {
        let burst: String = range.map(command).collect();
        s.write_all(burst.as_bytes()).unwrap();
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

    broker.restart();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    relay.relaunch();
    expect_all(
        &sub,
        30,
        Duration::from_secs(5),
        "spool rewritten twice",
        &relay,
    );
}

fn at_1970(lib: &str) -> Launch {
    Launch {
        env: vec![
            ("LD_PRELOAD".into(), lib.into()),
            ("FAKETIME".into(), "@1970-01-01 00:10:00".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_DONT_RESET".into(), "1".into()),
        ],
        ..Launch::default()
    }
}

/// A gateway without a real-time clock spools at "1970", then NTP moves the
/// clock years ahead; or the other way round. Either way the commands are
/// of unknown age: published, not expired.
#[test]
fn spooled_commands_survive_a_clock_that_jumped_between_runs() {
    let lib = support::faketime_lib();
    require(
        lib.is_some(),
        "libfaketime is not installed (scripts/test.sh installs faketime)",
    );
    require(
        testing_own_build(),
        "libfaketime needs the dynamically linked debug build, not MS500_RELAY_EXE",
    );
    let lib = lib.unwrap_or_default();
    for (first, second) in [(true, false), (false, true)] {
        let dir = TempDir::new("edge-clock");
        let spool = dir.path().join("spool.bin");
        let mut broker = Broker::unstarted("");
        let mut settings = spool_settings(&spool);
        settings.push(("COMMAND_TTL", "60".into()));
        let launch = if first {
            at_1970(&lib)
        } else {
            Launch::default()
        };
        let mut relay = Relay::start_with(broker.port, &as_refs(&settings), launch);
        if first {
            assert!(
                relay.log().starts_with("1970-"),
                "faketime works: {}",
                relay.log()
            );
        }
        let mut s = relay.connect();
        let burst: String = (0..5).map(command).collect();
        s.write_all(burst.as_bytes()).unwrap();
        assert!(wait_until(WAIT, || accepted_count(&relay) == 5));
        relay.crash();

        broker.restart();
        let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
        relay.launch = if second {
            at_1970(&lib)
        } else {
            Launch::default()
        };
        relay.relaunch();
        expect_all(
            &sub,
            5,
            Duration::from_secs(5),
            "after the clock jumped",
            &relay,
        );
        let log = relay.log();
        assert!(!log.contains("expired IMG"), "{log}");
        assert_eq!(
            log.matches("carry a time that cannot be right").count(),
            1,
            "logged once: {log}"
        );
    }
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
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
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

/// `send < big.ndjson`: the status lines are read while the input is
/// still being written, so none is dropped and every command is confirmed.
#[test]
fn send_confirms_every_command_of_a_large_input() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("LOG_LEVEL", "warn")]);
    let conf = relay.conf.to_string_lossy().into_owned();
    let n = 30_000;
    let input: String = (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"IMG\",\"unit\":\"big-{}\",\"id\":{i}}}\n",
                i % 5
            )
        })
        .collect();
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "20"], Some(input.as_bytes()));
    assert_eq!(code, 0, "{err}");
    let ok = out
        .lines()
        .filter(|l| l.starts_with(r#"{"status":"ok""#))
        .count();
    assert_eq!(ok, n, "one ok line per command");
    assert_eq!(sub.collect(n, Duration::from_secs(5)).len(), n);
}

#[test]
fn send_says_what_became_of_each_command_whatever_ack_mode() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = Relay::start(broker.port, &[("ACK_MODE", "none")]);
    let conf = relay.conf.to_string_lossy().into_owned();
    let a = r#"{"type":"IMG","unit":"s1","id":1}"#;
    let b = r#"{"type":"RSR","unit":"s1","id":2}"#;
    let (code, out, err) = run_bin(&["send", "-c", &conf, a, b], None);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"status":"ok","type":"IMG","unit":"s1","id":1}"#,
            r#"{"status":"ok","type":"RSR","unit":"s1","id":2}"#
        ]
    );
    sub.collect(2, WAIT);

    let bad = r#"{"type":"AIM","unit":"s1","id":3,"model_id":1,"link":"l"}"#;
    let (code, out, err) = run_bin(&["send", "-c", &conf, a, bad], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            r#""status":"error","type":"AIM","unit":"s1","id":3,"error":"missing field \"md5\"""#
        ),
        "{out}"
    );
    assert!(err.contains("1 of 2 commands were refused"), "{err}");

    // Not JSON at all: one error line, exit 1.
    let (code, out, _) = run_bin(&["send", "-c", &conf, "-"], Some(b"hello\n"));
    assert_eq!(code, 1);
    assert!(out.contains(r#""status":"error""#), "{out}");

    // The backend's own connections see what they always saw: nothing.
    let mut s = relay.connect();
    s.write_all(a.as_bytes()).unwrap();
    let quiet = support::read_lines(&s, 1, Duration::from_millis(500));
    assert!(quiet.is_empty(), "{quiet:?}");
}

#[test]
fn send_exits_1_when_the_broker_does_not_confirm_in_time() {
    let broker = Broker::unstarted("");
    let relay = Relay::start(broker.port, &[]);
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, err) = run_bin(
        &[
            "send",
            "-c",
            &conf,
            "-w",
            "1",
            r#"{"type":"IMG","unit":"s1"}"#,
        ],
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("1 of 1 commands not confirmed within 1.0 s"),
        "{err}"
    );
}
