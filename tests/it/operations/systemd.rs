//! Started by systemd as `Type=notify`: the relay's notifications, read
//! from a datagram socket the test binds where systemd's would be
//! (`NOTIFY_SOCKET`, a path or an abstract `@name`): READY=1 once it
//! listens, RELOADING=1 then READY=1 around a SIGHUP (also when relay.conf
//! is refused), WATCHDOG=1 every half WATCHDOG_USEC, STOPPING=1 at SIGTERM;
//! and `ms500-relay reload` run as the unit's ExecReload=.

use std::time::{Duration, Instant};

use crate::support::notify::NotifySocket;
use crate::support::{relay_command, Broker, Launch, Relay, WAIT};

fn launched_under(notify: &NotifySocket, env: &[(&str, &str)]) -> Launch {
    let mut vars = vec![("NOTIFY_SOCKET".to_string(), notify.name.clone())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Launch {
        env: vars,
        ..Launch::default()
    }
}

fn monotonic_usec(message: &str) -> u64 {
    let value = message
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("not a reload notification: {message:?}"));
    value.parse().expect("MONOTONIC_USEC is a number")
}

#[test]
fn ready_once_listening_reloading_then_ready_on_sighup_and_stopping_at_sigterm() {
    let broker = Broker::start();
    let notify = NotifySocket::at_path();
    // A log file: what the relay wrote before READY=1 is in it when READY=1 arrives.
    let settings = [("LOG_FILE", "{dir}/relay.log")];
    let mut relay = Relay::spawn_with(broker.port, &settings, launched_under(&notify, &[]));
    let log_file = relay.path("relay.log");

    let ready = notify.expect_next("READY=1 at start");
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        log.contains(" listening on "),
        "READY=1 came before the listening line: {log}"
    );
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=listening on 127.0.0.1:{}", relay.port())
    );

    relay.signal("HUP");
    let first = monotonic_usec(&notify.expect_next("RELOADING=1"));
    assert_eq!(
        notify.expect_next("READY=1 after the reload"),
        "READY=1\nSTATUS=relay.conf reloaded"
    );
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        log.contains("SIGHUP: log file reopened; relay.conf read again"),
        "READY=1 came before the reload's line: {log}"
    );

    // A file the relay refuses: the reload still ends with READY=1, and
    // STATUS says what happened.
    let conf = std::fs::read_to_string(&relay.conf).unwrap();
    std::fs::write(&relay.conf, format!("{conf}MQTT_QOS = 7\n")).unwrap();
    relay.signal("HUP");
    let second = monotonic_usec(&notify.expect_next("RELOADING=1 again"));
    assert!(second > first, "{first} then {second}");
    let refused = notify.expect_next("READY=1 after a refused reload");
    assert!(
        refused.starts_with(
            "READY=1\nSTATUS=relay.conf refused at the last reload, the running configuration is kept: "
        ) && refused.contains("MQTT_QOS")
            && refused.lines().count() == 2,
        "{refused:?}"
    );

    relay.signal("TERM");
    assert_eq!(
        notify.expect_next("STOPPING=1"),
        "STOPPING=1\nSTATUS=shutting down: publishing what is queued for up to 5 s"
    );
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        !log.contains("systemd"),
        "nothing to say about systemd: {log}"
    );
}

#[test]
fn with_watchdog_usec_it_pings_every_half_of_it_and_not_for_another_process() {
    let broker = Broker::start();
    let notify = NotifySocket::at_path();
    let pid_of_another = (std::process::id() + 1).to_string();
    let mut other = Relay::spawn_with(
        broker.port,
        &[],
        launched_under(
            &notify,
            &[
                ("WATCHDOG_USEC", "600000"),
                ("WATCHDOG_PID", &pid_of_another),
            ],
        ),
    );
    assert!(notify.expect_next("READY=1").starts_with("READY=1\n"));
    let pings = notify.collect(Duration::from_millis(1500));
    assert!(pings.is_empty(), "pinged for another pid: {pings:?}");
    other.kill();

    // WATCHDOG_USEC 600 ms: a ping every 300 ms.
    let relay = Relay::spawn_with(
        broker.port,
        &[],
        launched_under(&notify, &[("WATCHDOG_USEC", "600000")]),
    );
    let got = notify.collect(Duration::from_millis(2000));
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(
        got.iter().any(|(_, m)| m.starts_with("READY=1\n")),
        "{got:?}"
    );
    assert!(
        (3..=9).contains(&pings.len()),
        "{} pings in 2 s at one per 300 ms: {got:?}",
        pings.len()
    );
    for pair in pings.windows(2).skip(1) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(200) && gap <= Duration::from_millis(1000),
            "pings {gap:?} apart: {got:?}"
        );
    }
    drop(relay);
}

#[test]
fn an_abstract_notify_socket_is_reached() {
    let broker = Broker::start();
    let notify = NotifySocket::abstract_name();
    let relay = Relay::spawn_with(broker.port, &[], launched_under(&notify, &[]));
    let ready = notify.expect_next("READY=1 on an abstract socket");
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=listening on 127.0.0.1:{}", relay.port())
    );
}

/// `ms500-relay reload` as the unit's ExecReload= (systemd sets MAINPID to
/// the relay's pid): it says RELOADING=1 itself before the signal, so that
/// systemd waits for the relay's READY=1; and it says nothing for a relay
/// that is not the unit's main process.
#[test]
fn reload_as_exec_reload_says_reloading_before_the_signal() {
    let broker = Broker::start();
    let notify = NotifySocket::at_path();
    let settings = [("PID_FILE", "{dir}/relay.pid")];
    let relay = Relay::spawn_with(broker.port, &settings, launched_under(&notify, &[]));
    assert!(notify.expect_next("READY=1").starts_with("READY=1\n"));

    let reload = |main_pid: u32| {
        relay_command()
            .args(["reload", "-c"])
            .arg(&relay.conf)
            .env("NOTIFY_SOCKET", &notify.name)
            .env("MAINPID", main_pid.to_string())
            .output()
            .expect("run reload")
    };
    let out = reload(relay.pid());
    assert!(out.status.success(), "{out:?}");
    let said: Vec<String> = (0..3)
        .map(|_| notify.expect_next("the reload's notifications"))
        .collect();
    assert!(
        said[0].starts_with("RELOADING=1\nMONOTONIC_USEC=")
            && said[1].starts_with("RELOADING=1\nMONOTONIC_USEC=")
            && said[2] == "READY=1\nSTATUS=relay.conf reloaded",
        "{said:?}"
    );

    let out = reload(relay.pid() + 100_000);
    assert!(out.status.success(), "{out:?}");
    assert!(notify
        .expect_next("the relay's own RELOADING=1")
        .starts_with("RELOADING=1\n"));
    assert_eq!(
        notify.expect_next("READY=1"),
        "READY=1\nSTATUS=relay.conf reloaded"
    );
    assert_eq!(
        notify.next(Duration::from_millis(300)),
        None,
        "the tool spoke for a relay that is not the unit's main process"
    );
}
