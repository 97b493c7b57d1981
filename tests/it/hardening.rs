//! Safe as a root daemon among other local users (PROTOCOL.md §5, "Safety"):
//! no file written through a symlink or into another user's hands, no
//! planted spool replayed, secrets' files checked like ssh checks its own,
//! no core dumps. These tests run as root (as CI does) and play the other
//! user with `chown 65534` (nobody).

use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support;
use crate::support::{
    accepted_count, require, run_bin, running_as_root, wait_until, Broker, Launch, Relay,
    Subscriber, TempDir, PUBLISH_LINK_UP, WAIT,
};

const NOBODY: u32 = 65534;

/// Fails a test that needs root (chown to another user) without it; such
/// tests are also `#[ignore]`d, and CI runs them as root.
fn needs_root() {
    require(
        running_as_root(),
        "needs root to chown files to another user",
    );
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The mode as `stat` prints it (`%a`, octal without leading zeros).
fn stat_mode(path: &Path) -> String {
    let out = Command::new("stat")
        .args(["-c", "%a"])
        .arg(path)
        .output()
        .expect("stat");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A relay.conf in `dir` with `lines`; the relay exits before it needs a broker.
fn conf(dir: &Path, lines: &str) -> PathBuf {
    let path = dir.join("relay.conf");
    // SOCKET_ALLOW_USERS set: no warning about local users among those counted.
    std::fs::write(
        &path,
        format!("SOCKET_PORT = 0\nMQTT_PORT = 1\nSOCKET_ALLOW_USERS = root\n{lines}"),
    )
    .unwrap();
    chmod(&path, 0o600);
    path
}

fn run_with(conf: &Path) -> (i32, String) {
    let (code, _, err) = run_bin(&["-c", conf.to_str().unwrap()], None);
    (code, err)
}

#[test]
fn a_symlink_planted_where_a_file_goes_stops_the_start_and_its_target_is_untouched() {
    let dir = TempDir::new("plant");
    let victim = dir.path().join("victim");
    for (key, name) in [
        ("PID_FILE", "relay.pid"),
        ("STATUS_FILE", "status.json"),
        ("METRICS_FILE", "relay.prom"),
        ("LOG_FILE", "relay.log"),
    ] {
        std::fs::write(&victim, "precious").unwrap();
        let planted = dir.path().join(name);
        let _ = std::fs::remove_file(&planted);
        symlink(&victim, &planted).unwrap();
        let conf = conf(dir.path(), &format!("{key} = {}\n", planted.display()));
        let (code, err) = run_with(&conf);
        assert_eq!(code, 2, "{key}: {err}");
        assert!(
            err.contains(key)
                && err.contains(&planted.display().to_string())
                && err.contains("symlink"),
            "{key}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious",
            "{key}"
        );
        std::fs::remove_file(&planted).unwrap();
    }
}

#[test]
#[ignore = "needs root to chown files to another user; scripts/test.sh runs it with --ignored"]
fn a_file_of_another_user_where_a_file_goes_stops_the_start() {
    needs_root();
    let dir = TempDir::new("foreign");
    let status = dir.path().join("status.json");
    std::fs::write(&status, "{}").unwrap();
    chown(&status, NOBODY);
    let conf = conf(dir.path(), &format!("STATUS_FILE = {}\n", status.display()));
    let (code, err) = run_with(&conf);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("STATUS_FILE") && err.contains("uid 65534"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&status).unwrap(), "{}");
}

#[test]
fn a_directory_others_can_write_stops_the_start_unless_it_is_sticky() {
    let dir = TempDir::new("open-dir");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let conf = conf(
        dir.path(),
        &format!("STATUS_FILE = {}\n", shared.join("status.json").display()),
    );
    let (code, err) = run_with(&conf);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&shared.display().to_string())
            && err.contains("0777")
            && err.contains("sticky"),
        "{err}"
    );
    let (code, out, err) = run_bin(&["check-config", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 2, "check-config refuses it too: {out}{err}");

    // Sticky, like /tmp: others cannot replace what the relay owns there.
    chmod(&shared, 0o1777);
    let (code, out, err) = run_bin(&["check-config", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn files_get_their_modes_whatever_the_umask_and_fixed_temporary_names_are_not_used() {
    let broker = Broker::start();
    let dir = TempDir::new("modes");
    let path = |name: &str| dir.path().join(name);
    // Symlinks at the temporary names the first version used.
    let victim = path("victim");
    std::fs::write(&victim, "precious").unwrap();
    for name in [
        "status.json.tmp",
        "relay.prom.tmp",
        "spool.tmp",
        "spool.bin.tmp",
    ] {
        symlink(&victim, path(name)).unwrap();
    }
    let files: Vec<(&str, String)> = [
        ("PID_FILE", "relay.pid"),
        ("STATUS_FILE", "status.json"),
        ("METRICS_FILE", "relay.prom"),
        ("LOG_FILE", "relay.log"),
        ("SPOOL_FILE", "spool.bin"),
    ]
    .into_iter()
    .map(|(k, n)| (k, path(n).to_string_lossy().into_owned()))
    .collect();
    let settings: Vec<(&str, &str)> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut relay = Relay::spawn_with(
        broker.port,
        &settings,
        Launch {
            umask: Some(0o000),
            ..Launch::default()
        },
    );
    let log = path("relay.log");
    assert!(wait_until(WAIT, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(PUBLISH_LINK_UP)));
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let port = support::wait_listening_port(relay.pid());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(br#"{"type":"WFI","unit":"m1","wifi_enabled":true,"wifi_password":"x"}"#)
        .unwrap();
    assert!(sub.recv(WAIT).is_some());
    assert!(wait_until(WAIT, || path("relay.prom").exists()
        && path("status.json").exists()));
    for (name, mode) in [
        ("status.json", "644"),
        ("relay.prom", "644"),
        ("relay.log", "640"),
        ("relay.pid", "644"),
        ("spool.bin", "600"),
    ] {
        assert_eq!(stat_mode(&path(name)), mode, "{name}");
    }
    relay.signal("TERM");
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Runs a relay with the broker away, accepts `n` commands into its spool,
/// and kills it: the spool holds them for the next start.
fn spool_with_commands(dir: &Path, n: usize) -> PathBuf {
    let spool = dir.join("spool.bin");
    let spool_s = spool.to_string_lossy().into_owned();
    let away = Broker::unstarted("");
    let mut relay = Relay::start(away.port, &[("SPOOL_FILE", spool_s.as_str())]);
    let mut s = relay.connect();
    for i in 0..n {
        s.write_all(
            format!(r#"{{"type":"FRS","unit":"planted","id":{i},"reset_level":1}}"#).as_bytes(),
        )
        .unwrap();
    }
    assert!(wait_until(WAIT, || accepted_count(&relay) == n));
    relay.crash();
    spool
}

fn untrusted_copies(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("spool.bin.untrusted-"))
        .collect()
}

/// A spool another user could have written is moved aside, not replayed;
/// the relay starts with a fresh one of its own.
fn planted_spool_is_not_replayed(tag: &str, plant: impl Fn(&Path)) {
    let dir = TempDir::new(tag);
    let spool = spool_with_commands(dir.path(), 3);
    plant(&spool);
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let spool_s = spool.to_string_lossy().into_owned();
    let relay = Relay::start(broker.port, &[("SPOOL_FILE", spool_s.as_str())]);
    relay.expect_connected();
    sub.assert_silent(Duration::from_secs(2));
    let log = relay.log();
    assert!(
        log.contains("ERROR") && log.contains("not replayed") && log.contains("untrusted"),
        "{log}"
    );
    assert_eq!(untrusted_copies(dir.path()).len(), 1, "{log}");
    let meta = std::fs::symlink_metadata(&spool).unwrap();
    assert!(meta.is_file(), "a fresh spool of its own");
    assert_eq!(meta.uid(), std::fs::metadata(dir.path()).unwrap().uid());
    assert_eq!(stat_mode(&spool), "600");
}

#[test]
#[ignore = "needs root to chown files to another user; scripts/test.sh runs it with --ignored"]
fn a_spool_owned_by_another_user_is_moved_aside_not_replayed() {
    needs_root();
    planted_spool_is_not_replayed("spool-foreign", |spool| chown(spool, NOBODY));
}

#[test]
fn a_spool_writable_by_others_is_moved_aside_not_replayed() {
    planted_spool_is_not_replayed("spool-open", |spool| chmod(spool, 0o666));
}

#[test]
fn a_spool_symlink_is_moved_aside_and_its_target_left_alone() {
    let victim = TempDir::new("spool-victim");
    let target = victim.path().join("old-spool");
    planted_spool_is_not_replayed("spool-link", |spool| {
        std::fs::rename(spool, &target).unwrap();
        symlink(&target, spool).unwrap();
    });
    assert!(
        std::fs::read(&target)
            .unwrap()
            .starts_with(b"MS500SPOOL2\n"),
        "the symlink's target is not written"
    );
}

#[test]
fn a_configuration_or_key_others_can_write_is_refused_and_secrets_readable_by_others_warned() {
    let dir = TempDir::new("conf-modes");
    let conf = conf(dir.path(), "MQTT_PASSWORD = hunter2\n");
    let c = conf.to_str().unwrap();

    chmod(&conf, 0o666);
    for args in [vec!["check-config", "-c", c], vec!["-c", c]] {
        let (code, out, err) = run_bin(&args, None);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(c) && err.contains("0666"), "{args:?}: {err}");
    }

    chmod(&conf, 0o644);
    let (code, out, err) = run_bin(&["check-config", "-c", c], None);
    assert_eq!(code, 0, "{out}{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(c) && warnings[0].contains("0644"),
        "{err}"
    );

    // 0600, or 0640 in the relay's own group (a package's relay.conf,
    // root's in the service user's group): nobody else reads it.
    for mode in [0o600, 0o640] {
        chmod(&conf, mode);
        let (code, _, err) = run_bin(&["check-config", "-c", c], None);
        assert_eq!(code, 0, "{mode:o}: {err}");
        assert!(!err.contains("warning"), "{mode:o}: {err}");
    }

    // The client key: writable by others refused, readable by others warned.
    let key = dir.path().join("client.key");
    std::fs::write(&key, "not checked before the mode").unwrap();
    std::fs::write(
        &conf,
        format!(
            "SOCKET_PORT = 0\nMQTT_TLS = true\nMQTT_CA_FILE = {0}\n\
             MQTT_CLIENT_CERT = {0}\nMQTT_CLIENT_KEY = {1}\n",
            dir.path().join("ca.pem").display(),
            key.display()
        ),
    )
    .unwrap();
    chmod(&key, 0o666);
    let (code, _, err) = run_bin(&["check-config", "-c", c], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("MQTT_CLIENT_KEY")
            && err.contains(&key.display().to_string())
            && err.contains("0666"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root to chown files to another user; scripts/test.sh runs it with --ignored"]
fn a_password_readable_by_another_group_is_warned_about() {
    needs_root();
    let dir = TempDir::new("conf-group");
    let conf = conf(dir.path(), "MQTT_PASSWORD = hunter2\n");
    std::os::unix::fs::lchown(&conf, None, Some(NOBODY)).expect("chgrp");
    chmod(&conf, 0o640);
    let (code, out, err) = run_bin(&["check-config", "-c", conf.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("holds MQTT_PASSWORD and is readable by others or another group than the relay's (mode 0640)"),
        "{err}"
    );
}

#[test]
fn the_running_relay_allows_no_core_dump() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    // "Max core file size  0  0  bytes": soft and hard limits both 0.
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}
