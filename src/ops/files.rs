//! The files the relay and its tools write (`PID_FILE` and its lock,
//! `STATUS_FILE`, `METRICS_FILE`, `SPOOL_FILE`, `LOG_FILE`, the watchdog's
//! memory and log, the runtime record) are opened here, and only here: in
//! their directory reached one trusted step at a time (`dirs.rs`), without
//! following symlinks, with the modes they need, and replaced atomically
//! through temporary files of unpredictable names created exclusively. No
//! thread of its own; called by whoever writes a file.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ops::dirs::{self, Dir};
use crate::ops::sys;
use crate::ops::sys::at::Stat;

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

/// Mode bits that let group or others read.
pub(crate) const GROUP_OTHER_READ: u32 = 0o044;

/// The directory holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The checked directory of `path` and the file's name in it. A path
/// that names no file (`/`, `…/..`) is refused.
pub fn place(path: &Path) -> io::Result<(Dir, &OsStr)> {
    let name = match path.components().next_back() {
        Some(std::path::Component::Normal(name)) => name,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", path.display()),
            ))
        }
    };
    Ok((dirs::open(parent(path))?, name))
}

/// Opens `path` in its checked directory with `flags` (never through a
/// symlink, never blocking on a FIFO) and checks that it is a regular
/// file of the relay's user.
fn open_checked(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let (dir, name) = place(path)?;
    let file = dir.open(name, flags | libc::O_NONBLOCK, mode)?;
    owned_regular(&file)?;
    Ok(file)
}

/// Opens LOG_FILE for appending, created when missing (never through a
/// symlink), and gives it [`LOG_MODE`] if it had a wider one.
pub fn open_log(path: &Path) -> io::Result<File> {
    let file = open_checked(
        path,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
        LOG_MODE,
    )?;
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
    let file = open_checked(path, libc::O_RDWR | libc::O_CREAT, PID_MODE)?;
    narrow_mode(&file, PID_MODE)?;
    Ok(file)
}

/// Opens a lock file (`PID_FILE.lock`, the runtime record's locks) for
/// reading and writing, created when missing, never through a symlink,
/// mode 0600 (nobody else may open it to hold its lock); an existing one
/// must be a regular file of the relay's user.
pub fn open_lock(path: &Path) -> io::Result<File> {
    let file = open_checked(path, libc::O_RDWR | libc::O_CREAT, LOCK_MODE)?;
    if file.metadata()?.mode() & 0o7777 != LOCK_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(LOCK_MODE))?;
    }
    Ok(file)
}

/// Opens an existing file to read it, never through a symlink, never
/// blocking on a FIFO; anything but a regular file is refused.
pub fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file: not read",
        ));
    }
    Ok(file)
}

