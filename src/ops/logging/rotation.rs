//! `LOG_FILE` and its rotation: past `LOG_MAX_BYTES` it becomes
//! `LOG_FILE.1`, the older ones shift up to `LOG_FILE.LOG_KEEP`. Written by
//! whoever holds the sink's writer lock (`sink.rs`); no thread of its own.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use log::Level;

use super::line::format_line;
use crate::ops::files;

/// Lines a write could not put in the log, and why.
#[derive(Debug)]
pub(super) struct Lost {
    pub lines: u64,
    pub error: io::Error,
}

/// `LOG_FILE` with size-based rotation.
pub(super) struct RotatingFile {
    pub path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
    /// A rotation failed and LOG_FILE was truncated instead: said once.
    told_cannot_rotate: bool,
}

impl RotatingFile {
    pub(super) fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let file = files::open_log(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
            told_cannot_rotate: false,
        })
    }

    pub(super) fn reopen(&mut self) -> io::Result<()> {
        let told = self.told_cannot_rotate;
        *self = RotatingFile::open(&self.path, self.max_bytes, self.keep)?;
        self.told_cannot_rotate = told;
        Ok(())
    }

    /// LOG_FILE cannot be renamed (a directory planted at LOG_FILE.1, a
    /// read-only directory): logging goes on in LOG_FILE, truncated, and
    /// the first time a line in it says why.
    fn truncate_instead(&mut self, why: &io::Error) -> io::Result<()> {
        self.file.set_len(0)?;
        self.size = 0;
        if !self.told_cannot_rotate {
            self.told_cannot_rotate = true;
            let _ = writeln!(
                io::stderr(),
                "ms500-relay: cannot rotate the log {}: {why}; truncating it instead",
                self.path.display()
            );
            let line = format_line(
                Level::Warn,
                format_args!(
                    "cannot rotate the log {}: {why}; truncating it instead, \
                     older lines are lost (said once)",
                    self.path.display()
                ),
            );
            self.file.write_all(line.as_bytes())?;
            self.size = line.len() as u64;
        }
        Ok(())
    }

    /// Writes whole lines, rotating so that no file grows past `max_bytes`.
    /// A line is written whole or not at all: when a write fails (a full
    /// disk writes part of it), the file is cut back to where it ended
    /// before, and the error comes with the number of lines not written.
    pub(super) fn write_lines(&mut self, bytes: &[u8], starts: &[usize]) -> Result<(), Lost> {
        let mut from = 0;
        let lost = |from: usize, error: io::Error| Lost {
            lines: starts.iter().filter(|&&start| start >= from).count() as u64,
            error,
        };
        while from < bytes.len() {
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            // The longest run of whole lines from `from` that fits.
            let fits = starts
                .iter()
                .copied()
                .chain(std::iter::once(bytes.len()))
                .rfind(|&end| end > from && end - from <= room);
            let to = match fits {
                Some(end) => end,
                None if self.size > 0 => {
                    self.rotate().map_err(|e| lost(from, e))?;
                    continue;
                }
                // A line longer than a whole file: what fits of it.
                None => (from + room.max(1)).min(bytes.len()),
            };
            self.append_whole(&bytes[from..to])
                .map_err(|e| lost(from, e))?;
            self.size += (to - from) as u64;
            from = to;
            if from < bytes.len() {
                self.rotate().map_err(|e| lost(from, e))?;
            }
        }
        Ok(())
    }

    /// Appends `bytes`, or nothing: a short write is cut off again.
    fn append_whole(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.file.metadata()?.len();
        self.file.write_all(bytes).inspect_err(|_| {
            let _ = self.file.set_len(end);
        })
    }

    /// LOG_FILE.(N-1) → LOG_FILE.N, …, LOG_FILE → LOG_FILE.1, then a fresh
    /// LOG_FILE. With LOG_KEEP = 0 the file simply starts over.
    fn rotate(&mut self) -> io::Result<()> {
        // Deleted or moved away meanwhile (an operator freeing space): the
        // numbered files are not ours to shift; start a fresh LOG_FILE.
        if !self.still_at_path() {
            self.file = files::open_log(&self.path)?;
            self.size = self.file.metadata()?.len();
            return Ok(());
        }
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // In LOG_FILE's directory, reached and checked again: the renames
        // never go through a symlink.
        let (dir, name) = files::place(&self.path)?;
        let name = name.to_os_string();
        let numbered = |n: u32| {
            let mut p = name.clone();
            p.push(format!(".{n}"));
            p
        };
        let _ = dir.remove(&numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = dir.rename(&numbered(n), &numbered(n + 1));
        }
        if let Err(e) = dir.rename(&name, &numbered(1)) {
            return self.truncate_instead(&e);
        }
        self.file = files::open_log(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Whether LOG_FILE still names the file being written.
    fn still_at_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(open), Ok(named)) => (open.dev(), open.ino()) == (named.dev(), named.ino()),
            _ => false,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::ops::logging) fn scratch(name: &str) -> PathBuf {
        crate::ops::files::scratch_dir(&format!("log-{name}")).join("relay.log")
    }

    pub(in crate::ops::logging) fn lines(n: usize, width: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(bytes.len());
            let text = format!("{i:05} {}\n", "x".repeat(width - 7));
            bytes.extend_from_slice(text.as_bytes());
        }
        (bytes, starts)
    }

    #[test]
    fn rotation_keeps_every_file_within_the_limit_and_at_most_keep_of_them() {
        let path = scratch("rotate");
        let mut file = RotatingFile::open(&path, 1000, 2).unwrap();
        for _ in 0..20 {
            let (bytes, starts) = lines(30, 50);
            file.write_lines(&bytes, &starts).unwrap();
        }
        let dir = path.parent().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["relay.log", "relay.log.1", "relay.log.2"]);
        for name in names {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            assert!(text.len() <= 1000, "{name}: {}", text.len());
            assert!(
                text.lines().all(|l| l.len() == 49),
                "{name} holds whole lines only"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_deleted_log_file_is_started_afresh_and_the_rotated_ones_are_kept() {
        let path = scratch("deleted");
        let mut file = RotatingFile::open(&path, 1000, 2).unwrap();
        for _ in 0..3 {
            let (bytes, starts) = lines(30, 50);
            file.write_lines(&bytes, &starts).unwrap();
        }
        let dir = path.parent().unwrap().to_path_buf();
        let rotated = std::fs::read(dir.join("relay.log.1")).unwrap();
        std::fs::remove_file(&path).unwrap();
        for _ in 0..2 {
            let (bytes, starts) = lines(30, 50);
            file.write_lines(&bytes, &starts).unwrap();
        }
        assert!(path.exists(), "a fresh LOG_FILE");
        assert!(!std::fs::read(&path).unwrap().is_empty(), "lines go to it");
        assert_eq!(
            std::fs::read(dir.join("relay.log.1")).unwrap(),
            rotated,
            "the rotated history is not shifted away by a file that is gone"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_in_the_way_of_rotation_truncates_the_log_and_says_so_once() {
        let dir = scratch("rotate-blocked");
        let path = dir.join("relay.log");
        for n in [1, 2] {
            std::fs::create_dir_all(dir.join(format!("relay.log.{n}/x"))).unwrap();
        }
        let mut file = RotatingFile::open(&path, 1000, 2).unwrap();
        let (bytes, starts) = lines(30, 40);
        file.write_lines(&bytes, &starts).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(|c: char| c.is_ascii_digit()), "{text}");
        assert_eq!(text.matches("cannot rotate the log").count(), 1, "{text}");
        assert!(
            text.ends_with("00029 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"),
            "{text}"
        );
        for _ in 0..20 {
            file.write_lines(&bytes, &starts)
                .expect("logging goes on in LOG_FILE");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("cannot rotate"),
            "said once, not again: {text}"
        );
        assert!(text.len() <= 1000 && text.ends_with('\n'), "{}", text.len());
        assert!(
            dir.join("relay.log.1/x").is_dir(),
            "the directories are left alone"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn keep_zero_starts_the_file_over_and_a_huge_line_is_cut_to_the_file() {
        let path = scratch("keep0");
        let mut file = RotatingFile::open(&path, 100, 0).unwrap();
        let (bytes, starts) = lines(10, 40);
        file.write_lines(&bytes, &starts).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        let huge = vec![b'h'; 500];
        file.write_lines(&huge, &[0]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
