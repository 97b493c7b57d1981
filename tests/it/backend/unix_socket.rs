//! The Unix socket (`SOCKET_PATH`, issue 22), the local alternative to
//! loopback TCP: a session on it is a session like any other; a stale
//! socket is replaced, a live one never taken over, the file goes on a
//! clean stop, and check-config names its problems. (Who may connect to
//! it: `security::peers`.)

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};

use rumqttc::QoS;

use crate::support::{
    path_text, publish, read_lines, run_bin, samples, socket_in, topic, Broker, Relay, Subscriber,
    TempDir, WAIT,
};

#[test]
fn a_unix_session_publishes_byte_exact_and_gets_status_lines_and_replies() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let dir = TempDir::new("unix-session");
    let path = socket_in(&dir);
    let relay = Relay::start(
        broker.port,
        &[("SOCKET_PATH", &path_text(&path)), ("ACK_MODE", "all")],
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
        &format!("backend Unix socket {} (mode 0660", path_text(&path)),
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
    let settings = [("SOCKET_PATH", path_text(&path))];
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
    let mut relay = Relay::spawn(broker.port, &[("SOCKET_PATH", &path_text(&path))]);
    let code = relay.wait_exit(WAIT).expect("the relay refuses to start");
    assert_eq!(code.code(), Some(4), "{}", relay.log());
    assert!(relay.log().contains(&path_text(&path)), "{}", relay.log());
    squatter.set_nonblocking(true).unwrap();
    let _client = UnixStream::connect(&path).expect("still the squatter's socket");
    assert!(squatter.accept().is_ok());
}

#[test]
fn the_socket_is_removed_on_sigterm() {
    let broker = Broker::start();
    let dir = TempDir::new("unix-term");
    let path = socket_in(&dir);
    let mut relay = Relay::start(broker.port, &[("SOCKET_PATH", &path_text(&path))]);
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
    let relay = Relay::start(broker.port, &[("SOCKET_PATH", &path_text(&path))]);
    relay.expect_ready();
    // Port 1: nothing listens there, so only the socket can answer.
    let conf = dir.path().join("send.conf");
    std::fs::write(
        &conf,
        format!("SOCKET_PATH = {}\nSOCKET_PORT = 1\n", path_text(&path)),
    )
    .unwrap();
    let cmd = r#"{"type":"IMG","unit":"cam-s","id":"i1"}"#;
    let (code, out, err) = run_bin(&["send", "-c", &path_text(&conf), cmd], None);
    assert_eq!(code, 0, "{out}{err}\n{}", relay.log());
    assert!(out.contains(r#""status":"ok""#), "{out}");
    assert_eq!(sub.recv(WAIT).expect("published").payload, cmd.as_bytes());
    drop(relay);
    let (code, _, err) = run_bin(&["send", "-c", &path_text(&conf), cmd], None);
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
        &[("SOCKET_HOST", ""), ("SOCKET_PATH", &path_text(&path))],
    );
    relay.expect_log(&format!(" listening on {}, broker", path_text(&path)), WAIT);
    UnixStream::connect(&path)
        .unwrap()
        .write_all(br#"{"type":"IMG","unit":"cam-o"}"#)
        .unwrap();
    assert_eq!(sub.recv(WAIT).expect("published").topic, topic("cam-o"));
    let conf = dir.path().join("none.conf");
    std::fs::write(&conf, "SOCKET_HOST = \"\"\n").unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &path_text(&conf)], None);
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
            path_text(&open.join("relay.sock"))
        ),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &path_text(&conf)], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SOCKET_GROUP: no such group: ms500-no-such-group"),
        "{err}"
    );
    assert!(err.contains("writable by group or others"), "{err}");
    std::fs::write(
        &conf,
        format!("SOCKET_PATH = {}\nSOCKET_MODE = 0999\n", path_text(&file)),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &path_text(&conf)], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SOCKET_MODE: \"0999\" is not a mode in octal"),
        "{err}"
    );
    std::fs::write(&conf, format!("SOCKET_PATH = {}\n", path_text(&file))).unwrap();
    let (code, _, err) = run_bin(&["check-config", "-c", &path_text(&conf)], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    let later = dir.path().join("run").join("relay.sock");
    std::fs::write(&conf, format!("SOCKET_PATH = {}\n", path_text(&later))).unwrap();
    let (code, out, err) = run_bin(&["check-config", "-c", &path_text(&conf)], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# SOCKET_PATH: the directory"), "{out}");
    assert!(out.contains("SOCKET_MODE = 0660"), "{out}");
}
