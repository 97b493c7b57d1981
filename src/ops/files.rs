//! The files the relay writes (`PID_FILE`, `STATUS_FILE`, `METRICS_FILE`,
//! `SPOOL_FILE`, `LOG_FILE`) are opened here, and only here: without
//! following symlinks, with the modes they need, and replaced atomically
//! through temporary files of unpredictable names created exclusively. No
//! thread of its own; called by whoever writes a file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ops::sys;

/// Modes of what the relay writes: readable by everyone for the status and
/// metrics (monitoring runs as another user), the log by the group only,
/// the pid by everyone, and the spool (which holds Wi-Fi passwords) by the
/// relay's user alone.
pub const STATUS_MODE: u32 = 0o644;
pub const LOG_MODE: u32 = 0o640;
pub const PID_MODE: u32 = 0o644;
pub const SPOOL_MODE: u32 = 0o600;
/// The pid lock file: no one else may open it (and so hold its lock).
pub const LOCK_MODE: u32 = 0o600;

/// Mode bits that let group or others write.
pub(crate) const GROUP_OTHER_WRITE: u32 = 0o022;
/// Mode bits that let group or others read.
pub(crate) const GROUP_OTHER_READ: u32 = 0o044;
const STICKY: u32 = 0o1000;

/// The directory holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Opens LOG_FILE for appending, created when missing (never through a
/// symlink), and gives it [`LOG_MODE`] if it had a wider one.
pub fn open_log(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    owned_regular(&file)?;
    narrow_mode(&file, LOG_MODE)?;
    Ok(file)
}

/// A file the relay writes is used only when it is a regular file of the
/// relay's user: one another user created first (in a sticky directory)
/// she could read and forge; a FIFO would block the writer (the files are
/// opened with `O_NONBLOCK`, which then changes nothing for a regular file).
fn owned_regular(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a regular file: not used",
        ));
    }
    if meta.uid() != sys::euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "belongs to uid {}, not to the relay's user (uid {}): not used",
                meta.uid(),
                sys::euid()
            ),
        ));
    }
    Ok(())
}

/// Opens PID_FILE for reading and writing, created when missing, never
/// through a symlink, with [`PID_MODE`].
pub fn open_pid(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PID_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    owned_regular(&file)?;
    narrow_mode(&file, PID_MODE)?;
    Ok(file)
}

/// Opens `PID_FILE.lock` for reading and writing, created when missing,
/// never through a symlink, mode 0600 (nobody else may open it to hold its
/// lock); an existing one must be a regular file of the relay's user.
pub fn open_lock(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    owned_regular(&file)?;
    if file.metadata()?.mode() & 0o7777 != LOCK_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(LOCK_MODE))?;
    }
    Ok(file)
}

/// Opens an existing file to read it, never through a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens an existing file to append to it, never through a symlink.
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    owned_regular(&file)?;
    Ok(file)
}

/// Takes away the mode bits `file` has beyond `mode` (a file left by an
/// older version, or created under a permissive umask).
fn narrow_mode(file: &File, mode: u32) -> io::Result<()> {
    let now = file.metadata()?.permissions().mode() & 0o7777;
    if now & !mode != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(now & mode))?;
    }
    Ok(())
}

/// A name next to `path` that nobody can guess: `.NAME.tmp-XXXXXXXXXXXXXXXX`.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.tmp-{:016x}", random_u64()))
}

/// Creates a new file at an unguessable name next to `path`, exclusively
/// (O_EXCL: never an existing file, never through a symlink), with `mode`.
pub fn create_temp(path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    loop {
        let tmp = temp_name(path);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Replaces `path` with `bytes` atomically (temporary file, then rename):
/// readers see the old content or the new, never half of it.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (tmp, mut file) = create_temp(path, mode)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// 64 random bits from the kernel (a time- and pid-based value if
/// /dev/urandom cannot be read: temporary names are created exclusively
/// anyway, so this only makes them harder to guess).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_ne_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Why a directory cannot take the relay's files.
#[derive(Debug)]
pub enum DirProblem {
    Missing,
    NotWritable(io::Error),
}

impl DirProblem {
    /// A read-only or full file system: a disk problem that may pass, not
    /// a configuration error.
    pub fn passing(&self) -> bool {
        matches!(self, DirProblem::NotWritable(e) if disk_problem(e))
    }

    pub fn describe(&self, dir: &Path) -> String {
        match self {
            DirProblem::Missing => format!("the directory {} does not exist", dir.display()),
            DirProblem::NotWritable(e) => {
                format!("the directory {} is not writable: {e}", dir.display())
            }
        }
    }
}

/// A full or read-only file system: a disk problem that may pass, which the
/// relay rides out rather than refusing to run.
pub fn disk_problem(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT)
    )
}

/// Whether some process holds a lock on `path` (a relay holds PID_FILE's).
/// A file that is missing or cannot be opened is not locked; one whose
/// lock cannot be tested counts as locked (nothing is concluded from it).
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // A shared lock conflicts with the relay's exclusive one and is dropped at once.
    !matches!(file.try_lock_shared(), Ok(()))
}

/// Ok when `dir` is a directory this process can create files in.
pub fn check_writable_dir(dir: &Path) -> Result<(), DirProblem> {
    if !dir.is_dir() {
        return Err(DirProblem::Missing);
    }
    match create_temp(&dir.join("probe"), 0o600) {
        Ok((tmp, _)) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) => Err(DirProblem::NotWritable(e)),
    }
}

