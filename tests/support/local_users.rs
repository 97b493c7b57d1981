//! Another local user of the gateway, created by the test (as root, as CI
//! runs): what she does runs either as her own process (`setpriv`) or, for
//! a socket or a lock, from a test thread whose file-system ids are hers
//! (`setfsuid`, per thread on Linux): the kernel then records her as the
//! socket's owner.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::{relay_words, require, running_as_root, sticky_dir, TempDir};

/// Her name.
pub const USER: &str = "ms500-other";

/// The unprivileged user of these tests, created once.
#[derive(Clone, Copy)]
pub struct Other {
    pub uid: u32,
    pub gid: u32,
}

pub fn other_user() -> Other {
    require(
        running_as_root(),
        "needs root to create and act as another user",
    );
    static MADE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/false",
                USER,
            ])
            .status();
        require(
            made.is_ok_and(|s| s.success()),
            "useradd (passwd) to create a user",
        );
    }
    Other {
        uid: id("-u").expect("the user exists"),
        gid: id("-g").expect("its group"),
    }
}

impl Other {
    /// Runs `f` on this thread with her file-system uid and gid: sockets and
    /// files it creates or opens are hers.
    pub fn act<T>(self, f: impl FnOnce() -> T) -> T {
        // SAFETY: setfsuid/setfsgid change only this thread's file-system
        // ids and touch no memory; they are set back before returning.
        unsafe {
            libc::setfsgid(self.gid);
            libc::setfsuid(self.uid);
        }
        let out = f();
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
        out
    }

    /// The relay binary run as her own process.
    pub fn run(self, args: &[&str]) -> (i32, String) {
        let words = relay_words();
        let out = Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .args(&words)
            .args(args)
            .output()
            .expect("setpriv (util-linux)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

/// A relay.conf of hers holding `text`, in `dir` (made readable to her).
pub fn her_conf_with(dir: &Path, other: Other, text: &str) -> String {
    let path = dir.join("her.conf");
    std::fs::write(&path, text).unwrap();
    std::os::unix::fs::chown(&path, Some(other.uid), Some(other.gid)).unwrap();
    let mut perms = std::fs::metadata(dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir, perms).unwrap();
    path.to_string_lossy().into_owned()
}

/// The uid of nobody: another user for a test that only chowns files.
pub const NOBODY: u32 = 65534;

/// Fails a test that needs root (chown to another user) without it; such
/// tests are also `#[ignore]`d, and CI runs them as root.
pub fn needs_root() {
    require(
        running_as_root(),
        "needs root to chown files to another user",
    );
}

/// Gives `path` (not what it links to) to her.
pub fn chown_to(path: &Path, other: Other) {
    std::os::unix::fs::lchown(path, Some(other.uid), Some(other.gid)).unwrap();
}

/// The other user ([`other_user`]), a scratch directory, and in it `tmp`:
/// sticky and open to all like /tmp, where she may create entries.
pub fn sharing_a_tmp_with_her(tag: &str) -> (Other, TempDir, PathBuf) {
    let other = other_user();
    let dir = TempDir::new(tag);
    let tmp = sticky_dir(dir.path());
    (other, dir, tmp)
}
