//! `PID_FILE`: one relay per configuration. The main thread takes an
//! exclusive lock on the file (std's `File::try_lock`, an `flock`) before
//! anything else starts and holds it for the life of the process; the file
//! holds the pid. The lock, not the file's existence, is what counts: a file
//! left by a dead process is unlocked and simply taken over.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

pub struct PidFile {
    path: PathBuf,
    // Held for the lock; closing it releases the lock.
    file: File,
}

impl PidFile {
    pub fn acquire(path: &Path) -> Result<PidFile, Error> {
        let shown = path.display().to_string();
        let mut file = crate::ops::files::open_pid(path)
            .map_err(|e| Error::setup_because(format!("PID_FILE {shown}"), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.trim();
                return Err(Error::AlreadyRunning {
                    path: shown,
                    pid: if pid.is_empty() {
                        "?".into()
                    } else {
                        pid.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::setup_because(
                    format!("PID_FILE {shown}: cannot lock"),
                    e,
                ))
            }
        }
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        };
        write(&mut file).map_err(|e| Error::setup_because(format!("PID_FILE {shown}"), e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Removes the file on a clean stop (the lock goes with the process anyway).
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn scratch(name: &str) -> PathBuf {
        crate::ops::files::scratch_dir(&format!("pid-{name}")).join("relay.pid")
    }

    #[test]
    fn a_held_lock_refuses_a_second_holder_and_names_the_pid() {
        let path = scratch("held");
        let first = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        match PidFile::acquire(&path) {
            Err(Error::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected AlreadyRunning, got {:?}", other.map(|_| ())),
        }
        first.release();
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_file_without_a_lock_is_taken_over() {
        let path = scratch("stale");
        std::fs::write(&path, "999999999\nleftover text\n").unwrap();
        let pid = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        pid.release();
    }
}
