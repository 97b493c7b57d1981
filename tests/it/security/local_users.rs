//! Other local users' processes (issues 22, 28 and 30): a listener of hers
//! where the relay should be gets nothing from `send`; her lock on PID_FILE
//! or relay.conf blocks neither the start, `stop`, `status` nor the
//! watchdog; `stop` signals only the lock's holder; and only root and the
//! relay's user may see or cancel held commands.

use crate::delivery::held::{relay_on, CAMERA_LC};
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::local_users::other_user;
use crate::support::tools::{shared_conf, started_by_watchdog, tool, Reaper};
use crate::support::{
    alive, chmod, path_text, read_json, run_bin, socket_in, wait_until, Broker, Relay, TempDir,
    WAIT,
};

/// Finding 2: while the relay is down she listens on its port; `send`
/// refuses her listener and writes nothing to it.
#[test]
#[ignore = "needs root to create another user"]
fn send_refuses_a_listener_that_is_not_the_relays() {
    let other = other_user();
    let trap = other.act(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let port = trap.local_addr().unwrap().port();
    let caught = std::thread::spawn(move || {
        // Accepted as her too: the kernel gives an accepted socket the
        // accepting thread's owner.
        let (mut s, _) = other.act(|| trap.accept().unwrap());
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let dir = TempDir::new("send-trap");
    let conf = dir.path().join("relay.conf");
    std::fs::write(&conf, format!("SOCKET_PORT = {port}\n")).unwrap();
    let wfi = r#"{"type":"WFI","unit":"cam-01","wifi_enabled":true,"wifi_password":"S3cret"}"#;
    let (code, out, err) = run_bin(
        &["send", "-c", &conf.to_string_lossy(), "-w", "2"],
        Some(wfi.as_bytes()),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not the relay"), "{err}");
    assert!(
        caught.join().unwrap().is_empty(),
        "nothing reached her listener"
    );
}

/// `send` as root will not talk to a Unix socket another user put at
/// SOCKET_PATH while the relay is down, and writes nothing to it.
#[test]
#[ignore = "needs root to create another user"]
fn send_refuses_a_unix_socket_that_is_not_the_relays() {
    let other = other_user();
    let dir = TempDir::new("unix-trap");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let path = socket_in(&dir);
    let trap = other.act(|| UnixListener::bind(&path).unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), other.uid);
    let caught = std::thread::spawn(move || {
        let (mut s, _) = trap.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut got);
        got
    });
    let conf = dir.path().join("relay.conf");
    std::fs::write(&conf, format!("SOCKET_PATH = {}\n", path_text(&path))).unwrap();
    let wfi = r#"{"type":"WFI","unit":"cam-01","wifi_enabled":1,"wifi_password":"S3cret"}"#;
    let (code, out, err) = run_bin(&["send", "-c", &path_text(&conf), "-w", "2", wfi], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not the relay, nothing sent"), "{err}");
    assert!(
        caught.join().unwrap().is_empty(),
        "nothing reached her socket"
    );
}

/// Finding 3: she holds a lock on the world-readable PID_FILE; a relay
/// still starts, and `stop` and the watchdog still work.
#[test]
#[ignore = "needs root to create another user"]
fn a_reader_of_pid_file_cannot_keep_the_relay_down() {
    let other = other_user();
    let broker = Broker::start();
    let dir = TempDir::new("pid-reader");
    let pid_file = dir.path().join("relay.pid");
    std::fs::write(&pid_file, "1\n").unwrap();
    let hers = other.act(|| File::open(&pid_file).expect("PID_FILE is readable"));
    hers.try_lock().expect("she locks PID_FILE");
    assert!(
        other
            .act(|| File::open(dir.path().join("relay.pid.lock")))
            .is_err()
            || !dir.path().join("relay.pid.lock").exists(),
        "the lock file is not hers to open"
    );
    let pid = pid_file.to_string_lossy().into_owned();
    let status = dir
        .path()
        .join("status.json")
        .to_string_lossy()
        .into_owned();
    let relay = Relay::start(
        broker.port,
        &[
            ("PID_FILE", pid.as_str()),
            ("STATUS_FILE", status.as_str()),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    relay.expect_ready();
    assert!(
        other
            .act(|| File::open(dir.path().join("relay.pid.lock")))
            .is_err(),
        "she cannot open the lock file"
    );
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, err) = run_bin(&["stop", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    let mut relay = relay;
    assert!(relay.wait_exit(WAIT).is_some(), "stopped");
    let (code, out, err) = run_bin(&["watchdog", "-c", &conf], None);
    assert_eq!(code, 0, "the watchdog starts a relay: {out}{err}");
    let (code, out, err) = run_bin(&["stop", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    drop(hers);
}

/// Finding 11: the pid in PID_FILE is alive but does not hold the lock
/// (someone else does): `stop` signals nothing.
#[test]
#[ignore = "needs root to create another user"]
fn stop_signals_only_the_process_that_holds_the_lock() {
    let _other = other_user();
    let dir = TempDir::new("pid-reused");
    let pid_file = dir.path().join("relay.pid");
    let lock = dir.path().join("relay.pid.lock");
    let held = File::create(&lock).unwrap();
    held.try_lock().expect("this test holds the lock");
    let mut stranger = Command::new("sleep")
        .arg("60")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(&pid_file, format!("{}\n", stranger.id())).unwrap();
    let conf = dir.path().join("relay.conf");
    std::fs::write(&conf, format!("PID_FILE = {}\n", pid_file.display())).unwrap();
    let (code, out, err) = run_bin(&["stop", "-c", &conf.to_string_lossy()], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("does not hold"), "{err}");
    assert!(stranger.try_wait().unwrap().is_none(), "the stranger lives");
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// Finding: any user who can read relay.conf held `flock -x` on it, and
/// the watchdog and `stop` gave up after 30 s. They now take their turns
/// on a file only the relay's user can open.
#[test]
#[ignore = "needs root to create another user"]
fn a_lock_on_relay_conf_blocks_neither_the_watchdog_nor_stop() {
    let other = other_user();
    let broker = Broker::start();
    let dir = TempDir::new("conf-lock");
    let run = dir.path().join("run");
    let pid_file = run.join("relay.pid");
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
    let hers = other.act(|| File::open(&conf).expect("relay.conf is readable"));
    hers.try_lock().expect("she locks relay.conf");
    let started = Instant::now();
    let pid = started_by_watchdog(&conf, &pid_file);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let (code, out, err) = tool(&["stop"], &conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("stopping relay pid {pid}")), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(wait_until(WAIT, || !alive(pid)), "relay {pid} still runs");
    drop(hers);
}

/// Finding: a shared lock on the world-readable PID_FILE, taken before the
/// relay started, made `status` say NOT RUNNING for a healthy relay.
/// `status` now asks the kernel who holds the relay's lock.
#[test]
#[ignore = "needs root to create another user"]
fn a_shared_lock_on_pid_file_does_not_make_status_say_not_running() {
    let other = other_user();
    let broker = Broker::start();
    let dir = TempDir::new("status-lock");
    let pid_file = dir.path().join("relay.pid");
    std::fs::write(&pid_file, "").unwrap();
    chmod(&pid_file, 0o644);
    let hers = other.act(|| File::open(&pid_file).expect("PID_FILE is readable"));
    hers.lock_shared().expect("she takes a shared lock");
    let status = dir.path().join("status.json");
    let relay = Relay::start(
        broker.port,
        &[
            ("PID_FILE", &pid_file.to_string_lossy()),
            ("STATUS_FILE", &status.to_string_lossy()),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    relay.expect_ready();
    assert!(wait_until(WAIT, || read_json(&status)["device_link"]
        ["subscribed"]
        == true));
    let (code, out, err) = tool(&["status"], &relay.conf);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("NOT RUNNING"), "{out}");
    drop(hers);
}

#[test]
#[ignore = "needs root to create and act as another user"]
fn only_root_and_the_relays_user_may_see_or_cancel_held_commands() {
    let other = crate::support::local_users::other_user();
    let broker = Broker::start();
    let relay = relay_on(broker.port, "5", &[]);
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out) = other.run(&["held", "-c", &conf]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused: control requests are taken only from root or the relay's own user"),
        "{out}"
    );
    let (code, out) = other.run(&["cancel", "-c", &conf, CAMERA_LC]);
    assert_eq!(code, 1, "{out}");
    relay.expect_log("control request refused", WAIT);
    let (code, out, err) = run_bin(&["held", "-c", &conf], None);
    assert_eq!(code, 0, "root may: {out}{err}");
}
