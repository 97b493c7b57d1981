//! A spool another user could have written (hers, writable by others, or a
//! symlink) is moved aside, not replayed; the relay starts with a fresh one
//! of its own.

use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::local_users::{needs_root, NOBODY};
use crate::support::{
    accepted_count, chmod, chown, stat_mode, wait_until, Broker, Relay, Subscriber, TempDir,
    COMMANDS, WAIT,
};

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
    let sub = Subscriber::new(broker.port, COMMANDS);
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
