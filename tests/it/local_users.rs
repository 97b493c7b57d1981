//! Issue 22: other local accounts on the gateway. These tests run as root
//! (as CI does) and create an unprivileged user of their own; what that user
//! does runs either as her own process (`setpriv`) or, for a socket or a
//! lock, from a test thread whose file-system ids are hers (`setfsuid`, per
//! thread on Linux): the kernel then records her as the socket's owner.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::local_users::{her_conf_with, other_user, Other};
use crate::support::{
    publish, read_lines, relay_words, run_bin, Broker, Relay, Subscriber, TempDir, WAIT,
};
use rumqttc::QoS;

/// Whether the relay closes `stream` (end of stream or a reset) within
/// `limit`; a read interrupted by a signal (the tests' children come and
/// go) is retried.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
                return true;
            }
        }
    }
}

/// A relay.conf she may read, pointing `send` at `port`.
fn her_conf(dir: &Path, other: Other, port: u16) -> String {
    her_conf_with(dir, other, &format!("SOCKET_PORT = {port}\n"))
}

/// Findings 1: with `SOCKET_ALLOW_USERS = root`, her connections are closed
/// before they count: her FRS is never published, her idle sockets hold no
/// place, and root's backend is served.
#[test]
#[ignore = "needs root to create another user"]
fn a_local_user_outside_socket_allow_users_is_no_backend_and_takes_no_place() {
    let other = other_user();
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(
        broker.port,
        &[("SOCKET_ALLOW_USERS", "root"), ("MAX_CONNECTIONS", "2")],
    );
    relay.expect_subscribed();
    let port = relay.port();
    let mut hers: Vec<TcpStream> = (0..16)
        .map(|_| other.act(|| TcpStream::connect(("127.0.0.1", port)).unwrap()))
        .collect();
    let _ = hers[0].write_all(br#"{"type":"FRS","unit":"cam-01","reset_level":1}"#);
    for s in &mut hers {
        assert!(closed_within(s, WAIT), "her connection is closed");
    }
    relay.expect_log(
        &format!("local user {} is not in SOCKET_ALLOW_USERS", other.uid),
        WAIT,
    );
    // Her own process, through `send`: refused too.
    let dir = TempDir::new("her-send");
    let conf = her_conf(dir.path(), other, port);
    let (code, out) = other.run(&[
        "send",
        "-c",
        &conf,
        "-w",
        "2",
        r#"{"type":"IMG","unit":"cam-01"}"#,
    ]);
    assert_eq!(code, 1, "{out}");
    // Root's backend: served, its reply routed to it alone.
    let mut root = relay.connect();
    root.write_all(br#"{"type":"SCS","unit":"cam-01"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-01", WAIT);
    let published = sub.collect(1, WAIT);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].payload, br#"{"type":"SCS","unit":"cam-01"}"#);
    publish(
        broker.port,
        "/device/ms500/cam-01/socket_reply",
        b"{\"fw\":1}",
        QoS::AtLeastOnce,
    );
    assert_eq!(read_lines(&root, 1, WAIT), ["{\"fw\":1}"]);
    sub.assert_silent(Duration::from_millis(300));
}

/// Finding 1: with the default (empty) `SOCKET_ALLOW_USERS`, the start
/// and check-config say that every local user is a backend.
#[test]
fn the_start_and_check_config_say_when_every_local_user_is_a_backend() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[]);
    relay.expect_log("every local user can command the cameras", WAIT);
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, _, err) = run_bin(&["check-config", "-c", &conf], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("every local user").count(), 1, "{err}");
    drop(relay);
    let relay = Relay::start(broker.port, &[("SOCKET_ALLOW_USERS", "root, 0")]);
    relay.expect_log(" listening on ", WAIT);
    assert!(!relay.log().contains("every local user"), "{}", relay.log());
    let (code, _, err) = run_bin(&["check-config", "-c", &relay.conf.to_string_lossy()], None);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("every local user"), "{err}");
}

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

