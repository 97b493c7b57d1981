//! The checks `check-config`, the start, a reload and the watchdog share
//! before anything runs (`checks.rs` adds the TLS configuration to them):
//! the places of the files the relay writes (`places.rs`), the trust of the
//! TLS files, the users, the group and the address to listen on. Runs on
//! the main thread (or the watchdog's); reads metadata and creates nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::backend::peers;
use crate::checks::places::{self, Found};
use crate::config::{writable_by_others, Config};
use crate::ops::files::GROUP_OTHER_READ;
use crate::ops::sys;

/// The relay's own user: whose files, besides root's, it trusts (relay.conf,
/// the TLS files, what it writes).
pub fn relay_user() -> u32 {
    sys::euid()
}

/// The TLS files decide whom the relay trusts and who it is:
/// `MQTT_CA_FILE`, `MQTT_CLIENT_CERT` and `MQTT_CLIENT_KEY` (with
/// `MQTT_TLS`) writable by group or others, or owned by another user than
/// root or the relay's, are refused (a replaced CA lets her broker take
/// the broker password), and so is one that is not a regular file (a FIFO
/// would hang whoever reads it: it is never opened). Empty when the files
/// may be read.
pub fn tls_file_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if !config.mqtt_tls {
        return problems;
    }
    let files = [
        ("MQTT_CA_FILE", config.mqtt_ca_file.as_deref()),
        ("MQTT_CLIENT_CERT", config.mqtt_client_cert.as_deref()),
        ("MQTT_CLIENT_KEY", config.mqtt_client_key.as_deref()),
    ];
    for (key, path) in files {
        let Some(path) = path else { continue };
        if let Some(what) = std::fs::metadata(path)
            .ok()
            .filter(|m| !m.is_file())
            .map(|m| crate::ops::sys::at::what_mode(m.mode()))
        {
            problems.push(format!(
                "{key} {}: is {what}, not a regular file: not read",
                path.display()
            ));
            continue;
        }
        if let Some(mode) = writable_by_others(path) {
            let fix = if key == "MQTT_CLIENT_KEY" {
                "600"
            } else {
                "644"
            };
            problems.push(format!(
                "{key} {}: writable by group or others (mode {mode:04o}); chmod {fix} it",
                path.display()
            ));
            continue;
        }
        let owner = std::fs::metadata(path).map(|m| m.uid()).ok();
        if let Some(uid) = owner.filter(|&uid| uid != 0 && uid != relay_user()) {
            problems.push(format!(
                "{key} {}: belongs to uid {uid}, not to root or the relay's user (uid {}): \
                 that user decides whom the relay trusts; chown it",
                path.display(),
                relay_user()
            ));
        }
    }
    problems
}

/// What is readable by others that should not be: relay.conf when it holds
/// MQTT_PASSWORD, and MQTT_CLIENT_KEY; and a loopback listener that takes
/// every local user for a backend. One line each, for a warning at start
/// and in `check-config`.
pub fn secret_file_warnings(config: &Config, source: Option<&Path>) -> Vec<String> {
    let mut warnings = secret_files(config, source);
    if let Some(warning) = every_local_user(config) {
        warnings.push(warning);
    }
    warnings
}