/// Why another local user could make the relay write where it should not:
/// the directory of `path` is writable by group or others without the
/// sticky bit, or belongs to another user (other than root); or something
/// already at `path` is a symlink, not a regular file, or another user's.
/// With `file_too` false only the directory is checked (the spool's own
/// file is judged when it is read: see `Spool::distrust`).
pub fn unsafe_place(path: &Path, file_too: bool) -> Option<String> {
    let dir = parent(path);
    let me = sys::euid();
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.mode();
        if mode & GROUP_OTHER_WRITE != 0 && mode & STICKY == 0 {
            return Some(format!(
                "the directory {} is writable by group or others (mode {:04o}) without the \
                 sticky bit: another user could put a symlink there",
                dir.display(),
                mode & 0o7777
            ));
        }
        if meta.uid() != me && meta.uid() != 0 {
            return Some(format!(
                "the directory {} belongs to uid {}, not to the relay's user (uid {me}) \
                 or root: that user could put a symlink there",
                dir.display(),
                meta.uid()
            ));
        }
    }
    if let Some(why) = untrusted_ancestor(dir) {
        return Some(why);
    }
    if !file_too {
        return None;
    }
    not_ours(&std::fs::symlink_metadata(path).ok()?)
}

/// Why a directory above `dir` (as written and as resolved, up to `/`)
/// could be swapped by another user for a symlink to somewhere else: it,
/// or a symlink on the way, belongs to another user than root or the
/// relay's, or it is writable by others without the sticky bit.
/// Only the relay's user and root can then rename anything on the way.
pub fn untrusted_ancestor(dir: &Path) -> Option<String> {
    let me = sys::euid();
    let written = std::path::absolute(dir).ok();
    let resolved = std::fs::canonicalize(dir).ok();
    for chain in [written, resolved].into_iter().flatten() {
        for step in chain.ancestors() {
            let Ok(meta) = std::fs::symlink_metadata(step) else {
                continue;
            };
            if meta.uid() != me && meta.uid() != 0 {
                return Some(format!(
                    "{} on the way to it belongs to uid {}, not to the relay's user (uid {me}) \
                     or root: that user could replace it with a symlink",
                    step.display(),
                    meta.uid()
                ));
            }
            // Group-writable steps are let be (Ubuntu's /var/log is
            // root:syslog 0775); the file's own directory is stricter (above).
            let mode = meta.mode();
            if meta.is_dir() && mode & 0o002 != 0 && mode & STICKY == 0 {
                return Some(format!(
                    "{} on the way to it is writable by others (mode {:04o}) \
                     without the sticky bit: another user could replace what is in it",
                    step.display(),
                    mode & 0o7777
                ));
            }
        }
    }
    None
}

/// Why a file (its `symlink_metadata`) is not the relay's own: a symlink,
/// not a regular file, or another user's.
pub fn not_ours(meta: &std::fs::Metadata) -> Option<String> {
    let me = sys::euid();
    if meta.file_type().is_symlink() {
        Some("is a symlink; the relay does not use files through symlinks".to_string())
    } else if !meta.is_file() {
        Some("exists and is not a regular file".to_string())
    } else if meta.uid() != me {
        Some(format!(
            "belongs to uid {}, not to the relay's user (uid {me})",
            meta.uid()
        ))
    } else {
        None
    }
}

/// An empty scratch directory for a unit test: `ms500-unit-PID-TAG` under
/// the system temp dir, emptied first.
#[cfg(test)]
pub(crate) fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ms500-unit-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory under the temp dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        scratch_dir(&format!("files-{name}"))
    }

    #[test]
    fn replace_is_atomic_leaves_no_temporary_and_sets_the_mode() {
        let dir = scratch("replace");
        let path = dir.join("status.json");
        replace(&path, b"one", STATUS_MODE).unwrap();
        replace(&path, b"two", STATUS_MODE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !STATUS_MODE, 0, "{mode:o}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_directory_on_the_way_must_be_roots_or_the_relays() {
        let dir = scratch("ancestors");
        let deep = dir.join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(untrusted_ancestor(&deep), None);
        std::fs::set_permissions(dir.join("a"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = untrusted_ancestor(&deep).expect("a world-writable step");
        assert!(
            why.contains("/a on the way") && why.contains("0777"),
            "{why}"
        );
        std::fs::set_permissions(dir.join("a"), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(
            untrusted_ancestor(&deep),
            None,
            "group-writable steps are let be"
        );
        std::fs::set_permissions(dir.join("a"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(untrusted_ancestor(&deep), None, "sticky is fine");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent(Path::new("/run/x/status.json")), Path::new("/run/x"));
        assert_eq!(parent(Path::new("status.json")), Path::new("."));
    }

    #[test]
    fn temporary_names_are_not_predictable() {
        let a = temp_name(Path::new("/run/x/status.json"));
        let b = temp_name(Path::new("/run/x/status.json"));
        assert_ne!(a, b);
        assert!(
            a.to_string_lossy().starts_with("/run/x/.status.json.tmp-"),
            "{}",
            a.display()
        );
    }

    #[test]
    fn a_symlink_where_the_log_goes_is_not_followed() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("relay.log")).unwrap();
        assert!(open_log(&dir.join("relay.log")).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn writable_dir_checks_name_the_directory() {
        let dir = scratch("writable");
        assert!(check_writable_dir(&dir).is_ok());
        let missing = dir.join("nope");
        let problem = check_writable_dir(&missing).unwrap_err();
        assert!(problem.describe(&missing).contains("does not exist"));
        assert!(!problem.passing());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is gone"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