/// Finding 1: idle sockets that never send a value cannot hold the places
/// for 60 s more; one that sent a value may stay idle.
#[test]
fn connections_that_never_send_a_value_are_closed_after_60_s() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let relay = Relay::start(broker.port, &[("MAX_CONNECTIONS", "2")]);
    relay.expect_subscribed();
    let mut talker = relay.connect();
    talker
        .write_all(br#"{"type":"IMG","unit":"cam-01"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some());
    let mut idle = relay.connect();
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(90)),
        "closed after {:?}",
        started.elapsed()
    );
    // Time itself is what is tested here.
    let early = started.elapsed() < Duration::from_secs(55);
    let mut relay = relay;
    assert!(
        !early,
        "{:?}; exit {:?}; log:\n{}",
        started.elapsed(),
        relay.wait_exit(Duration::from_secs(1)),
        relay.log()
    );
    relay.expect_log("sent no complete value within 60 s", WAIT);
    let mut next = relay.connect();
    next.write_all(br#"{"type":"IMG","unit":"cam-02"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some(), "its place was free again");
    talker
        .write_all(br#"{"type":"IMG","unit":"cam-03"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some(), "the talker stayed");
}

/// Finding 1: a connection claiming more units than MAX_DEVICES evicts its
/// own oldest routes, never another connection's.
#[test]
fn a_flood_of_scs_evicts_only_its_own_routes() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[("MAX_DEVICES", "4")]);
    relay.expect_subscribed();
    let mut root = relay.connect();
    root.write_all(br#"{"type":"SCS","unit":"cam-01"}"#)
        .unwrap();
    relay.expect_log("accepted SCS for unit cam-01", WAIT);
    let mut flood = relay.connect();
    for i in 0..50 {
        flood
            .write_all(format!(r#"{{"type":"SCS","unit":"made-up-{i}"}}"#).as_bytes())
            .unwrap();
    }
    relay.expect_log("accepted SCS for unit made-up-49", WAIT);
    publish(
        broker.port,
        "/device/ms500/cam-01/socket_reply",
        b"{\"fw\":1}",
        QoS::AtLeastOnce,
    );
    assert_eq!(
        read_lines(&root, 1, WAIT),
        ["{\"fw\":1}"],
        "root's route held"
    );
}

/// Whether `text` shows a character that reorders, hides or controls
/// what a reader sees (Cf, U+2028/2029, C0 but newline and tab, C1).
fn shows_hidden(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c as u32, 0x200B..=0x200F | 0x202A..=0x202E | 0x2066..=0x2069 | 0x2028 | 0x2029 | 0xFEFF)
    })
}

/// Finding 12: bidi, zero-width and C1 characters from a device never
/// reach the log, STATUS_FILE, `status` or `send` output raw.
#[test]
fn bidi_and_c1_characters_from_devices_are_escaped_everywhere_shown() {
    let broker = Broker::start();
    let dir = TempDir::new("bidi");
    let status = dir.path().join("status.json");
    let status_arg = status.to_string_lossy().into_owned();
    let relay = Relay::start(
        broker.port,
        &[
            ("LOG_LEVEL", "debug"), // heartbeat lines are debug
            ("STATUS_FILE", status_arg.as_str()),
            ("STATUS_INTERVAL", "1"),
        ],
    );
    relay.expect_subscribed();
    let id = "cam\u{202e}10\u{2066}x\u{200b}";
    let heartbeat = "{\"ip\":\"10.0.0.7\u{2028}\",\"network\":\"wi\u{9b}fi\u{202e}\"}";
    publish(
        broker.port,
        &format!("/device/ms500/{id}/online"),
        heartbeat.as_bytes(),
        QoS::AtLeastOnce,
    );
    relay.expect_log("heartbeat cam\\u{202e}10", WAIT);
    let conf = relay.conf.to_string_lossy().into_owned();
    assert!(crate::support::wait_until(WAIT, || {
        std::fs::read_to_string(&status).is_ok_and(|t| t.contains("cam\\\\u{202e}10"))
    }));
    let file = std::fs::read_to_string(&status).unwrap();
    assert_eq!(shows_hidden(&file), None, "STATUS_FILE:\n{file}");
    let (code, out, err) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cam\\u{202e}10"), "{out}");
    assert_eq!(shows_hidden(&out), None, "status:\n{out}");

    // A reply with a raw CSI (U+009B) and a bidi override, through `send`.
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let port = broker.port;
    let device = std::thread::spawn(move || {
        sub.recv(WAIT).expect("the SCS reaches the camera");
        publish(
            port,
            "/device/ms500/cam-01/socket_reply",
            "{\"fw\":\"1\u{9b}2J\u{202e}\"}".as_bytes(),
            QoS::AtLeastOnce,
        );
    });
    let (code, out, err) = run_bin(
        &[
            "send",
            "-c",
            &conf,
            "-w",
            "10",
            r#"{"type":"SCS","unit":"cam-01"}"#,
        ],
        None,
    );
    device.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\\u009b2J\\u202e"), "{out}");
    assert_eq!(shows_hidden(&out), None, "send:\n{out}");
    relay.expect_log("reply from unit cam-01", WAIT);
    let log = relay.log();
    assert_eq!(shows_hidden(&log), None, "log:\n{log}");
}

