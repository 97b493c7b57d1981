//! The spool file (`SPOOL_FILE`): accepted commands survive a crash or
//! `kill -9`. Owned by the publisher thread; nothing else touches the file.
//!
//! # Format
//!
//! An append-only log. The file starts with the 12-byte header
//! `MS500SPOOL1\n`, then holds records:
//!
//! ```text
//! kind: u8 | len: u32 LE | body: len bytes | crc: u32 LE
//! ```
//!
//! `crc` is CRC-32 (IEEE) over `kind`, `len` and `body`. Two kinds:
//!
//! * `A` (accepted): `seq: u64 LE | received_unix_ms: u64 LE | payload`
//! * `D` (done, acknowledged or expired): `seq: u64 LE`
//!
//! A command is live when its `A` record has no `D` record. Accepted records
//! are written in batches followed by one `fdatasync` (group commit): a
//! command counts as accepted only after that sync. `D` records are written
//! without a sync of their own; losing one after a crash only means a
//! duplicate publish (at least once). When nothing is live the file is cut
//! back to its header; when dead records outweigh live ones it is rewritten
//! (temporary file, sync, rename). At start the file is read up to the first
//! torn or corrupt record (a crash mid-write); what follows is logged and
//! dropped, and the live commands are rewritten into a fresh file before
//! anything new is appended.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HEADER: &[u8; 12] = b"MS500SPOOL1\n";
const KIND_ACCEPTED: u8 = b'A';
const KIND_DONE: u8 = b'D';
/// Rewrite only when this many dead records have piled up (and outweigh the live ones).
const COMPACT_MIN_DEAD: u64 = 4096;
/// A record longer than this cannot be ours (MAX_MESSAGE_BYTES tops out at 16 MiB).
const MAX_RECORD: u32 = 32 * 1024 * 1024;

/// A live command as the spool stores it: (sequence, received, payload).
pub type Live<'a> = (u64, SystemTime, &'a [u8]);

/// One live command read back at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub received: SystemTime,
    pub payload: Vec<u8>,
}

/// What reading an existing spool found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub live: Vec<Replayed>,
    /// Offset and length of a torn or corrupt tail that was dropped.
    pub damaged: Option<(u64, u64)>,
}

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Appended but not yet written.
    buf: Vec<u8>,
    /// Accepted records appended since the last sync.
    unsynced: bool,
    live: u64,
    dead: u64,
}

impl Spool {
    /// Reads what an existing spool holds (nothing when there is no file).
    pub fn read(path: &Path) -> io::Result<Recovery> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(recover(&bytes))
    }

    /// Writes a fresh spool holding exactly `live`, synced, and opens it for
    /// appending. Used at start (after [`Spool::read`]) and by compaction.
    pub fn create<'a>(path: &Path, live: impl Iterator<Item = Live<'a>>) -> io::Result<Spool> {
        let tmp = path.with_extension("tmp");
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(HEADER);
        let mut count = 0;
        for (seq, received, payload) in live {
            encode_accepted(&mut out, seq, unix_ms(received), payload);
            count += 1;
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(path);
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            buf: Vec::with_capacity(64 * 1024),
            unsynced: false,
            live: count,
            dead: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues an accepted command; durable after the next [`Spool::sync`].
    pub fn accepted(&mut self, seq: u64, received: SystemTime, payload: &[u8]) {
        encode_accepted(&mut self.buf, seq, unix_ms(received), payload);
        self.unsynced = true;
        self.live += 1;
    }

    /// Queues the end of a command (acknowledged or expired).
    pub fn done(&mut self, seq: u64) {
        encode(&mut self.buf, KIND_DONE, &seq.to_le_bytes(), &[]);
        self.live = self.live.saturating_sub(1);
        self.dead += 1;
    }

    /// Writes what is queued and, when accepted commands are among it, syncs.
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Keeps the file small: cut back to the header when nothing is live,
    /// rewrite when dead records outweigh live ones. `live` lists what is live now.
    pub fn compact<'a>(&mut self, live: impl Iterator<Item = Live<'a>>) -> io::Result<()> {
        if self.live == 0 && self.dead > 0 {
            self.sync()?;
            self.file.set_len(HEADER.len() as u64)?;
            self.file.sync_data()?;
            self.dead = 0;
        } else if self.dead >= COMPACT_MIN_DEAD && self.dead > self.live {
            self.sync()?;
            let fresh = Spool::create(&self.path, live)?;
            *self = fresh;
        }
        Ok(())
    }

    /// True when there is something to compact away.
    pub fn wants_compaction(&self) -> bool {
        (self.live == 0 && self.dead > 0)
            || (self.dead >= COMPACT_MIN_DEAD && self.dead > self.live)
    }
}

fn encode_accepted(out: &mut Vec<u8>, seq: u64, unix_ms: u64, payload: &[u8]) {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..].copy_from_slice(&unix_ms.to_le_bytes());
    encode(out, KIND_ACCEPTED, &head, payload);
}

fn encode(out: &mut Vec<u8>, kind: u8, head: &[u8], rest: &[u8]) {
    let len = (head.len() + rest.len()) as u32;
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(rest);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads a spool image: live commands in acceptance order, and where it was damaged.
pub fn recover(bytes: &[u8]) -> Recovery {
    let mut recovery = Recovery::default();
    if bytes.is_empty() {
        return recovery;
    }
    if bytes.len() < HEADER.len() || &bytes[..HEADER.len()] != HEADER {
        recovery.damaged = Some((0, bytes.len() as u64));
        return recovery;
    }
    let mut live: BTreeMap<u64, Replayed> = BTreeMap::new();
    let mut pos = HEADER.len();
    while pos < bytes.len() {
        match decode(&bytes[pos..]) {
            Some((kind, body, used)) => {
                match (kind, body.len()) {
                    (KIND_ACCEPTED, n) if n >= 16 => {
                        let seq = le_u64(&body[..8]);
                        let ms = le_u64(&body[8..16]);
                        live.insert(
                            seq,
                            Replayed {
                                received: UNIX_EPOCH + Duration::from_millis(ms),
                                payload: body[16..].to_vec(),
                            },
                        );
                    }
                    (KIND_DONE, 8) => {
                        live.remove(&le_u64(body));
                    }
                    _ => {
                        recovery.damaged = Some((pos as u64, (bytes.len() - pos) as u64));
                        break;
                    }
                }
                pos += used;
            }
            None => {
                recovery.damaged = Some((pos as u64, (bytes.len() - pos) as u64));
                break;
            }
        }
    }
    recovery.live = live.into_values().collect();
    recovery
}

/// One record at the start of `bytes`: (kind, body, bytes used), or None when torn or corrupt.
fn decode(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    if bytes.len() < 5 {
        return None;
    }
    let kind = bytes[0];
    let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    if len > MAX_RECORD {
        return None;
    }
    let end = 5 + len as usize;
    if bytes.len() < end + 4 {
        return None;
    }
    let crc = u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    if crc32(&bytes[..end]) != crc {
        return None;
    }
    Some((kind, &bytes[5..end], end + 4))
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Makes a rename durable. Best effort: not every filesystem allows it.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3), as zlib computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests;
