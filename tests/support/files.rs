//! Files a test makes and reads: a scratch directory removed on drop, the
//! relay's files read while they may not exist yet, and a small tmpfs for
//! a disk that fills up or turns read-only.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use super::require;

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ms500-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The text of `path`; empty while it cannot be read (not written yet).
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `path` as JSON; `Null` while it cannot be read or parsed (not written yet).
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or_default()
}

/// How long ago `path` was last modified; None when it is missing.
pub fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    std::time::SystemTime::now().duration_since(modified).ok()
}

/// A small tmpfs mounted by the test (as root), unmounted on drop: a disk
/// that fills up, or one that is read-only.
pub struct Tmpfs {
    pub dir: PathBuf,
    /// Removed once the tmpfs is unmounted (fields drop after `drop`).
    _parent: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` at a fresh directory (`dir`); fails the
    /// test ([`require`]) where mounting is not permitted.
    #[track_caller]
    pub fn mount(size_kib: u64, read_only: bool) -> Tmpfs {
        let parent = TempDir::new("tmpfs");
        let dir = parent.path().join("tmpfs");
        std::fs::create_dir_all(&dir).unwrap();
        let mut options = format!("size={size_kib}k,mode=0755");
        if read_only {
            options.push_str(",ro");
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &options,
                "ms500-test",
                dir.to_str().unwrap(),
            ])
            .output();
        let refused = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run mount: {e}")),
        };
        require(refused.is_none(), refused.as_deref().unwrap_or_default());
        Tmpfs {
            dir,
            _parent: parent,
        }
    }

    /// Fills the file system up to about `free_kib` of free space.
    pub fn fill_leaving(&self, free_kib: u64) {
        let filler = self.dir.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            if free_bytes(&self.dir) <= free_kib * 1024 {
                break;
            }
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
    }

    /// Gives the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Free bytes on the file system holding `dir`, from `df`.
pub fn free_bytes(dir: &Path) -> u64 {
    stdout_of("df", &["-B1", "--output=avail"], dir)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Sets the mode of `path`.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Gives `path` (not what it links to) to user and group `uid`.
pub fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

/// The mode as `stat` prints it (`%a`, octal without leading zeros).
pub fn stat_mode(path: &Path) -> String {
    stdout_of("stat", &["-c", "%a"], path).trim().to_string()
}

/// What `program` with `args` and `path` prints.
fn stdout_of(program: &str, args: &[&str], path: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory like /tmp: everyone may create entries, only their owner
/// may remove or rename them.
pub fn sticky_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("tmp");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o1777);
    dir
}

/// The modification time of `dir`: creating or removing anything in it
/// changes it.
pub fn mtime(dir: &Path) -> SystemTime {
    std::fs::metadata(dir).unwrap().modified().unwrap()
}

/// Sets `dir`'s modification time a minute back, so that any change shows.
pub fn age_dir(dir: &Path) {
    let out = Command::new("touch")
        .args(["-d", "1 minute ago"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(out.success());
}

/// A FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

/// Appends `lines` to `conf` (in relay.conf, the last value of a key wins).
pub fn append(conf: &Path, lines: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(conf).unwrap();
    file.write_all(lines.as_bytes()).unwrap();
}

/// `path` as text, for relay.conf and the command line.
pub fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
