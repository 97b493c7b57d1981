//! One relay per configuration: a second one exits 3 naming the first (a
//! stale PID_FILE is taken over), one on a taken port exits 4 and leaves
//! the first one's files alone, and the tools find the relay they started
//! whatever was edited in relay.conf or removed since.

use std::net::TcpListener;

use crate::support::tools::{relays_of, shared_conf, started_by_watchdog, tool, Reaper};
use crate::support::{alive, append, read_json, run_bin, wait_until, Broker, Relay, TempDir, WAIT};

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

    let (code, _, err) = run_bin(&["-c", first.conf.to_str().unwrap()], None);
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
    let dir = TempDir::new("op-second");
    let status_file = dir.path().join("status.json");
    let st = status_file.to_string_lossy().into_owned();
    let first = Relay::start(
        broker.port,
        &[("STATUS_FILE", st.as_str()), ("STATUS_INTERVAL", "60")],
    );
    assert!(wait_until(WAIT, || read_json(&status_file)["pid"] == first.pid()));
    let before = std::fs::read(&status_file).unwrap();
    // The same relay.conf again: the relay running it is named (exit 3).
    let (code, _, err) = run_bin(&["-c", first.conf.to_str().unwrap()], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    // A copy of it (another configuration) finds the port taken.
    let copy = dir.path().join("copy.conf");
    std::fs::copy(&first.conf, &copy).unwrap();
    let (code, _, err) = run_bin(&["-c", copy.to_str().unwrap()], None);
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
    let run = dir.path().join("run");
    let pid_file = run.join("a.pid");
    let conf = shared_conf(
        dir.path(),
        "relay.conf",
        broker.port,
        &format!(
            "PID_FILE = {}\nSTATUS_FILE = {}\n",
            pid_file.display(),
            run.join("status.json").display()
        ),
    );
    let _reaper = Reaper(vec![conf.clone()]);
    let pid = started_by_watchdog(&conf, &pid_file);
    let edited = run.join("b.pid");
    append(&conf, &format!("PID_FILE = {}\n", edited.display()));

    let (code, out, err) = tool(&["reload"], &conf);
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
        let (code, out, err) = tool(&["watchdog"], &conf);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    }
    assert_eq!(relays_of(&conf), [pid], "one relay, the first");
    assert!(!edited.exists());
    let (code, out, err) = tool(&["status"], &conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("pid {pid}")), "{out}");

    let (code, out, err) = tool(&["stop"], &conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("stopping relay pid {pid}")), "{out}");
    assert!(wait_until(WAIT, || !alive(pid)), "relay {pid} still runs");
}

/// Finding: with PID_FILE's directory removed, `stop` said "relay is not
/// running" (exit 0) while it ran.
#[test]
fn stop_finds_the_relay_after_the_pid_files_directory_was_removed() {
    let broker = Broker::start();
    let dir = TempDir::new("pid-dir-gone");
    let run = dir.path().join("run");
    let pid_file = run.join("relay.pid");
    let conf = shared_conf(
        dir.path(),
        "relay.conf",
        broker.port,
        &format!(
            "PID_FILE = {}\nSTATUS_FILE = {}\n",
            pid_file.display(),
            dir.path().join("status.json").display()
        ),
    );
    let _reaper = Reaper(vec![conf.clone()]);
    let pid = started_by_watchdog(&conf, &pid_file);
    std::fs::remove_dir_all(&run).unwrap();
    let (code, out, err) = tool(&["stop"], &conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("stopping relay pid {pid}")),
        "{out}{err}"
    );
    assert!(wait_until(WAIT, || !alive(pid)), "relay {pid} still runs");
}

/// Finding: two relays with one client id on one broker knock each other
/// off. The watchdog starts none while another configuration's relay
/// runs with the same client id on the same broker, and says which.
#[test]
fn the_watchdog_starts_no_second_relay_with_the_same_client_id() {
    let broker = Broker::start();
    let dir = TempDir::new("twin-ids");
    let pid_a = dir.path().join("a.pid");
    let pid_b = dir.path().join("b.pid");
    let conf_a = shared_conf(
        dir.path(),
        "a.conf",
        broker.port,
        &format!(
            "MQTT_CLIENT_ID = twin\nPID_FILE = {}\nSTATUS_FILE = {}\n",
            pid_a.display(),
            dir.path().join("a.json").display()
        ),
    );
    let conf_b = shared_conf(
        dir.path(),
        "b.conf",
        broker.port,
        &format!(
            "MQTT_CLIENT_ID = twin\nPID_FILE = {}\nSTATUS_FILE = {}\n",
            pid_b.display(),
            dir.path().join("b.json").display()
        ),
    );
    let _reaper = Reaper(vec![conf_a.clone(), conf_b.clone()]);
    let pid = started_by_watchdog(&conf_a, &pid_a);
    let (code, out, err) = tool(&["watchdog"], &conf_b);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("pid {pid}"))
            && err.contains("twin")
            && err.contains(&conf_a.display().to_string()),
        "{err}"
    );
    assert!(relays_of(&conf_b).is_empty(), "no second relay");
    assert!(!pid_b.exists());
    assert!(alive(pid));
}