/// The warning when loopback peers are admitted and `SOCKET_ALLOW_USERS` is empty.
fn every_local_user(config: &Config) -> Option<String> {
    let loopback: [std::net::IpAddr; 2] = [
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    let admits_loopback = loopback
        .iter()
        .any(|ip| crate::config::allowed(&config.socket_allow, *ip));
    let tcp = !config.socket_host.is_empty();
    let open_socket = config.socket_path.is_some() && config.socket_mode & 0o002 != 0;
    let who = match (tcp && admits_loopback, open_socket) {
        (true, _) => "SOCKET_ALLOW admits loopback",
        (false, true) => "SOCKET_MODE lets others connect to SOCKET_PATH",
        (false, false) => return None,
    };
    config.socket_allow_users.is_empty().then(|| {
        format!(
            "{who} and SOCKET_ALLOW_USERS is empty: every local user can command the \
             cameras; set SOCKET_ALLOW_USERS (e.g. root)"
        )
    })
}

fn secret_files(config: &Config, source: Option<&Path>) -> Vec<String> {
    let readable = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .filter(|m| readable_by_others(m.mode(), m.gid(), sys::egid()))
            .map(|m| m.mode() & 0o7777)
    };
    let mut warnings = Vec::new();
    if let (Some(path), Some(_)) = (source, &config.mqtt_password) {
        if let Some(mode) = readable(path) {
            warnings.push(format!(
                "{} holds MQTT_PASSWORD and is readable by others or another group than the \
                 relay's (mode {mode:04o}): chmod 600 it, or 640 in the relay's group",
                path.display()
            ));
        }
    }
    if let Some(path) = config
        .mqtt_client_key
        .as_deref()
        .filter(|_| config.mqtt_tls)
    {
        if let Some(mode) = readable(path) {
            warnings.push(format!(
                "MQTT_CLIENT_KEY {} is readable by others or another group than the \
                 relay's (mode {mode:04o}): chmod 600 it, or 640 in the relay's group",
                path.display()
            ));
        }
    }
    warnings
}

/// Whether a file of `mode` and group `gid` can be read by anyone but its
/// owner and the relay: by others, or by a group that is not the relay's
/// own (`relay_gid`). A package's relay.conf is root's, mode 0640, in the
/// service user's group: readable by the relay and by nobody else.
fn readable_by_others(mode: u32, gid: u32, relay_gid: u32) -> bool {
    let others = mode & GROUP_OTHER_READ & 0o004 != 0;
    let group = mode & GROUP_OTHER_READ & 0o040 != 0 && gid != relay_gid;
    others || group
}

/// Every problem the run would refuse before serving, each naming its key,
/// path and why, so that `check-config` can report them all at once: the
/// places of the files the relay writes (`places::problems`: every
/// directory on the way trusted, a missing one that can be made, nothing
/// of another user's or special where a file goes, no file named twice or
/// relay.conf itself), the TLS files' trust, the users and group named,
/// and `SOCKET_HOST` an address of this machine. `source` is relay.conf.
/// Creates nothing; the TLS files themselves are read by `checks.rs`.
pub fn problems(config: &Config, source: Option<&Path>) -> Found {
    let mut found = places::problems(config, source);
    let problems = &mut found.problems;
    problems.extend(tls_file_problems(config));
    if let Err(unknown) = peers::resolve_users(&config.socket_allow_users) {
        problems.push(format!(
            "SOCKET_ALLOW_USERS: no such user: {}",
            unknown.join(", ")
        ));
    }
    if let Some(group) = &config.socket_group {
        if peers::resolve_group(group).is_none() {
            problems.push(format!("SOCKET_GROUP: no such group: {group}"));
        }
    }
    if let Some(why) = not_local(&config.socket_host) {
        problems.push(format!(
            "SOCKET_HOST {:?} is not an address this machine can listen on: {why}",
            config.socket_host
        ));
    }
    found
}

