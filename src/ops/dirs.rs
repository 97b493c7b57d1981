//! Directories reached one trusted step at a time: a [`Dir`] is a
//! descriptor got by walking from `/` one name at a time (`openat`,
//! `O_NOFOLLOW`), each step checked before anything is looked up or made
//! in it (the rules: PROTOCOL.md §5.1); every file the relay or its tools
//! write is opened, replaced or removed in one. No thread, no state: called
//! by whoever writes a file and by the checks, which only walk ([`reach`]).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::ops::sys;
use crate::ops::sys::at::{self, Stat};

const STICKY: u32 = 0o1000;
/// Symlinks followed at most in one walk (the kernel's own limit).
pub const MAX_LINKS: usize = 40;
/// Mode of the directories a walk makes, whatever the umask.
pub const MADE_DIR_MODE: u32 = 0o755;

/// A directory every step to which was checked, held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Where it is, as walked (symlinks on the way resolved): for messages.
    path: PathBuf,
    stat: Stat,
}

/// Where a walk that creates nothing ended.
#[derive(Debug)]
pub enum Reached {
    /// The whole path: its directory.
    Whole(Dir),
    /// Only `deepest`; `missing` below it does not exist (yet).
    Short { deepest: Dir, missing: PathBuf },
}

/// Why a walk stopped: a step another user could change, a step that is
/// not a directory, or one the kernel refused. The text names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Refusal> for io::Error {
    fn from(refusal: Refusal) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, refusal.0)
    }
}

/// Walks to the directory `path` and checks every step, creating nothing.
pub fn reach(path: &Path) -> Result<Reached, Refusal> {
    Walk::new(path)?.run(false)
}

/// The directory `path`, its missing levels made one at a time (mode
/// [`MADE_DIR_MODE`], owned by the relay's user), each checked like the
/// steps that exist.
pub fn make(path: &Path) -> Result<Dir, Refusal> {
    match Walk::new(path)?.run(true)? {
        Reached::Whole(dir) => Ok(dir),
        Reached::Short { missing, .. } => Err(Refusal(format!(
            "{} cannot be made: {} is missing",
            path.display(),
            missing.display()
        ))),
    }
}

/// The existing directory `path`, every step checked; a missing one is
/// `NotFound`, one that cannot be trusted `PermissionDenied` saying why.
pub fn open(path: &Path) -> io::Result<Dir> {
    match reach(path)? {
        Reached::Whole(dir) => Ok(dir),
        Reached::Short { deepest, missing } => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the directory {} does not exist",
                deepest.path.join(missing).display()
            ),
        )),
    }
}

impl Dir {
    /// Where it is, symlinks on the way resolved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (device, inode): the same directory reached by two paths is one.
    pub fn identity(&self) -> (u64, u64) {
        (self.stat.dev, self.stat.ino)
    }

    /// Opens `name` in it with `flags`, never through a symlink.
    pub fn open(&self, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
        at::open_at(self.fd.as_fd(), name, flags, mode)
    }

    /// Where the symlink `name` in it points.
    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        at::read_link_at(self.fd.as_fd(), name)
    }

    /// What `name` in it is (a symlink itself, not its target).
    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        at::stat_at(self.fd.as_fd(), name)
    }

    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        at::rename_at(self.fd.as_fd(), from, to)
    }

    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        at::unlink_at(self.fd.as_fd(), name)
    }

    /// Makes renames in it durable. Best effort: not every file system allows it.
    pub fn sync(&self) {
        if let Ok(dir) = self.open(OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            let _ = dir.sync_all();
        }
    }

    /// Ok when this process may create files in it; else why not.
    pub fn may_create(&self) -> io::Result<()> {
        at::may_create_in(self.fd.as_fd())
    }

    /// The names in it (read by its checked path: only names are learnt,
    /// whatever is done with them goes through the descriptor).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        Ok(std::fs::read_dir(&self.path)?
            .flatten()
            .map(|entry| entry.file_name())
            .collect())
    }
}

/// One walk: the directories entered so far (the last one is where the
/// next name is looked up) and the names still to walk.
struct Walk {
    written: PathBuf,
    stack: Vec<Dir>,
    todo: VecDeque<OsString>,
    links: usize,
    me: u32,
}

/// What one name turned out to be.
enum Step {
    Entered(Dir),
    /// A trusted symlink, and where it points.
    Link(OsString),
    Missing,
}

