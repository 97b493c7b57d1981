//! A command's lifetime (`COMMAND_TTL`): one that outlives it is reported
//! and never published, in the queue or in the spool at the next start; a
//! clock that jumped between runs expires nothing.

use std::io::Write;
use std::time::Duration;

use super::{replayed, spooling_with_the_broker_away};
use crate::support;
use crate::support::{
    accepted_count, expect_all, id_of, numbered_command as command, numbered_commands, require,
    testing_own_build, wait_until, Broker, Launch, Relay, Subscriber, COMMANDS, WAIT,
};

#[test]
fn expired_commands_are_logged_reported_and_never_published() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, COMMANDS);
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
fn spooled_commands_older_than_the_ttl_expire_at_the_next_start() {
    let (mut broker, mut relay) =
        spooling_with_the_broker_away("{dir}/relay.spool", &[("COMMAND_TTL", "1")]);
    relay.connect().write_all(command(5).as_bytes()).unwrap();
    assert!(wait_until(WAIT, || accepted_count(&relay) == 1));
    relay.crash();
    // Time is the test: the spooled command outlives its COMMAND_TTL of 1 s.
    std::thread::sleep(Duration::from_millis(1500));
    let sub = replayed(&mut broker, &mut relay);
    relay.expect_log("in the spool (COMMAND_TTL 1 s): not published", WAIT);
    relay.expect_connected();
    sub.assert_silent(Duration::from_millis(500));
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
        let mut broker = Broker::unstarted("");
        let settings = [("SPOOL_FILE", "{dir}/spool.bin"), ("COMMAND_TTL", "60")];
        let launch = if first {
            at_1970(&lib)
        } else {
            Launch::default()
        };
        let mut relay = Relay::start_with(broker.port, &settings, launch);
        if first {
            assert!(
                relay.log().starts_with("1970-"),
                "faketime works: {}",
                relay.log()
            );
        }
        let mut s = relay.connect();
        s.write_all(numbered_commands(0..5).as_bytes()).unwrap();
        assert!(wait_until(WAIT, || accepted_count(&relay) == 5));
        relay.crash();

        relay.launch = if second {
            at_1970(&lib)
        } else {
            Launch::default()
        };
        let sub = replayed(&mut broker, &mut relay);
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