/// Why the TCP listener could not bind `host` (empty: no listener): it
/// does not resolve, or is no address of this machine. Tried by binding a
/// UDP socket to it on port 0 (nothing listens, nothing is sent), which
/// fails as the listener would; a taken port is the run's to find (exit 4).
fn not_local(host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = if bare.contains(':') {
        format!("[{bare}]:0")
    } else {
        format!("{bare}:0")
    };
    std::net::UdpSocket::bind(addr.as_str())
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::files::scratch_dir;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        scratch_dir(&format!("preflight-{name}"))
    }

    #[test]
    fn secrets_readable_by_others_are_warned_about_once_each() {
        let dir = scratch("secrets");
        let conf = dir.join("relay.conf");
        let key = dir.join("client.key");
        std::fs::write(&conf, "").unwrap();
        std::fs::write(&key, "").unwrap();
        let set = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let mut config = Config {
            mqtt_password: Some("pw".into()),
            mqtt_tls: true,
            mqtt_client_key: Some(key.clone()),
            socket_allow_users: vec!["root".into()],
            ..Config::default()
        };
        set(&conf, 0o644);
        set(&key, 0o604);
        let warnings = secret_file_warnings(&config, Some(&conf));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("MQTT_PASSWORD") && warnings[0].contains("0644"));
        assert!(warnings[1].contains("MQTT_CLIENT_KEY") && warnings[1].contains("0604"));
        set(&conf, 0o600);
        set(&key, 0o600);
        assert!(secret_file_warnings(&config, Some(&conf)).is_empty());
        // Files of the relay's own group (this process's) may be group-readable.
        set(&conf, 0o640);
        set(&key, 0o640);
        assert!(secret_file_warnings(&config, Some(&conf)).is_empty());
        // A readable relay.conf without a password is no secret.
        set(&conf, 0o644);
        config.mqtt_password = None;
        assert!(secret_file_warnings(&config, Some(&conf)).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_secret_may_be_read_by_the_relays_own_group_and_no_other() {
        let relay_gid = 998;
        assert!(!readable_by_others(0o100600, 0, relay_gid));
        assert!(!readable_by_others(0o100640, relay_gid, relay_gid));
        assert!(readable_by_others(0o100640, 0, relay_gid));
        assert!(readable_by_others(0o100644, relay_gid, relay_gid));
        assert!(readable_by_others(0o100604, relay_gid, relay_gid));
        assert!(
            !readable_by_others(0o100620, 0, relay_gid),
            "write alone is not read"
        );
    }

    #[test]
    fn a_loopback_listener_open_to_every_local_user_is_warned_about() {
        let open = Config::default();
        let warnings = secret_file_warnings(&open, None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("every local user"));
        let users = Config {
            socket_allow_users: vec!["root".into()],
            ..Config::default()
        };
        assert!(secret_file_warnings(&users, None).is_empty());
        let lan = Config {
            socket_allow: crate::config::allow_list("10.0.0.0/8").unwrap(),
            ..Config::default()
        };
        assert!(secret_file_warnings(&lan, None).is_empty());
        // Unix socket only: warned about when others may connect to it.
        let unix_only = |mode| Config {
            socket_host: String::new(),
            socket_path: Some("/run/r.sock".into()),
            socket_mode: mode,
            ..Config::default()
        };
        assert!(secret_file_warnings(&unix_only(0o660), None).is_empty());
        let warnings = secret_file_warnings(&unix_only(0o666), None);
        assert!(
            warnings[0].starts_with("SOCKET_MODE lets others connect"),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_unix_socket_needs_a_safe_directory_a_group_and_no_stranger_at_its_path() {
        let dir = scratch("unix-socket");
        let config = |path: &Path, group: Option<&str>| Config {
            socket_path: Some(path.to_path_buf()),
            socket_group: group.map(str::to_string),
            ..Config::default()
        };
        let fine = dir.join("relay.sock");
        let problems = |config: &Config| problems(config, None).problems;
        assert!(problems(&config(&fine, Some("0"))).is_empty());
        let missing_dir = dir.join("run").join("relay.sock");
        assert!(
            problems(&config(&missing_dir, None)).is_empty(),
            "created at start"
        );
        let found = problems(&config(&fine, Some("ms500-no-such-group")));
        assert_eq!(found, ["SOCKET_GROUP: no such group: ms500-no-such-group"]);
        std::fs::write(&fine, "").unwrap();
        let found = problems(&config(&fine, None));
        assert!(
            found[0].contains("exists and is not a socket (a regular file)"),
            "{found:?}"
        );
        std::fs::remove_file(&fine).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let found = problems(&config(&fine, None));
        assert!(
            found[0].contains("writable by group or others"),
            "{found:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
