//! The `*at` system calls: a directory held by its descriptor and one name
//! looked up in it at a time, never a whole path the kernel resolves again
//! (where another user could have swapped a directory for a symlink in
//! between). Each wrapped once with the reason it is safe; `ops/dirs.rs`
//! builds the trusted walk from them. No thread of its own.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// What the kernel says about one directory entry (`fstatat` without
/// following a symlink), or about an open descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub dev: u64,
    pub ino: u64,
    /// Last modification: seconds and nanoseconds since the epoch.
    pub modified: (i64, i64),
}

impl Stat {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }

    pub fn is_socket(&self) -> bool {
        self.kind() == libc::S_IFSOCK
    }

    /// What the entry is, for a message: "a directory", "a FIFO", ...
    pub fn what(&self) -> &'static str {
        what_mode(self.mode)
    }

    // The widths of the stat fields differ between targets (armv7's are narrower).
    #[allow(clippy::unnecessary_cast)]
    fn from(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            modified: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        }
    }
}

/// What a file of `mode` (`st_mode`, type bits included) is, for a message.
pub fn what_mode(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFREG => "a regular file",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        libc::S_IFSOCK => "a socket",
        _ => "a special file",
    }
}

/// One name as the kernel takes it; a name holding a NUL byte cannot exist.
fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file name cannot hold a NUL byte",
        )
    })
}

fn result(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `/`, held as a path-only descriptor: where every walk starts.
pub fn open_root() -> io::Result<OwnedFd> {
    // SAFETY: open(2) reads the NUL-terminated literal; the descriptor it
    // returns is new and owned by nothing else.
    let fd = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is valid.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The entry `name` of `dir` as a path-only descriptor, never through a
/// symlink (a symlink gives ELOOP or ENOTDIR, or a descriptor of the link
/// itself, which [`stat_fd`] tells).
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let name = c_name(name)?;
    // SAFETY: openat(2) reads the NUL-terminated name we own; dir stays open
    // for the call; the returned descriptor is new.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is valid.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the entry `name` of `dir` with `flags` (plus `O_NOFOLLOW` and
/// `O_CLOEXEC`: never through a symlink, never inherited), creating it
/// with `mode` when `flags` ask for it.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<File> {
    let name = c_name(name)?;
    // SAFETY: as open_dir_at; mode is passed by value.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is valid.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The entry `name` of `dir`, a symlink itself rather than its target.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    let name = c_name(name)?;
    // SAFETY: an all-zero stat is a valid value (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat(2) writes into the struct we own and reads the
    // NUL-terminated name we own; `dir` stays open for the call.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    result(rc).map(|()| Stat::from(&st))
}

/// What an open descriptor (a path-only one too) refers to.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    // SAFETY: an all-zero stat is a valid value (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) writes into the struct we own; `fd` is borrowed,
    // so open for the call.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    result(rc).map(|()| Stat::from(&st))
}

/// Creates the directory `name` in `dir` with `mode` (the umask applies).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: mkdirat(2) reads the name we own.
    result(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

/// Where the symlink `name` in `dir` points, as written in it.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    let name = c_name(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat(2) writes at most buf.len() bytes into the buffer we own.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let Ok(n) = usize::try_from(n) else {
        return Err(io::Error::last_os_error());
    };
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

/// Renames `from` to `to`, both in `dir` (replacing what `to` named,
/// the entry itself: a symlink there is replaced, its target untouched).
pub fn rename_at(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (from, to) = (c_name(from)?, c_name(to)?);
    let fd = dir.as_raw_fd();
    // SAFETY: renameat(2) reads the two names we own.
    result(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) })
}

/// Removes the entry `name` of `dir` (a symlink itself, not its target).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: unlinkat(2) reads the name we own.
    result(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
}

/// Ok when this process (its effective ids) may create entries in `dir`;
/// else why not (EACCES, EROFS for a read-only file system).
pub fn may_create_in(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: faccessat(2) reads the NUL-terminated literal.
    result(unsafe {
        libc::faccessat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    })
}
