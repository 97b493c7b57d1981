//! One relay per configuration: a second one exits 3 naming the first (a
//! stale PID_FILE is taken over), one on a taken port exits 4 and leaves
//! the first one's files alone, and the tools find the relay they started
//! whatever was edited in relay.conf or removed since.

use std::net::TcpListener;

use crate::support::tools::{relays_of, tool, ToolConf};
use crate::support::{alive, append, read_json, wait_until, Broker, Relay, TempDir, WAIT};

#[test]
fn a_second_instance_exits_3_naming_the_holder_and_a_stale_pid_file_is_taken_over() {
    let broker = Broker::start();
    let dir = TempDir::new("pid");
    let pid_file = dir.path().join("relay.pid");
    std::fs::write(&pid_file, "4194303\n").unwrap(); // left behind by a dead process, no lock
    let pid_s = pid_file.to_str().unwrap().to_string();
    let mut first = Relay::start(
        broker.port,
        &[("PID_FILE", &pid_s), ("SOCKET_ALLOW_USERS", "root, 0")],
    );
    let held = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(
        held.trim(),
        first.pid().to_string(),
        "stale file taken over silently"
    );
    assert!(!first.log().contains("WARN"), "{}", first.log());

    let (code, _, err) = first.tool(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&first.pid().to_string()),
        "names the holder: {err}"
    );
    assert!(err.contains("already running"), "{err}");

    first.signal("TERM");
    assert_eq!(first.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(!pid_file.exists(), "a clean stop removes the pid file");
}

#[test]
fn a_taken_port_exits_4() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut relay = Relay::spawn(1, &[("SOCKET_PORT", &port.to_string())]);
    let status = relay
        .wait_exit(WAIT)
        .expect("relay exits when its port is taken");
    assert_eq!(status.code(), Some(4), "log:\n{}", relay.log());
    assert!(relay.log().contains("cannot listen"), "{}", relay.log());
}

#[test]
fn a_second_instance_on_a_taken_port_leaves_the_first_ones_status_file_alone() {
    let broker = Broker::start();
    let first = Relay::start(
        broker.port,
        &[
            ("STATUS_FILE", "{dir}/status.json"),
            ("STATUS_INTERVAL", "60"),
        ],
    );
    let status_file = first.status_file();
    // Its own snapshots settle once both links are up (each state change
    // writes one); from then on only STATUS_INTERVAL (60 s) rewrites it.
    first.expect_ready();
    assert!(wait_until(WAIT, || {
        let v = read_json(&status_file);
        v["pid"] == first.pid()
            && v["broker"]["connected"] == true
            && v["device_link"]["subscribed"] == true
    }));
    let before = std::fs::read(&status_file).unwrap();
    // The same relay.conf again: the relay running it is named (exit 3).
    let (code, _, err) = first.tool(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    // A copy of it (another configuration) finds the port taken.
    let copy = first.path("copy.conf");
    std::fs::copy(&first.conf, &copy).unwrap();
    let (code, _, err) = tool(&[], &copy);
    assert_eq!(code, 4, "{err}");
    assert_eq!(
        std::fs::read(&status_file).unwrap(),
        before,
        "untouched by the second instance"
    );
    assert_eq!(read_json(&status_file)["pid"], first.pid());
}

/// Finding: after `PID_FILE` was edited in relay.conf (a restart-only
/// key), `reload` said the relay was not running and the next watchdog
/// run started a second one. The tools find it by the configuration it
/// runs: reload signals it, the watchdog leaves it alone, status reads
/// it, stop stops it.
#[test]
fn the_tools_find_the_relay_after_pid_file_was_edited() {
    let broker = Broker::start();
    let dir = TempDir::new("pid-edited");
    let conf = ToolConf::in_run(dir.path(), broker.port, "a.pid");
    let pid = conf.started_by_watchdog();
    let run = dir.path().join("run");
    let edited = run.join("b.pid");
    append(&conf.path, &format!("PID_FILE = {}\n", edited.display()));

    let (code, out, err) = conf.tool(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("relay pid {pid}")), "{out}");
    let log = run.join("ms500-relay.log");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(
                "PID_FILE changed in relay.conf but only apply at a restart"
            )),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for _ in 0..2 {
        let (code, out, err) = conf.tool(&["watchdog"]);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    }
    assert_eq!(relays_of(&conf.path), [pid], "one relay, the first");
    assert!(!edited.exists());
    let (code, out, err) = conf.tool(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("pid {pid}")), "{out}");

    conf.stops(pid);
}

/// Finding: with PID_FILE's directory removed, `stop` said "relay is not
/// running" (exit 0) while it ran.
#[test]
fn stop_finds_the_relay_after_the_pid_files_directory_was_removed() {
    let broker = Broker::start();
    let dir = TempDir::new("pid-dir-gone");
    let run = dir.path().join("run");
    let status_file = dir.path().join("status.json");
    let conf = ToolConf::new(dir.path(), broker.port, run.join("relay.pid"), &status_file);
    let pid = conf.started_by_watchdog();
    std::fs::remove_dir_all(&run).unwrap();
    conf.stops(pid);
}

/// Finding: two relays with one client id on one broker knock each other
/// off. The watchdog starts none while another configuration's relay
/// runs with the same client id on the same broker, and says which.
#[test]
fn the_watchdog_starts_no_second_relay_with_the_same_client_id() {
    let broker = Broker::start();
    let dir = TempDir::new("twin-ids");
    let twin = |name: &str| {
        let (pid_file, status_file) = (format!("{name}.pid"), format!("{name}.json"));
        ToolConf::named(
            &format!("{name}.conf"),
            dir.path(),
            broker.port,
            dir.path().join(pid_file),
            &dir.path().join(status_file),
            "MQTT_CLIENT_ID = twin\n",
        )
    };
    let (conf_a, conf_b) = (twin("a"), twin("b"));
    let pid = conf_a.started_by_watchdog();
    let (code, out, err) = conf_b.tool(&["watchdog"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("pid {pid}"))
            && err.contains("twin")
            && err.contains(&conf_a.path.display().to_string()),
        "{err}"
    );
    assert!(relays_of(&conf_b.path).is_empty(), "no second relay");
    assert!(!conf_b.pid_file.exists());
    assert!(alive(pid));
}