fn chown_to(path: &Path, other: Other) {
    std::os::unix::fs::lchown(path, Some(other.uid), Some(other.gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Finding 5: a CA (or client certificate) others can write, or that is
/// hers, is refused like the key: she would choose whom the relay trusts.
#[test]
#[ignore = "needs root to create another user"]
fn tls_files_others_can_write_or_own_are_refused() {
    let other = other_user();
    let dir = TempDir::new("tls-trust");
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    for file in [&ca, &cert, &key] {
        std::fs::write(file, "not checked before its trust\n").unwrap();
        chmod(file, 0o600);
    }
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "SOCKET_PORT = 0\nMQTT_PORT = 1\nSOCKET_ALLOW_USERS = root\nMQTT_TLS = true\n\
             MQTT_CA_FILE = {}\nMQTT_CLIENT_CERT = {}\nMQTT_CLIENT_KEY = {}\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    chmod(&conf, 0o600);
    let c = conf.to_string_lossy().into_owned();
    for (file, key_name) in [(&ca, "MQTT_CA_FILE"), (&cert, "MQTT_CLIENT_CERT")] {
        chmod(file, 0o666);
        for args in [vec!["check-config", "-c", &c], vec!["-c", &c]] {
            let (code, out, err) = run_bin(&args, None);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(err.contains(key_name) && err.contains("0666"), "{err}");
        }
        chmod(file, 0o644);
        chown_to(file, other);
        let (code, out, err) = run_bin(&["check-config", "-c", &c], None);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains(key_name) && err.contains("belongs to uid"),
            "{err}"
        );
        std::os::unix::fs::lchown(file, Some(0), Some(0)).unwrap();
    }
}

/// Finding 6: her relay.conf in the working directory is not used by root.
#[test]
#[ignore = "needs root to create another user"]
fn a_relay_conf_of_another_user_is_refused() {
    let other = other_user();
    let dir = TempDir::new("her-conf");
    let conf = dir.path().join("relay.conf");
    std::fs::write(&conf, "SOCKET_PORT = 0\nLOG_FILE = /tmp/her-choice.log\n").unwrap();
    chmod(&conf, 0o644);
    chown_to(&conf, other);
    let words = relay_words();
    let out = Command::new(&words[0])
        .args(&words[1..])
        .arg("check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("./relay.conf") && err.contains("belongs to uid"),
        "{err}"
    );
}

/// Finding 7: with STATUS_FILE in a sticky directory and no LOG_FILE, the
/// watchdog neither writes into her `ms500-relay.log` there nor blocks on a
/// FIFO of that name.
#[test]
#[ignore = "needs root to create another user"]
fn the_watchdog_uses_no_log_file_another_user_planted() {
    let other = other_user();
    let dir = TempDir::new("sticky-log");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "SOCKET_PORT = 0\nMQTT_PORT = 1\nSOCKET_ALLOW_USERS = root\nPID_FILE = {}\nSTATUS_FILE = {}\n",
            run.join("relay.pid").display(),
            shared.join("status.json").display()
        ),
    )
    .unwrap();
    chmod(&conf, 0o600);
    let c = conf.to_string_lossy().into_owned();
    let log = shared.join("ms500-relay.log");
    other.act(|| std::fs::write(&log, "").unwrap());
    let (code, out, err) = run_bin(&["watchdog", "-c", &c], None);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("belongs to uid"), "{err}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b"",
        "nothing written into her file"
    );
    std::fs::remove_file(&log).unwrap();
    let made = Command::new("mkfifo").arg(&log).status().unwrap();
    assert!(made.success());
    chown_to(&log, other);
    let started = std::time::Instant::now();
    let (code, out, err) = run_bin(&["watchdog", "-c", &c], None);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "blocked on the FIFO"
    );
    assert!(err.contains("ms500-relay.log"), "says which file: {err}");
}

/// Finding 8: a directory on the way to the relay's files that belongs to
/// her (she could swap what is below it for a symlink) is refused.
#[test]
#[ignore = "needs root to create another user"]
fn a_directory_on_the_way_owned_by_another_user_is_refused() {
    let other = other_user();
    let dir = TempDir::new("her-ancestor");
    let hers = dir.path().join("hers");
    let checked = hers.join("run");
    std::fs::create_dir_all(&checked).unwrap();
    chown_to(&hers, other);
    let conf = dir.path().join("relay.conf");
    std::fs::write(
        &conf,
        format!(
            "SOCKET_PORT = 0\nMQTT_PORT = 1\nSOCKET_ALLOW_USERS = root\nPID_FILE = {}\n",
            checked.join("relay.pid").display()
        ),
    )
    .unwrap();
    chmod(&conf, 0o600);
    let c = conf.to_string_lossy().into_owned();
    for args in [vec!["check-config", "-c", &c], vec!["-c", &c]] {
        let (code, out, err) = run_bin(&args, None);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("on the way to it belongs to uid"), "{err}");
    }
    assert!(!checked.join("relay.pid").exists());
}

