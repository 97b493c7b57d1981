//! Other local users' processes (issues 22, 28 and 30): a listener of hers
//! where the relay should be gets nothing from `send`; her lock on PID_FILE
//! or relay.conf blocks neither the start, `stop`, `status` nor the
//! watchdog; `stop` signals only the lock's holder; and only root and the
//! relay's user may see or cancel held commands.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::delivery::held::{relay_on, CAMERA_LC};
use crate::support::local_users::{other_user, Other};
use crate::support::tools::{conf_in, tool, tool_with_input, ToolConf};
use crate::support::{
    chmod, path_text, run_bin, socket_in, wait_until, Broker, Relay, Session, TempDir, WAIT,
};

/// How she locks a file she can read.
enum Lock {
    Exclusive,
    Shared,
}

/// PID_FILE in a new directory `name`, holding `content` and readable by
/// all, opened and locked by `other`: the directory, PID_FILE and her
/// handle (her lock lasts as long as it).
fn pid_file_she_locks(
    other: Other,
    name: &str,
    content: &str,
    lock: Lock,
) -> (TempDir, PathBuf, File) {
    let dir = TempDir::new(name);
    let pid_file = dir.path().join("relay.pid");
    std::fs::write(&pid_file, content).unwrap();
    chmod(&pid_file, 0o644);
    let hers = other.act(|| File::open(&pid_file).expect("PID_FILE is readable"));
    match lock {
        Lock::Exclusive => hers.try_lock().expect("she locks PID_FILE"),
        Lock::Shared => hers.lock_shared().expect("she takes a shared lock"),
    }
    (dir, pid_file, hers)
}

/// What the connection her listener takes (`accept`) reads until `send`
/// closes it, read on a thread of its own.
fn what_she_reads<S: Session + Read + Send + 'static>(
    accept: impl FnOnce() -> S + Send + 'static,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut connection = accept();
        connection.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let _ = connection.read_to_end(&mut got);
        got
    })
}

/// `send` exited 1 naming `reason`, and her `listener` read nothing.
#[track_caller]
fn nothing_sent_to_her(
    (code, out, err): (i32, String, String),
    reason: &str,
    caught: JoinHandle<Vec<u8>>,
    listener: &str,
) {
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(reason), "{err}");
    let got = caught.join().unwrap();
    assert!(got.is_empty(), "nothing reached {listener}");
}

/// Finding 2: while the relay is down she listens on its port; `send`
/// refuses her listener and writes nothing to it.
#[test]
#[ignore = "needs root to create another user"]
fn send_refuses_a_listener_that_is_not_the_relays() {
    let other = other_user();
    let trap = other.act(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let port = trap.local_addr().unwrap().port();
    // Accepted as her too: the kernel gives an accepted socket the
    // accepting thread's owner.
    let caught = what_she_reads(move || other.act(|| trap.accept().unwrap().0));
    let dir = TempDir::new("send-trap");
    let conf = conf_in(dir.path(), &format!("SOCKET_PORT = {port}\n"));
    let wfi = r#"{"type":"WFI","unit":"cam-01","wifi_enabled":true,"wifi_password":"S3cret"}"#;
    let refused = tool_with_input(&["send", "-w", "2"], &conf, Some(wfi.as_bytes()));
    nothing_sent_to_her(refused, "not the relay", caught, "her listener");
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
    let caught = what_she_reads(move || trap.accept().unwrap().0);
    let conf = conf_in(dir.path(), &format!("SOCKET_PATH = {}\n", path_text(&path)));
    let wfi = r#"{"type":"WFI","unit":"cam-01","wifi_enabled":1,"wifi_password":"S3cret"}"#;
    let refused = tool(&["send", "-w", "2", wfi], &conf);
    nothing_sent_to_her(refused, "not the relay, nothing sent", caught, "her socket");
}

/// Finding 3: she holds a lock on the world-readable PID_FILE; a relay
/// still starts, and `stop` and the watchdog still work.
#[test]
#[ignore = "needs root to create another user"]
fn a_reader_of_pid_file_cannot_keep_the_relay_down() {
    let other = other_user();
    let (dir, pid_file, hers) = pid_file_she_locks(other, "pid-reader", "1\n", Lock::Exclusive);
    assert!(
        other
            .act(|| File::open(dir.path().join("relay.pid.lock")))
            .is_err()
            || !dir.path().join("relay.pid.lock").exists(),
        "the lock file is not hers to open"
    );
    let broker = Broker::start();
    let pid = pid_file.to_string_lossy().into_owned();
    let relay = Relay::start_with_status(broker.port, &[("PID_FILE", pid.as_str())]);
    relay.expect_ready();
    assert!(
        other
            .act(|| File::open(dir.path().join("relay.pid.lock")))
            .is_err(),
        "she cannot open the lock file"
    );
    let (code, out, err) = relay.tool(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut relay = relay;
    assert!(relay.wait_exit(WAIT).is_some(), "stopped");
    let (code, out, err) = relay.tool(&["watchdog"]);
    assert_eq!(code, 0, "the watchdog starts a relay: {out}{err}");
    let (code, out, err) = relay.tool(&["stop"]);
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
    let conf = ToolConf::in_run(dir.path(), broker.port, "relay.pid");
    let hers = other.act(|| File::open(&conf.path).expect("relay.conf is readable"));
    hers.try_lock().expect("she locks relay.conf");
    let started = Instant::now();
    let pid = conf.started_by_watchdog();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let took = conf.stops(pid);
    assert!(took < Duration::from_secs(15), "{took:?}");
    drop(hers);
}

/// Finding: a shared lock on the world-readable PID_FILE, taken before the
/// relay started, made `status` say NOT RUNNING for a healthy relay.
/// `status` now asks the kernel who holds the relay's lock.
#[test]
#[ignore = "needs root to create another user"]
fn a_shared_lock_on_pid_file_does_not_make_status_say_not_running() {
    let other = other_user();
    let (_dir, pid_file, hers) = pid_file_she_locks(other, "status-lock", "", Lock::Shared);
    let broker = Broker::start();
    let relay = Relay::start_with_status(broker.port, &[("PID_FILE", &pid_file.to_string_lossy())]);
    relay.expect_ready();
    assert!(wait_until(WAIT, || relay.status()["device_link"]
        ["subscribed"]
        == true));
    let (code, out, err) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("NOT RUNNING"), "{out}");
    drop(hers);
}

#[test]
#[ignore = "needs root to create and act as another user"]
fn only_root_and_the_relays_user_may_see_or_cancel_held_commands() {
    let other = other_user();
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
