//! The Unix socket (`SOCKET_PATH`, issue 22), the local alternative to
//! loopback TCP: a session on it is a session like any other; a stale
//! socket is replaced, a live one never taken over, the file goes on a
//! clean stop, and check-config names its problems. (Who may connect to
//! it: `security::peers`.)

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::support::tools::{conf_in, refused_by, tool};
use crate::support::{
    broker_and_relay, bytes_of, device_reply, path_text, read_lines, relay_with_subscriber,
    sample_commands, socket_in, topic, Broker, Relay, Subscriber, TempDir, COMMANDS, WAIT,
};

/// The relay's Unix socket in its own directory ([`Relay::path`]).
const SOCKET: (&str, &str) = ("SOCKET_PATH", "{dir}/relay.sock");

/// An IMG for `unit` on a new connection to the Unix socket at `path`.
fn img_through(path: &Path, unit: &str) {
    let cmd = format!(r#"{{"type":"IMG","unit":"{unit}"}}"#);
    let mut backend = UnixStream::connect(path).expect("the relay's Unix socket");
    backend.write_all(cmd.as_bytes()).unwrap();
}

#[test]
fn a_unix_session_publishes_byte_exact_and_gets_status_lines_and_replies() {
    let (broker, relay, sub) = relay_with_subscriber(COMMANDS, &[SOCKET, ("ACK_MODE", "all")]);
    let path = relay.path("relay.sock");
    relay.expect_ready();
    let mut backend = UnixStream::connect(&path).expect("the relay's Unix socket");
    let all = sample_commands("cam-u");
    backend.write_all(all.concat().as_bytes()).unwrap();
    let payloads = sub.payloads(12, WAIT);
    assert_eq!(payloads, bytes_of(&all), "byte-exact, in order");
    let status = read_lines(&backend, 12, WAIT);
    assert_eq!(status.len(), 12, "{status:?}\n{}", relay.log());
    assert!(
        status.iter().all(|l| l.starts_with(r#"{"status":"ok""#)),
        "{status:?}"
    );
    // The SCS claimed the reply route: the device's reply comes back here.
    device_reply(broker.port, "cam-u", b"{\"fw\":1}");
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
    let sub = Subscriber::new(broker.port, COMMANDS);
    let dir = TempDir::new("unix-stale");
    let path = socket_in(&dir);
    let socket = path_text(&path);
    let settings = [("SOCKET_PATH", socket.as_str())];
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
    img_through(&path, "cam-1");
    assert_eq!(
        sub.recv(WAIT).expect("the first still serves").topic,
        topic("cam-1")
    );
    // Killed: the socket file stays behind, and the next start replaces it.
    relay.crash();
    assert!(path.exists(), "a killed relay leaves its socket");
    relay.relaunch();
    relay.expect_log("removed the stale socket", WAIT);
    img_through(&path, "cam-2");
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
    let (_broker, mut relay) = broker_and_relay(&[SOCKET]);
    let path = relay.path("relay.sock");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660, "SOCKET_MODE's default");
    relay.signal("TERM");
    let code = relay.wait_exit(WAIT).expect("stops");
    assert_eq!(code.code(), Some(0), "{}", relay.log());
    assert!(!path.exists(), "removed on a clean stop");
}

#[test]
fn send_talks_to_the_unix_socket_when_socket_path_is_set() {
    let (_broker, relay, sub) = relay_with_subscriber(COMMANDS, &[SOCKET]);
    relay.expect_ready();
    // Port 1: nothing listens there, so only the socket can answer.
    let dir = TempDir::new("unix-send");
    let socket = path_text(&relay.path("relay.sock"));
    let conf = conf_in(
        dir.path(),
        &format!("SOCKET_PATH = {socket}\nSOCKET_PORT = 1\n"),
    );
    let cmd = r#"{"type":"IMG","unit":"cam-s","id":"i1"}"#;
    let (code, out, err) = tool(&["send", cmd], &conf);
    assert_eq!(code, 0, "{out}{err}\n{}", relay.log());
    assert!(out.contains(r#""status":"ok""#), "{out}");
    assert_eq!(sub.recv(WAIT).expect("published").payload, cmd.as_bytes());
    drop(relay);
    let (code, _, err) = tool(&["send", cmd], &conf);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing listens at"), "{err}");
    assert!(err.contains("SOCKET_PATH"), "{err}");
}

#[test]
fn with_socket_host_empty_only_the_unix_socket_listens() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, COMMANDS);
    let relay = Relay::spawn(broker.port, &[("SOCKET_HOST", ""), SOCKET]);
    let path = relay.path("relay.sock");
    relay.expect_log(&format!(" listening on {}, broker", path_text(&path)), WAIT);
    img_through(&path, "cam-o");
    assert_eq!(sub.recv(WAIT).expect("published").topic, topic("cam-o"));
    // No listener at all is refused.
    let dir = TempDir::new("unix-only");
    let conf = conf_in(dir.path(), "SOCKET_HOST = \"\"\n");
    refused_by(
        &["check-config"],
        &conf,
        &["SOCKET_HOST: must not be empty"],
    );
}

#[test]
fn check_config_lists_the_unix_socket_problems() {
    let dir = TempDir::new("unix-check");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "").unwrap();
    let socket_at = |path: &Path, more: &str| {
        let text = format!("SOCKET_PATH = {}\n{more}", path_text(path));
        conf_in(dir.path(), &text)
    };
    let conf = socket_at(
        &open.join("relay.sock"),
        "SOCKET_GROUP = ms500-no-such-group\n",
    );
    let needles = [
        "SOCKET_GROUP: no such group: ms500-no-such-group",
        "writable by group or others",
    ];
    refused_by(&["check-config"], &conf, &needles);
    let conf = socket_at(&file, "SOCKET_MODE = 0999\n");
    let needle = "SOCKET_MODE: \"0999\" is not a mode in octal";
    refused_by(&["check-config"], &conf, &[needle]);
    let conf = socket_at(&file, "");
    refused_by(&["check-config"], &conf, &["exists and is not a socket"]);
    let conf = socket_at(&dir.path().join("run").join("relay.sock"), "");
    let (code, out, err) = tool(&["check-config"], &conf);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# SOCKET_PATH: the directory"), "{out}");
    assert!(out.contains("SOCKET_MODE = 0660"), "{out}");
}

/// A TCP and a Unix socket connection each claim a unit's replies; when the
/// TCP one closes, the Unix one keeps its route (the two listeners once
/// numbered their connections each from 1, and the routes of "connection 1"
/// went with whichever closed first).
#[test]
fn closing_a_tcp_connection_leaves_a_unix_connections_routes_alone() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[SOCKET, ("ACK_MODE", "all")]);
    relay.expect_ready();
    let path = relay.path("relay.sock");
    let mut unix = UnixStream::connect(&path).expect("the relay's Unix socket");
    unix.write_all(br#"{"type":"SCS","unit":"cam-unix"}"#)
        .unwrap();
    assert_eq!(read_lines(&unix, 1, WAIT).len(), 1);
    let mut tcp = relay.connect();
    tcp.write_all(br#"{"type":"SCS","unit":"cam-tcp"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-tcp", WAIT);
    drop(tcp);
    relay.expect_log("connection lost", WAIT);
    device_reply(broker.port, "cam-unix", b"{\"fw\":2}");
    assert_eq!(
        read_lines(&unix, 1, WAIT),
        [r#"{"reply":{"fw":2},"unit":"cam-unix"}"#],
        "{}",
        relay.log()
    );
}
