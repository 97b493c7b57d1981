//! The few system calls std does not offer, each wrapped once with the reason
//! it is safe. Nothing else in the crate uses `unsafe` or calls libc.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals the relay sends (the watchdog to a hung relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Cont,
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Cont => libc::SIGCONT,
            Signal::Kill => libc::SIGKILL,
        }
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
    fn this_process_exists() {
        assert!(process_exists(std::process::id()));
    }
}
