//! Issue 22: the Unix socket (`SOCKET_PATH`), the local alternative to
//! loopback TCP. A session on it is a session like any other; its mode and
//! group decide who may connect, `SOCKET_ALLOW_USERS` still applies; a
//! stale socket is replaced, a live one never taken over, and the file goes
//! on a clean stop. The root-only tests act as the unprivileged user of
//! `local_users`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::local_users::{her_conf_with, other_user};
use crate::support::{
    publish, read_lines, run_bin, samples, topic, Broker, Relay, Subscriber, TempDir, WAIT,
};
use rumqttc::QoS;

fn socket_in(dir: &TempDir) -> PathBuf {
    dir.path().join("relay.sock")
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[test]
fn a_unix_session_publishes_byte_exact_and_gets_status_lines_and_replies() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let dir = TempDir::new("unix-session");
    let path = socket_in(&dir);
    let relay = Relay::start(
        broker.port,
        &[("SOCKET_PATH", &text(&path)), ("ACK_MODE", "all")],
    );
    relay.expect_ready();
    let mut backend = UnixStream::connect(&path).expect("the relay's Unix socket");
    let all: Vec<String> = samples("cam-u").into_iter().map(|(_, j)| j).collect();
    backend.write_all(all.concat().as_bytes()).unwrap();
    let payloads: Vec<Vec<u8>> = sub
        .collect(12, WAIT)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    let expected: Vec<Vec<u8>> = all.iter().map(|j| j.as_bytes().to_vec()).collect();
    assert_eq!(payloads, expected, "byte-exact, in order");
    let status = read_lines(&backend, 12, WAIT);
    assert_eq!(status.len(), 12, "{status:?}\n{}", relay.log());
    assert!(
        status.iter().all(|l| l.starts_with(r#"{"status":"ok""#)),
        "{status:?}"
    );
    // The SCS claimed the reply route: the device's reply comes back here.
    publish(
        broker.port,
        "/device/ms500/cam-u/socket_reply",
        b"{\"fw\":1}",
        QoS::AtLeastOnce,
    );
    let reply = read_lines(&backend, 1, WAIT);
    assert_eq!(
        reply,
        [r#"{"reply":{"fw":1},"unit":"cam-u"}"#],
        "{}",
        relay.log()
    );
    relay.expect_log(&format!("backend unix:uid={}:pid=", my_uid()), WAIT);
    relay.expect_log(
        &format!("backend Unix socket {} (mode 0660", text(&path)),
        WAIT,
    );
    // A one-shot sender that half-closes still gets its status line (the
    // session hands its socket to the lingering thread).
    let one_shot = UnixStream::connect(&path).unwrap();
    (&one_shot)
        .write_all(br#"{"type":"IMG","unit":"cam-1s"}"#)
        .unwrap();
    one_shot.shutdown(std::net::Shutdown::Write).unwrap();
    let ok = read_lines(&one_shot, 1, WAIT);
    assert!(
        ok.len() == 1 && ok[0].contains(r#""unit":"cam-1s""#),
        "{ok:?}"
    );
    assert_eq!(sub.recv(WAIT).expect("published").topic, topic("cam-1s"));
    // TCP still serves beside it.
    relay
        .connect()
        .write_all(br#"{"type":"IMG","unit":"cam-t"}"#)
        .unwrap();
    let m = sub.recv(WAIT).expect("a TCP backend is served too");
    assert_eq!(m.topic, topic("cam-t"));
}

/// The uid this test runs as: the owner of its /proc entry.
fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap()
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not_taken_over() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let dir = TempDir::new("unix-stale");
    let path = socket_in(&dir);
    let settings = [("SOCKET_PATH", text(&path))];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut relay = Relay::start(broker.port, &settings);
    let inode = std::fs::metadata(&path).unwrap().ino();
    // A second relay (no PID_FILE to stop it first) meets the live socket.
    let mut second = Relay::spawn(broker.port, &settings);
    let code = second.wait_exit(WAIT).expect("the second relay exits");
    assert_eq!(code.code(), Some(4), "{}", second.log());
    assert!(
        second.log().contains("another process listens on it"),
        "{}",
        second.log()
    );
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "left alone");
    UnixStream::connect(&path)
        .unwrap()
        .write_all(br#"{"type":"IMG","unit":"cam-1"}"#)
        .unwrap();
    assert_eq!(
        sub.recv(WAIT).expect("the first still serves").topic,
        topic("cam-1")
    );
    // Killed: the socket file stays behind, and the next start replaces it.
    relay.crash();
    assert!(path.exists(), "a killed relay leaves its socket");
    relay.relaunch();
    relay.expect_log("removed the stale socket", WAIT);
    UnixStream::connect(&path)
        .unwrap()
        .write_all(br#"{"type":"IMG","unit":"cam-2"}"#)
        .unwrap();
    assert_eq!(sub.recv(WAIT).expect("served again").topic, topic("cam-2"));
}

#[test]
fn a_test_process_listening_on_the_path_is_not_taken_over() {
    let broker = Broker::start();
    let dir = TempDir::new("unix-live");
    let path = socket_in(&dir);
    let squatter = UnixListener::bind(&path).unwrap();
    let mut relay = Relay::spawn(broker.port, &[("SOCKET_PATH", &text(&path))]);
    let code = relay.wait_exit(WAIT).expect("the relay refuses to start");
    assert_eq!(code.code(), Some(4), "{}", relay.log());
    assert!(relay.log().contains(&text(&path)), "{}", relay.log());
    squatter.set_nonblocking(true).unwrap();
    let _client = UnixStream::connect(&path).expect("still the squatter's socket");
    assert!(squatter.accept().is_ok());
}

#[test]
fn the_socket_is_removed_on_sigterm() {
    let broker = Broker::start();
    let dir = TempDir::new("unix-term");
    let path = socket_in(&dir);
    let mut relay = Relay::start(broker.port, &[("SOCKET_PATH", &text(&path))]);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660, "SOCKET_MODE's default");
    relay.signal("TERM");
    let code = relay.wait_exit(WAIT).expect("stops");
    assert_eq!(code.code(), Some(0), "{}", relay.log());
    assert!(!path.exists(), "removed on a clean stop");
}

#[test]
fn send_talks_to_the_unix_socket_when_socket_path_is_set() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let dir = TempDir::new("unix-send");
    let path = socket_in(&dir);
    let relay = Relay::start(broker.port, &[("SOCKET_PATH", &text(&path))]);
    relay.expect_ready();
    // Port 1: nothing listens there, so only the socket can answer.
    let conf = dir.path().join("send.conf");
    std::fs::write(
        &conf,
        format!("SOCKET_PATH = {}\nSOCKET_PORT = 1\n", text(&path)),
    )
    .unwrap();
    let cmd = r#"{"type":"IMG","unit":"cam-s","id":"i1"}"#;
    let (code, out, err) = run_bin(&["send", "-c", &text(&conf), cmd], None);
    assert_eq!(code, 0, "{out}{err}\n{}", relay.log());
    assert!(out.contains(r#""status":"ok""#), "{out}");
    assert_eq!(sub.recv(WAIT).expect("published").payload, cmd.as_bytes());
    drop(relay);
    let (code, _, err) = run_bin(&["send", "-c", &text(&conf), cmd], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing listens at"), "{err}");
    assert!(err.contains("SOCKET_PATH"), "{err}");
}

#[test]
fn with_socket_host_empty_only_the_unix_socket_listens() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let dir = TempDir::new("unix-only");
    let path = socket_in(&dir);
    let relay = Relay::spawn(
        broker.port,
        &[("SOCKET_HOST", ""), ("SOCKET_PATH", &text(&path))],
    );
    relay.expect_log(&format!(" listening on {}, broker", text(&path)), WAIT);
    UnixStream::connect(&path)
        .unwrap()
        .write_all(br#"{"type":"IMG","unit":"cam-o"}"#)
        .unwrap();
    assert_eq!(sub.recv(WAIT).expect("published").topic, topic("cam-o"));
    let conf = dir.path().join("none.conf");
    std::fs::write(&conf, "SOCKET_HOST = \"\"\n").unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &text(&conf)], None);
    assert_eq!(code, 2, "no listener at all is refused: {err}");
    assert!(err.contains("SOCKET_HOST: must not be empty"), "{err}");
}

#[test]
fn check_config_lists_the_unix_socket_problems() {
    let dir = TempDir::new("unix-check");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "").unwrap();
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "SOCKET_PATH = {}\nSOCKET_GROUP = ms500-no-such-group\n",
            text(&open.join("relay.sock"))
        ),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &text(&conf)], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SOCKET_GROUP: no such group: ms500-no-such-group"),
        "{err}"
    );
    assert!(err.contains("writable by group or others"), "{err}");
    std::fs::write(
        &conf,
        format!("SOCKET_PATH = {}\nSOCKET_MODE = 0999\n", text(&file)),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &text(&conf)], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SOCKET_MODE: \"0999\" is not a mode in octal"),
        "{err}"
    );
    std::fs::write(&conf, format!("SOCKET_PATH = {}\n", text(&file))).unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &text(&conf)], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    let later = dir.path().join("run").join("relay.sock");
    std::fs::write(&conf, format!("SOCKET_PATH = {}\n", text(&later))).unwrap();
    let (code, out, err) = run_bin(&["check-config", "-c", &text(&conf)], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# SOCKET_PATH: the directory"), "{out}");
    assert!(out.contains("SOCKET_MODE = 0660"), "{out}");
}