/// All of LOG_FILE and its rotated files, oldest first.
fn whole_log(log: &Path) -> String {
    let mut text = String::new();
    for n in [".2", ".1", ""] {
        let mut path = log.as_os_str().to_owned();
        path.push(n);
        text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    text
}

/// Finding 9: 25,000 heartbeats in a few seconds do not rotate the
/// history away: per-heartbeat lines are debug, state changes are
/// still logged.
#[test]
fn a_heartbeat_flood_keeps_the_log_history() {
    let broker = Broker::start();
    let dir = TempDir::new("hb-flood");
    let log = dir.path().join("relay.log");
    let log_arg = log.to_string_lossy().into_owned();
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    let _relay = Relay::spawn(
        broker.port,
        &[
            ("LOG_FILE", log_arg.as_str()),
            ("LOG_MAX_BYTES", "65536"),
            ("LOG_KEEP", "2"),
        ],
    );
    assert!(crate::support::wait_until(WAIT, || whole_log(&log).contains("device link subscribed")));
    let port = crate::support::wait_listening_port(_relay.pid());
    let mut backend = TcpStream::connect(("127.0.0.1", port)).unwrap();
    backend
        .write_all(br#"{"type":"FRS","unit":"cam-01","reset_level":1}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some());
    let mut opts = rumqttc::MqttOptions::new("hb-flooder", "127.0.0.1", broker.port);
    opts.set_inflight(100);
    let (device, conn) = rumqttc::Client::new(opts, 1024);
    crate::support::pump(conn);
    let beat = br#"{"ip":"10.0.0.7","network":"wifi","cpu_temp":47.5,"video_fps":15.0}"#;
    for _ in 0..25_000 {
        device
            .publish(
                "/device/ms500/cam-hb/online",
                QoS::AtMostOnce,
                false,
                beat.to_vec(),
            )
            .unwrap();
    }
    // Same client, same QoS: seen after the flood. A new device is a state change.
    device
        .publish(
            "/device/ms500/flood-end/online",
            QoS::AtMostOnce,
            false,
            beat.to_vec(),
        )
        .unwrap();
    assert!(
        crate::support::wait_until(Duration::from_secs(60), || whole_log(&log)
            .contains("device flood-end online")),
        "the state change is logged"
    );
    let text = whole_log(&log);
    assert!(
        text.contains("accepted FRS for unit cam-01"),
        "history kept"
    );
    assert!(text.contains("device cam-hb online"), "{}", text.len());
    // Single heartbeats are debug lines (issue 25): none at info.
    let beats = text.matches("heartbeat cam-hb:").count();
    assert_eq!(beats, 0, "{beats} heartbeat lines");
}

/// Finding 10: directories planted at LOG_FILE.1 and .2: the log goes on
/// in LOG_FILE, truncated, and says so once.
#[test]
fn a_rotation_that_cannot_rename_keeps_logging() {
    let broker = Broker::start();
    let dir = TempDir::new("rotate-blocked");
    let log = dir.path().join("relay.log");
    for n in [1, 2] {
        std::fs::create_dir_all(dir.path().join(format!("relay.log.{n}/kept"))).unwrap();
    }
    let log_arg = log.to_string_lossy().into_owned();
    let relay = Relay::spawn(
        broker.port,
        &[
            ("LOG_FILE", log_arg.as_str()),
            ("LOG_MAX_BYTES", "65536"),
            ("LOG_KEEP", "2"),
        ],
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(crate::support::wait_until(WAIT, || read().contains("device link subscribed")));
    let port = crate::support::wait_listening_port(relay.pid());
    let mut backend = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // One "accepted" line per command: 1200 of them fill 64 KiB twice over.
    let sub = Subscriber::new(broker.port, "/service/ms500/#");
    for i in 0..1200 {
        backend
            .write_all(
                format!(r#"{{"type":"IMG","unit":"cam-{i:04}-{}"}}"#, "u".repeat(60)).as_bytes(),
            )
            .unwrap();
    }
    assert_eq!(sub.collect(1200, Duration::from_secs(60)).len(), 1200);
    backend
        .write_all(br#"{"type":"IMG","unit":"the-last-one"}"#)
        .unwrap();
    assert!(
        crate::support::wait_until(WAIT, || read()
            .contains("accepted IMG for unit the-last-one")),
        "lines after the failed rotation are written"
    );
    assert!(dir.path().join("relay.log.1/kept").is_dir());
    relay.expect_log("cannot rotate the log", WAIT);
    assert_eq!(
        relay.log().matches("cannot rotate the log").count(),
        1,
        "said once"
    );
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 65536, "{size}");
    let _ = relay;
}