impl Walk {
    fn new(path: &Path) -> Result<Walk, Refusal> {
        if !path.is_absolute() {
            return Err(Refusal(format!(
                "{} is not an absolute path",
                path.display()
            )));
        }
        let fd = at::open_root().map_err(|e| Refusal(format!("/ cannot be opened: {e}")))?;
        let stat = at::stat_fd(fd.as_fd()).map_err(|e| Refusal(format!("/: {e}")))?;
        let root = Dir {
            fd,
            path: PathBuf::from("/"),
            stat,
        };
        Ok(Walk {
            written: path.to_path_buf(),
            stack: vec![root],
            todo: names_of(path),
            links: 0,
            me: sys::euid(),
        })
    }

    fn run(mut self, create: bool) -> Result<Reached, Refusal> {
        while let Some(name) = self.todo.pop_front() {
            if name == ".." {
                if self.stack.len() > 1 {
                    self.stack.pop();
                }
                continue;
            }
            let Some(top) = self.stack.last() else {
                return Err(Refusal("the walk lost its root".into()));
            };
            // Looked up in: it must be a step nobody else can change.
            if let Some(why) = on_the_way(top, self.me) {
                return Err(Refusal(why));
            }
            match self.step(top, &name, create)? {
                Step::Entered(dir) => self.stack.push(dir),
                Step::Link(target) => self.follow(&target)?,
                Step::Missing => {
                    let mut missing = PathBuf::from(&name);
                    missing.extend(self.todo.drain(..));
                    let deepest = self.stack.pop().ok_or_else(|| Refusal("no root".into()))?;
                    return Ok(Reached::Short { deepest, missing });
                }
            }
        }
        let dir = self
            .stack
            .pop()
            .ok_or_else(|| Refusal(format!("{}: no directory", self.written.display())))?;
        match own_dir(&dir, self.me) {
            Some(why) => Err(Refusal(why)),
            None => Ok(Reached::Whole(dir)),
        }
    }

