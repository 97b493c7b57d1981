//! The few system calls std does not offer, each wrapped once with the reason
//! it is safe. Nothing else in the crate (but [`at`], the `*at` calls the
//! trusted walk of `ops/dirs.rs` is made of) uses `unsafe` or calls libc.

pub mod at;

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals the relay's tools send (the watchdog to a hung relay, `stop`,
/// `reload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Cont,
    Kill,
    Hup,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Cont => libc::SIGCONT,
            Signal::Kill => libc::SIGKILL,
            Signal::Hup => libc::SIGHUP,
        }
    }
}

/// At most two malloc arenas (glibc makes up to 8 per core, one per
/// allocating thread, each keeping its own freed memory): the relay's
/// threads allocate little, and a table of 100,000 devices must not carry
/// several arenas' leftovers. Elsewhere (musl) nothing to do. Called once,
/// before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no thread allocates yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands the allocator's free pages back to the kernel after many small
/// allocations were freed at once (a fleet gone offline together): glibc
/// keeps them otherwise. Elsewhere (musl gives them back itself) nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = to_pid(pid)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal.number()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether process `pid` exists (a zombie counts), whether or not we may signal it.
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = to_pid(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; no memory is touched.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Makes the child started by `command` the leader of a new session (and
/// process group): no controlling terminal, no signals meant for the
/// starter's group.
pub fn new_session(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and calls only
    // setsid(2), which is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The soft limit on open file descriptors (RLIMIT_NOFILE), when known.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    // rlim_t is 32 bits wide on armv7.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

/// Sets how many connections the kernel keeps waiting for a listening
/// socket's accept(): listen(2) again on a listening socket only resizes
/// its backlog.
pub fn set_backlog(listener: &impl std::os::fd::AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on a descriptor the listener owns and keeps open.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Who is on the other end of a connected Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub pid: u32,
}

/// The user and process on the other end of a connected Unix socket, as
/// the kernel recorded them when it connected (`SO_PEERCRED`).
pub fn peer_credentials(socket: &impl std::os::fd::AsRawFd) -> io::Result<Credentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into the ucred we own.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Credentials {
        uid: cred.uid,
        pid: u32::try_from(cred.pid).unwrap_or(0),
    })
}

/// Runs `f` with the process umask set to `mask`, then puts the old one
/// back: a socket file is created with the mode bind(2) gives it under the
/// umask, so a restrictive one leaves no moment where others may connect.
/// Called at start, before any other thread creates files.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask(2) cannot fail and touches no memory.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let result = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    result
}

/// Waits until one of `fds` is readable (or closed by its peer), at most
/// `timeout` (None: no limit); returns which are, in the order given. A
/// signal that interrupts the wait reads as nothing ready.
pub fn wait_readable<const N: usize>(
    fds: [std::os::fd::RawFd; N],
    timeout: Option<std::time::Duration>,
) -> io::Result<[bool; N]> {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // Rounded up: a wait of 0.3 ms must not become a busy poll of 0.
    let ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: poll(2) reads and writes the N pollfd structs we own.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(e);
    }
    Ok(polled.map(|p| p.revents != 0))
}

/// A pipe (read end, write end), both closed on exec and non-blocking.
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and belong to nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd reads a
/// notification's `MONOTONIC_USEC=` on (std's `Instant` hides its value).
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec we own; CLOCK_MONOTONIC
    // always exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1_000
}

/// The effective user id: whose files the relay may trust.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The effective group id: the group whose members may read the relay's secrets.
pub fn egid() -> u32 {
    // SAFETY: getegid(2) cannot fail and touches no memory.
    unsafe { libc::getegid() }
}

/// Keeps secrets out of core dumps: no core file at all (RLIMIT_CORE 0, soft
/// and hard), and the process marked non-dumpable, which also keeps other
/// users (and ptrace) out of its memory and /proc/PID/fd.
pub fn forbid_core_dumps() -> io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit(2) reads one rlimit from a struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl(2) with PR_SET_DUMPABLE takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signals the running relay handles itself, on a thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGINT or SIGTERM: stop.
    Stop,
    /// SIGHUP: reopen LOG_FILE.
    Hangup,
    /// SIGUSR1: write the status snapshot now.
    Snapshot,
    /// SIGUSR2: the relay's own wake-up for the signal thread to end.
    Wake,
}

/// The signals the relay waits for instead of letting them act.
pub struct HandledSignals {
    set: libc::sigset_t,
}

/// Blocks SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 in the calling thread
/// and every thread it starts afterwards (call it first), so that they wait
/// for [`wait_signal`] instead of acting (SIGHUP would stop the relay,
/// SIGUSR1 kill it).
pub fn block_signals() -> io::Result<HandledSignals> {
    // SAFETY: sigemptyset/sigaddset initialise a sigset_t we own;
    // pthread_sigmask reads it and changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(HandledSignals { set })
    }
}

/// Waits for the next of the blocked signals.
pub fn wait_signal(signals: &HandledSignals) -> io::Result<Received> {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait reads the set we own and writes one int we own.
        let rc = unsafe { libc::sigwait(&signals.set, &mut sig) };
        if rc != 0 {
            if rc == libc::EINTR {
                continue;
            }
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok(match sig {
            libc::SIGHUP => Received::Hangup,
            libc::SIGUSR1 => Received::Snapshot,
            libc::SIGUSR2 => Received::Wake,
            _ => Received::Stop,
        });
    }
}

/// Sends SIGUSR2 to this process, for the signal thread to wake up and end.
pub fn wake_signal_thread() {
    // SAFETY: kill(2) with our own pid and a signal every thread blocks.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGUSR2);
    }
}

/// A pid as the kernel takes it; 0 and values past `pid_t` (which would mean
/// "my process group" or "every process") are refused.
fn to_pid(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{pid} is not a process id"),
        )),
    }
}

/// Takes a POSIX write lock (`fcntl F_SETLK`) on all of `file`, besides its
/// `flock`: the kernel then names its holder to [`posix_lock_holder`],
/// also where /proc is not mounted. Held until the process closes any
/// descriptor of the file.
pub fn posix_lock(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut lock = whole_file_write_lock();
    // SAFETY: F_SETLK reads the flock struct we own; the fd is open for writing.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut lock) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pid holding a POSIX lock that conflicts with a write lock on all of
/// `file` (`fcntl F_GETLK`), as the kernel says; `None` when there is none.
pub fn posix_lock_holder(file: &std::fs::File) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut lock = whole_file_write_lock();
    // SAFETY: F_GETLK writes only into the flock struct we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) } != 0 {
        return None;
    }
    if lock.l_type == libc::F_UNLCK as libc::c_short || lock.l_pid <= 0 {
        return None;
    }
    u32::try_from(lock.l_pid).ok()
}

fn whole_file_write_lock() -> libc::flock {
    // SAFETY: flock is plain data; all zeroes is a valid value (start 0, length 0 = all).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_that_would_address_groups_are_refused() {
        assert!(kill(0, Signal::Term).is_err());
        assert!(kill(u32::MAX, Signal::Term).is_err());
        assert!(!process_exists(0));
    }

    #[test]
    fn there_is_a_descriptor_limit() {
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn the_monotonic_clock_moves_forward_in_microseconds() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(a > 0 && b >= a + 2_000, "{a} then {b}");
    }

    #[test]
    fn this_process_exists() {
        assert!(process_exists(std::process::id()));
    }
}
