//! The cameras the relay has seen, kept across restarts
//! (`SPOOL_FILE.cameras`, PROTOCOL.md §5): one line per camera ([`Entry`]).
//! Read once at start; written by the main thread from the device table
//! when devices appeared or changed state (at most once a minute), and at
//! a clean stop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::delivery::policy::Remembered;
use crate::ops::files;

/// The file's first line.
const HEADER: &str = "# ms500-relay cameras 1: id, state (offline or unknown), interval in ms (- = not learned), last heartbeat (unix seconds)";
/// A file larger than this is not ours (a million cameras fit in 64 MiB).
const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// One camera as the file keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its device id, as it heartbeats.
    pub id: String,
    /// What the publisher's policy needs of it.
    pub remembered: Remembered,
    /// When it was last heard, in unix seconds.
    pub last_seen: u32,
}

/// Where the cameras are kept: next to `SPOOL_FILE` (nothing is kept
/// across restarts without one).
pub fn path_for(spool: &Path) -> PathBuf {
    let mut path = spool.as_os_str().to_owned();
    path.push(".cameras");
    PathBuf::from(path)
}

/// The file's text for `entries`.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(64 + entries.len() * 40);
    out.push_str(HEADER);
    out.push('\n');
    for Entry {
        id,
        remembered: r,
        last_seen,
    } in entries
    {
        // A device id is a topic level: only one with a blank in it could
        // not be read back, and it is not kept.
        if id.is_empty() || id.contains(char::is_whitespace) {
            continue;
        }
        let state = if r.offline { "offline" } else { "unknown" };
        let interval = r
            .interval
            .map_or_else(|| "-".to_string(), |i| i.as_millis().to_string());
        out.push_str(&format!("{id} {state} {interval} {last_seen}\n"));
    }
    out
}

/// The entries in `text`, at most `max`; lines that cannot be read are skipped.
pub fn parse(text: &str, max: usize) -> Vec<Entry> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?;
            let offline = match fields.next()? {
                "offline" => true,
                "unknown" => false,
                _ => return None,
            };
            let interval = match fields.next()? {
                "-" => None,
                ms => Some(Duration::from_millis(ms.parse().ok()?)),
            };
            let last_seen: u32 = fields.next()?.parse().ok()?;
            let r = Remembered {
                camera: id.to_ascii_lowercase(),
                offline,
                interval,
            };
            Some(Entry {
                id: id.to_string(),
                remembered: r,
                last_seen,
            })
        })
        .take(max)
        .collect()
}

/// The cameras kept at `path` (none when it is missing); why not, when it
/// cannot be read (the relay starts knowing none).
pub fn load(path: &Path, max: usize) -> std::io::Result<Vec<Entry>> {
    let file = match files::open_read(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_BYTES).read_to_string(&mut text)?;
    Ok(parse(&text, max))
}

/// Replaces the file with `entries` (mode 0600: it is the spool's).
pub fn save(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    files::replace(path, render(entries).as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let entries = vec![
            Entry {
                id: "A0B1C2D3E4F5".to_string(),
                remembered: Remembered {
                    camera: "a0b1c2d3e4f5".into(),
                    offline: true,
                    interval: Some(Duration::from_millis(5000)),
                },
                last_seen: 1_795_931_998,
            },
            Entry {
                id: "cam-01".to_string(),
                remembered: Remembered {
                    camera: "cam-01".into(),
                    offline: false,
                    interval: None,
                },
                last_seen: 7,
            },
        ];
        let text = render(&entries);
        assert!(text.starts_with("# ms500-relay cameras 1"));
        assert_eq!(parse(&text, 10), entries);
        assert_eq!(parse(&text, 1).len(), 1, "bounded");
    }

    #[test]
    fn lines_that_cannot_be_read_are_skipped() {
        let text = "# x\ncam offline 10 5\nbad line\ncam2 maybe - 1\ncam3 unknown - 3\n";
        let ids: Vec<String> = parse(text, 10).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["cam", "cam3"]);
    }

    #[test]
    fn an_id_with_a_blank_is_not_kept() {
        let r = Remembered {
            camera: "a b".into(),
            offline: false,
            interval: None,
        };
        let entry = Entry {
            id: "a b".into(),
            remembered: r,
            last_seen: 1,
        };
        assert_eq!(render(&[entry]).lines().count(), 1);
    }
}