/// Mode and group: with her group on the socket she connects; with
/// another group she cannot; `SOCKET_ALLOW_USERS` turns her away by the
/// uid the kernel gives for her connection.
#[test]
#[ignore = "needs root to create another user"]
fn socket_mode_and_group_decide_who_may_connect() {
    let other = other_user();
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let dir = TempDir::new("unix-group");
    let path = socket_in(&dir);
    let conf = her_conf_with(
        dir.path(),
        other,
        &format!("SOCKET_PATH = {}\n", text(&path)),
    );
    let her_send = |unit: &str| {
        let cmd = format!(r#"{{"type":"IMG","unit":"{unit}"}}"#);
        other.run(&["send", "-c", &conf, "-w", "3", &cmd])
    };
    let gid = other.gid.to_string();
    let mut relay = Relay::start(
        broker.port,
        &[("SOCKET_PATH", &text(&path)), ("SOCKET_GROUP", &gid)],
    );
    relay.expect_ready();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, other.gid, 0o660)
    );
    let (code, out) = her_send("cam-in");
    assert_eq!(
        code,
        0,
        "in the socket's group she connects: {out}\n{}",
        relay.log()
    );
    assert_eq!(sub.recv(WAIT).expect("published").topic, topic("cam-in"));
    relay.kill();

    let mut relay = Relay::start(
        broker.port,
        &[("SOCKET_PATH", &text(&path)), ("SOCKET_GROUP", "0")],
    );
    let (code, out) = her_send("cam-out");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("permission denied"), "{out}");
    relay.kill();

    let relay = Relay::start(
        broker.port,
        &[
            ("SOCKET_PATH", &text(&path)),
            ("SOCKET_GROUP", &gid),
            ("SOCKET_ALLOW_USERS", "root"),
        ],
    );
    let (code, out) = her_send("cam-refused");
    assert_eq!(code, 1, "{out}");
    relay.expect_log(
        &format!("local user {} is not in SOCKET_ALLOW_USERS", other.uid),
        WAIT,
    );
    sub.assert_silent(Duration::from_millis(300));
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
    std::fs::write(&conf, format!("SOCKET_PATH = {}\n", text(&path))).unwrap();
    let wfi = r#"{"type":"WFI","unit":"cam-01","wifi_enabled":1,"wifi_password":"S3cret"}"#;
    let (code, out, err) = run_bin(&["send", "-c", &text(&conf), "-w", "2", wfi], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not the relay, nothing sent"), "{err}");
    assert!(
        caught.join().unwrap().is_empty(),
        "nothing reached her socket"
    );
}