/// The bytes of `path`, read only from its checked directory, and only when
/// it is a regular file of root or of this user: what a tool reports (the
/// status snapshot, the runtime record) cannot be put there by another
/// user. Never through a symlink, never blocking on a FIFO.
pub fn read_checked(path: &Path) -> io::Result<Vec<u8>> {
    let (dir, name) = place(path)?;
    let mut file = dir.open(name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file: not read",
        ));
    }
    if meta.uid() != 0 && meta.uid() != sys::euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "belongs to uid {}, not to root or this user (uid {}): not read",
                meta.uid(),
                sys::euid()
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The bytes of a file the relay trusts for what it says (the TLS files:
/// whom it trusts, who it is): reached through checked directories, a
/// symlink at its name followed only when it is root's or the relay's
/// user's (certbot's `live/` links), and read only when it is a regular
/// file of root or of the relay's user that group and others cannot
/// write, as found on the open file itself. Never blocks on a FIFO.
pub fn read_trusted(path: &Path) -> io::Result<Vec<u8>> {
    let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    let mut at = path.to_path_buf();
    for _ in 0..dirs::MAX_LINKS {
        let (dir, name) = place(&at)?;
        let stat = dir.stat(name)?;
        if stat.is_symlink() {
            if stat.uid != 0 && stat.uid != sys::euid() {
                return Err(refuse(format!(
                    "{} is a symlink of uid {}, not of root or the relay's user: not followed",
                    at.display(),
                    stat.uid
                )));
            }
            let target = PathBuf::from(dir.read_link(name)?);
            at = dir.path().join(target);
            continue;
        }
        let mut file = dir.open(name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file: not read",
            ));
        }
        if meta.uid() != 0 && meta.uid() != sys::euid() {
            return Err(refuse(format!(
                "belongs to uid {}, not to root or the relay's user: not read",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(format!(
                "writable by group or others (mode {:04o}): not read",
                meta.mode() & 0o7777
            )));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    Err(refuse(format!("{}: too many symlinks", path.display())))
}

/// Opens an existing file of the relay's to append to it, in its checked
/// directory, never through a symlink.
pub fn open_append(path: &Path) -> io::Result<File> {
    open_checked(path, libc::O_WRONLY | libc::O_APPEND, 0)
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

/// A name next to `name` that nobody can guess: `.NAME.tmp-XXXXXXXXXXXXXXXX`.
pub fn temp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{:016x}", random_u64()));
    tmp
}

/// Creates a new file in `dir` at an unguessable name next to `name`,
/// exclusively (O_EXCL: never an existing file, never through a symlink),
/// with `mode`.
fn create_temp(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<(OsString, File)> {
    loop {
        let tmp = temp_name(name);
        match dir.open(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Replaces `path` with `bytes` atomically (temporary file, then rename)
/// in its checked directory: readers see the old content or the new,
/// never half of it. What was at `path` (a symlink too) is replaced, never
/// written through.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace_in(path, bytes, mode, false)
}

/// [`replace`], the file and the rename synced to the disk before it
/// returns (the spool: what it holds must survive a power cut).
pub fn replace_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace_in(path, bytes, mode, true)
}

fn replace_in(path: &Path, bytes: &[u8], mode: u32, synced: bool) -> io::Result<()> {
    let (dir, name) = place(path)?;
    let (tmp, mut file) = create_temp(&dir, name, mode)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| if synced { file.sync_all() } else { Ok(()) })
        .and_then(|()| dir.rename(&tmp, name));
    if written.is_err() {
        // A full disk must not also keep a half-written temporary file.
        let _ = dir.remove(&tmp);
    } else if synced {
        dir.sync();
    }
    written
}

/// Removes `path` (a symlink itself, never its target) in its checked directory.
pub fn remove(path: &Path) -> io::Result<()> {
    let (dir, name) = place(path)?;
    dir.remove(name)
}

/// What is at `path`, a symlink itself rather than its target; `None`
/// when nothing is.
pub fn entry(path: &Path) -> io::Result<Option<Stat>> {
    let (dir, name) = match place(path) {
        Ok(placed) => placed,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match dir.stat(name) {
        Ok(stat) => Ok(Some(stat)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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

/// A full or read-only file system: a disk problem that may pass, which the
/// relay rides out rather than refusing to run.
pub fn disk_problem(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT)
    )
}

/// Why a file (what is at its path, not followed) is not the relay's own:
/// a symlink, not a regular file, or another user's.
pub fn not_ours(stat: &Stat) -> Option<String> {
    let me = sys::euid();
    if stat.is_symlink() {
        Some("is a symlink; the relay does not use files through symlinks".to_string())
    } else if !stat.is_file() {
        Some(format!(
            "exists and is not a regular file ({})",
            stat.what()
        ))
    } else if stat.uid != me {
        Some(format!(
            "belongs to uid {}, not to the relay's user (uid {me})",
            stat.uid
        ))
    } else {
        None
    }
}

/// An empty scratch directory for a unit test: `ms500-unit-PID-TAG` under
/// the system temp dir, emptied first.
#[cfg(test)]
pub(crate) fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ms500-unit-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory under the temp dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        scratch_dir(&format!("files-{name}"))
    }

    #[test]
    fn a_trusted_file_is_read_through_the_relays_own_symlinks_and_nothing_else() {
        let dir = scratch("trusted");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, b"PEM").unwrap();
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_trusted(&ca).unwrap(), b"PEM");
        // certbot's layout: live/x.pem -> ../archive/x.pem, both the relay user's.
        std::fs::create_dir(dir.join("live")).unwrap();
        std::os::unix::fs::symlink("../ca.pem", dir.join("live/ca.pem")).unwrap();
        assert_eq!(read_trusted(&dir.join("live/ca.pem")).unwrap(), b"PEM");
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = read_trusted(&ca).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        let fifo = dir.join("fifo.pem");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let e = read_trusted(&fifo).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::InvalidInput,
            "a FIFO is not read: {e}"
        );
        std::os::unix::fs::symlink("loop.pem", dir.join("loop.pem")).unwrap();
        assert!(read_trusted(&dir.join("loop.pem")).is_err(), "a loop ends");
        let _ = std::fs::remove_dir_all(&dir);
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
    fn the_parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent(Path::new("/run/x/status.json")), Path::new("/run/x"));
        assert_eq!(parent(Path::new("status.json")), Path::new("."));
    }

    #[test]
    fn temporary_names_are_not_predictable() {
        let a = temp_name(OsStr::new("status.json"));
        let b = temp_name(OsStr::new("status.json"));
        assert_ne!(a, b);
        assert!(
            a.to_string_lossy().starts_with(".status.json.tmp-"),
            "{a:?}"
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
    fn a_replaced_symlink_is_replaced_itself_and_its_target_kept() {
        let dir = scratch("replace-link");
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("memory")).unwrap();
        replace(&dir.join("memory"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(dir.join("memory")).unwrap(), "new");
        assert!(entry(&dir.join("memory"))
            .unwrap()
            .is_some_and(|s| s.is_file()));
        assert!(entry(&dir.join("none")).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