    /// Enters `name` in `top`, made first when missing and `create`.
    fn step(&self, top: &Dir, name: &OsStr, create: bool) -> Result<Step, Refusal> {
        let shown = top.path.join(name);
        let failed = |e: io::Error| Refusal(format!("{}: {e}", shown.display()));
        // Twice at most: after making it, it is walked into like any other.
        for _ in 0..2 {
            match at::open_dir_at(top.fd.as_fd(), name) {
                Ok(fd) => {
                    let stat = at::stat_fd(fd.as_fd()).map_err(failed)?;
                    if stat.is_symlink() {
                        return self.link(top, name, stat);
                    }
                    return Ok(Step::Entered(Dir {
                        fd,
                        path: shown,
                        stat,
                    }));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    if !create {
                        return Ok(Step::Missing);
                    }
                    make_one(top, name, &shown)?;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    let stat = top.stat(name).map_err(failed)?;
                    if stat.is_symlink() {
                        return self.link(top, name, stat);
                    }
                    return Err(Refusal(format!(
                        "{} is {}, not a directory",
                        shown.display(),
                        stat.what()
                    )));
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Err(Refusal(format!(
            "the directory {} vanished as it was made",
            shown.display()
        )))
    }

    /// A symlink on the way: followed only when it is root's or the relay's user's.
    fn link(&self, top: &Dir, name: &OsStr, stat: Stat) -> Result<Step, Refusal> {
        let shown = top.path.join(name);
        if stat.uid != 0 && stat.uid != self.me {
            return Err(Refusal(format!(
                "{} on the way to it is a symlink of uid {}, not of the relay's user \
                 (uid {}) or root: that user could point it anywhere",
                shown.display(),
                stat.uid,
                self.me
            )));
        }
        at::read_link_at(top.fd.as_fd(), name)
            .map(Step::Link)
            .map_err(|e| Refusal(format!("{}: {e}", shown.display())))
    }

    /// Goes on at `target` (from `/` when it is absolute).
    fn follow(&mut self, target: &OsStr) -> Result<(), Refusal> {
        self.links += 1;
        if self.links > MAX_LINKS || target.is_empty() {
            return Err(Refusal(format!(
                "{}: too many symlinks, or an empty one, on the way",
                self.written.display()
            )));
        }
        if Path::new(target).is_absolute() {
            self.stack.truncate(1);
        }
        for name in names_of(Path::new(target)).into_iter().rev() {
            self.todo.push_front(name);
        }
        Ok(())
    }
}

/// Makes the directory `name` in `top` with [`MADE_DIR_MODE`] exactly
/// (one made meanwhile by someone else is walked into and checked).
fn make_one(top: &Dir, name: &OsStr, shown: &Path) -> Result<(), Refusal> {
    let cannot = |e: io::Error| {
        Refusal(format!(
            "the directory {} cannot be made: {e}",
            shown.display()
        ))
    };
    match at::mkdir_at(top.fd.as_fd(), name, MADE_DIR_MODE) {
        Ok(()) => {
            use std::os::unix::fs::PermissionsExt;
            let made = top
                .open(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(cannot)?;
            made.set_permissions(std::fs::Permissions::from_mode(MADE_DIR_MODE))
                .map_err(cannot)
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(cannot(e)),
    }
}

/// The names of `path` in order, `.` left out (`..` kept: the walk goes up).
fn names_of(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn foreign(uid: u32, me: u32) -> bool {
    uid != 0 && uid != me
}

/// Why another user could change what is in `dir` on the way: it is hers,
/// or writable by others without the sticky bit.
fn on_the_way(dir: &Dir, me: u32) -> Option<String> {
    let mode = dir.stat.mode;
    if foreign(dir.stat.uid, me) {
        return Some(format!(
            "{} on the way to it belongs to uid {}, not to the relay's user (uid {me}) \
             or root: that user could replace it with a symlink",
            dir.path.display(),
            dir.stat.uid
        ));
    }
    (mode & 0o002 != 0 && mode & STICKY == 0).then(|| {
        format!(
            "{} on the way to it is writable by others (mode {:04o}) without the sticky \
             bit: another user could replace what is in it",
            dir.path.display(),
            mode & 0o7777
        )
    })
}

/// Why another user could put a symlink in a file's own directory: it is
/// writable by group or others without the sticky bit, or it is hers.
fn own_dir(dir: &Dir, me: u32) -> Option<String> {
    let mode = dir.stat.mode;
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        return Some(format!(
            "the directory {} is writable by group or others (mode {:04o}) without the \
             sticky bit: another user could put a symlink there",
            dir.path.display(),
            mode & 0o7777
        ));
    }
    foreign(dir.stat.uid, me).then(|| {
        format!(
            "the directory {} belongs to uid {}, not to the relay's user (uid {me}) or \
             root: that user could put a symlink there",
            dir.path.display(),
            dir.stat.uid
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::files::scratch_dir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_walk_reaches_an_existing_directory_through_a_trusted_symlink() {
        let dir = scratch_dir("dirs-link");
        std::fs::create_dir_all(dir.join("real/run")).unwrap();
        symlink("real", dir.join("link")).unwrap();
        let reached = open(&dir.join("link/run")).unwrap();
        assert_eq!(reached.path(), dir.join("real/run"));
        let up = open(&dir.join("link/run/../run")).unwrap();
        assert_eq!(up.identity(), reached.identity());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_walk_that_creates_nothing_says_what_is_missing() {
        let dir = scratch_dir("dirs-short");
        match reach(&dir.join("a/b")).unwrap() {
            Reached::Short { deepest, missing } => {
                assert_eq!(deepest.path(), dir);
                assert_eq!(missing, Path::new("a/b"));
            }
            Reached::Whole(_) => panic!("a/b does not exist"),
        }
        assert!(!dir.join("a").exists());
        let made = make(&dir.join("a/b")).unwrap();
        assert_eq!(made.path(), dir.join("a/b"));
        let mode = std::fs::metadata(dir.join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, MADE_DIR_MODE);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_on_the_way_is_no_directory() {
        let dir = scratch_dir("dirs-file");
        std::fs::write(dir.join("plain"), "x").unwrap();
        let refused = make(&dir.join("plain/run")).unwrap_err();
        assert!(
            refused
                .0
                .contains("plain is a regular file, not a directory"),
            "{refused}"
        );
        assert!(reach(&dir.join("plain/run")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn steps_others_can_write_are_refused_unless_sticky_and_group_is_let_be_on_the_way() {
        let dir = scratch_dir("dirs-modes");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        chmod(&dir.join("a"), 0o777);
        let why = open(&dir.join("a/b")).unwrap_err().to_string();
        assert!(
            why.contains("/a on the way") && why.contains("0777"),
            "{why}"
        );
        assert!(make(&dir.join("a/b/c")).is_err());
        assert!(
            !dir.join("a/b/c").exists(),
            "nothing made below a refused step"
        );
        chmod(&dir.join("a"), 0o775);
        assert!(open(&dir.join("a/b")).is_ok(), "group-writable on the way");
        let why = open(&dir.join("a")).unwrap_err().to_string();
        assert!(why.contains("writable by group or others"), "{why}");
        chmod(&dir.join("a"), 0o1777);
        assert!(open(&dir.join("a")).is_ok(), "sticky");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn relative_paths_are_not_walked() {
        assert!(reach(Path::new("run/x")).is_err());
    }
}
