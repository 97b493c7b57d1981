//! The spool file (`SPOOL_FILE`): accepted commands survive a crash, a
//! `kill -9` or a power cut. Its format, damage and trust rules are
//! PROTOCOL.md §5 ("`SPOOL_FILE`", "Safety"). Owned by the publisher thread,
//! which appends, syncs, compacts and rewrites it as the policy says; reading
//! it back ([`recover`]) is pure.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HEADER: &[u8; 12] = b"MS500SPOOL2\n";
const HEADER_V1: &[u8; 12] = b"MS500SPOOL1\n";
const SYNC: [u8; 2] = [0xA5, 0x5A];
/// Sync marker, kind, length, header checksum.
const RECORD_HEAD: usize = 2 + 1 + 4 + 4;
const KIND_ACCEPTED: u8 = b'A';
const KIND_HELD: u8 = b'H';
const KIND_DONE: u8 = b'D';
/// Rewrite only when this many dead records have piled up (and outweigh the live ones)...
const COMPACT_MIN_DEAD: u64 = 4096;
/// ...or the file is this large: 4096 dead records of 60 KiB would be
/// 240 MiB of flash, and RAM to read it back after a crash.
const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;
/// A record longer than this cannot be ours (MAX_MESSAGE_BYTES tops out at 16 MiB).
const MAX_RECORD: u32 = 32 * 1024 * 1024;
/// Files moved aside (damaged, unreadable) kept per kind; older ones are removed.
const KEEP_ASIDE: usize = 3;

/// A live command as the spool stores it (an `A` or `H` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCommand<'a> {
    /// Its place in the order of acceptance.
    pub seq: u64,
    pub received: SystemTime,
    pub payload: &'a [u8],
    /// Held for a camera that is offline (an `H` record).
    pub held: bool,
}

/// Why a spool file is moved aside, for a person to inspect, before a new
/// one is written: the word in its new name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aside {
    /// Someone else could have written it: not replayed.
    Untrusted,
    /// It could not be read: not replayed.
    Unreadable,
    /// Damaged bytes were skipped: the intact commands were replayed.
    Damaged,
}

impl Aside {
    pub fn as_str(self) -> &'static str {
        match self {
            Aside::Untrusted => "untrusted",
            Aside::Unreadable => "unreadable",
            Aside::Damaged => "damaged",
        }
    }
}

impl std::fmt::Display for Aside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One live command read back at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub received: SystemTime,
    pub payload: Vec<u8>,
    /// Held for a camera that was offline (an `H` record).
    pub held: bool,
}

/// Bytes of the file, from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

/// `len` bytes from `offset`.
fn region(offset: usize, len: usize) -> Region {
    Region {
        offset: offset as u64,
        len: len as u64,
    }
}

/// What reading an existing spool found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Live commands in acceptance order.
    pub live: Vec<Replayed>,
    /// Regions that are not records, not counting a torn tail.
    pub damaged: Vec<Region>,
    /// A last record cut short (offset, length): what a crash mid-write leaves.
    pub torn_tail: Option<Region>,
}

impl Recovery {
    /// Bytes in damaged regions.
    pub fn damaged_bytes(&self) -> u64 {
        self.damaged.iter().map(|r| r.len).sum()
    }
}

/// Why the spool could not be written.
#[derive(Debug)]
pub enum SpoolError {
    /// The file system refused (full, read-only, I/O error).
    Io(io::Error),
    /// The file was deleted, truncated or replaced under the relay: what it
    /// held is gone and must be written again from what is pending.
    Lost(String),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Io(e) => write!(f, "{e}"),
            SpoolError::Lost(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpoolError::Io(e) => Some(e),
            SpoolError::Lost(_) => None,
        }
    }
}

impl From<io::Error> for SpoolError {
    fn from(e: io::Error) -> Self {
        SpoolError::Io(e)
    }
}

pub struct Spool {
    path: PathBuf,
    file: File,
    /// (device, inode) of the open file, to notice a file replaced under us.
    identity: (u64, u64),
    /// Bytes written to the file so far (header included).
    written: u64,
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
        match crate::ops::files::open_read(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(recover(&bytes))
    }

    /// Why the file at `path` must not be replayed, when it must not: it is
    /// a symlink or not a regular file, belongs to another user, or is
    /// writable by group or others (anyone of them could have planted
    /// commands in it). None when it is trustworthy or missing.
    pub fn distrust(path: &Path) -> Option<String> {
        let stat = match crate::ops::files::entry(path) {
            Ok(stat) => stat?,
            Err(e) => return Some(format!("cannot be looked at: {e}")),
        };
        let mode = stat.mode & 0o7777;
        crate::ops::files::not_ours(&stat).or_else(|| {
            (mode & 0o022 != 0).then(|| format!("is writable by group or others (mode {mode:04o})"))
        })
    }

    /// Renames the file at `path` to `PATH.KIND-YYYYMMDDTHHMMSSZ` (for a person
    /// to inspect) and returns the new name; keeps the newest few of each kind.
    pub fn move_aside(path: &Path, kind: Aside, now: SystemTime) -> io::Result<PathBuf> {
        let (dir, name) = crate::ops::files::place(path)?;
        let stamp = crate::ops::time::compact(now);
        let named = |suffix: String| {
            let mut aside = name.to_os_string();
            aside.push(suffix);
            aside
        };
        let mut aside = named(format!(".{kind}-{stamp}"));
        let mut n = 1;
        while dir.stat(&aside).is_ok() {
            n += 1;
            aside = named(format!(".{kind}-{stamp}-{n}"));
        }
        dir.rename(name, &aside)?;
        dir.sync();
        prune_aside(&dir, name, kind.as_str());
        Ok(crate::ops::files::parent(path).join(aside))
    }

    /// Writes a fresh spool holding exactly `live`, synced, and opens it for
    /// appending. Used at start (after [`Spool::read`]), by compaction, and
    /// to rewrite a spool that was lost or could not be written for a while.
    pub fn create<'a>(
        path: &Path,
        live: impl Iterator<Item = LiveCommand<'a>>,
    ) -> io::Result<Spool> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(HEADER);
        let mut count = 0;
        for c in live {
            encode_accepted(&mut out, c.seq, unix_ms(c.received), c.payload, c.held);
            count += 1;
        }
        crate::ops::files::replace_synced(path, &out, crate::ops::files::SPOOL_MODE)?;
        let file = crate::ops::files::open_append(path)?;
        let meta = file.metadata()?;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            identity: (meta.dev(), meta.ino()),
            written: out.len() as u64,
            buf: Vec::with_capacity(64 * 1024),
            unsynced: false,
            live: count,
            dead: 0,
        })
    }

    /// Size of the file once what is queued is written.
    pub fn bytes(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Queues an accepted command; durable after the next [`Spool::sync`].
    pub fn accepted(&mut self, c: LiveCommand<'_>) {
        encode_accepted(&mut self.buf, c.seq, unix_ms(c.received), c.payload, c.held);
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
    /// First checks that the file is still the one written so far.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.buf.is_empty() && !self.unsynced {
            return Ok(());
        }
        self.check_intact()?;
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// The file is still there under its name, holds at least what was
    /// written, and is the very file we opened.
    fn check_intact(&self) -> Result<(), SpoolError> {
        let meta = self.file.metadata()?;
        if meta.nlink() == 0 {
            return Err(SpoolError::Lost("the file was deleted".into()));
        }
        if meta.len() < self.written {
            return Err(SpoolError::Lost(format!(
                "the file was truncated to {} bytes (the relay had written {})",
                meta.len(),
                self.written
            )));
        }
        match std::fs::metadata(&self.path) {
            Ok(at_path) if (at_path.dev(), at_path.ino()) == self.identity => Ok(()),
            Ok(_) => Err(SpoolError::Lost(
                "the file was replaced by another one".into(),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SpoolError::Lost("the file was moved away".into()))
            }
            Err(e) => Err(SpoolError::Io(e)),
        }
    }

    /// Keeps the file small: cut back to the header when nothing is live,
    /// rewrite when dead records outweigh live ones. `live` lists what is live now.
    pub fn compact<'a>(
        &mut self,
        live: impl Iterator<Item = LiveCommand<'a>>,
    ) -> Result<(), SpoolError> {
        if self.live == 0 && self.dead > 0 {
            self.sync()?;
            self.file.set_len(HEADER.len() as u64)?;
            self.file.sync_data()?;
            self.written = HEADER.len() as u64;
            self.dead = 0;
        } else if self.rewrite_due() {
            self.sync()?;
            *self = Spool::create(&self.path, live)?;
        }
        Ok(())
    }

    /// True when there is something to compact away.
    pub fn wants_compaction(&self) -> bool {
        (self.live == 0 && self.dead > 0) || self.rewrite_due()
    }

    /// Dead records outweigh live ones, and there are many of them or
    /// they take room.
    fn rewrite_due(&self) -> bool {
        self.dead > self.live
            && (self.dead >= COMPACT_MIN_DEAD || self.bytes() >= COMPACT_MIN_BYTES)
    }
}

fn encode_accepted(out: &mut Vec<u8>, seq: u64, unix_ms: u64, payload: &[u8], held: bool) {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..].copy_from_slice(&unix_ms.to_le_bytes());
    let kind = if held { KIND_HELD } else { KIND_ACCEPTED };
    encode(out, kind, &head, payload);
}

fn encode(out: &mut Vec<u8>, kind: u8, head: &[u8], rest: &[u8]) {
    let len = (head.len() + rest.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&SYNC);
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    let head_crc = crc32(&out[start..]);
    out.extend_from_slice(&head_crc.to_le_bytes());
    let body = out.len();
    out.extend_from_slice(head);
    out.extend_from_slice(rest);
    let body_crc = crc32(&out[body..]);
    out.extend_from_slice(&body_crc.to_le_bytes());
}

/// What one position of a spool image holds.
enum At<'a> {
    /// A whole record: (kind, body, bytes used).
    Record(u8, &'a [u8], usize),
    /// The start of a record that the image ends before.
    Short,
    /// Not a record.
    Bad,
}

fn decode(bytes: &[u8]) -> At<'_> {
    if bytes.len() < RECORD_HEAD {
        // Only the start of a record (or nothing that could be one).
        let could_be = bytes.iter().zip(SYNC).all(|(a, b)| *a == b);
        return if could_be { At::Short } else { At::Bad };
    }
    if bytes[..2] != SYNC {
        return At::Bad;
    }
    let head_crc = le_u32(&bytes[7..11]);
    if crc32(&bytes[..7]) != head_crc {
        return At::Bad;
    }
    let kind = bytes[2];
    let len = le_u32(&bytes[3..7]);
    let plausible = match kind {
        KIND_ACCEPTED | KIND_HELD => (16..=MAX_RECORD).contains(&len),
        KIND_DONE => len == 8,
        _ => false,
    };
    if !plausible {
        return At::Bad;
    }
    let end = RECORD_HEAD + len as usize;
    if bytes.len() < end + 4 {
        return At::Short;
    }
    if crc32(&bytes[RECORD_HEAD..end]) != le_u32(&bytes[end..end + 4]) {
        return At::Bad;
    }
    At::Record(kind, &bytes[RECORD_HEAD..end], end + 4)
}

/// Reads a spool image: live commands in acceptance order, what was damaged
/// and whether the last record was torn.
pub fn recover(bytes: &[u8]) -> Recovery {
    let mut recovery = Recovery::default();
    if bytes.is_empty() {
        return recovery;
    }
    if bytes.len() >= HEADER_V1.len() && &bytes[..HEADER_V1.len()] == HEADER_V1 {
        return recover_v1(bytes);
    }
    if bytes.len() < HEADER.len() || &bytes[..HEADER.len()] != HEADER {
        recovery.damaged.push(region(0, bytes.len()));
        return recovery;
    }
    let mut live: BTreeMap<u64, Replayed> = BTreeMap::new();
    let mut pos = HEADER.len();
    // Start of the run of bytes that are not records, while in one.
    let mut bad_since: Option<usize> = None;
    while pos < bytes.len() {
        match decode(&bytes[pos..]) {
            At::Record(kind, body, used) => {
                if let Some(start) = bad_since.take() {
                    recovery.damaged.push(region(start, pos - start));
                }
                apply(&mut live, kind, body);
                pos += used;
            }
            At::Short if bad_since.is_none() => {
                recovery.torn_tail = Some(region(pos, bytes.len() - pos));
                pos = bytes.len();
            }
            At::Short | At::Bad => {
                bad_since.get_or_insert(pos);
                pos = next_sync(bytes, pos + 1);
            }
        }
    }
    if let Some(start) = bad_since {
        let tail = &bytes[start..];
        // Zeros where the last write should be: the file's size reached the
        // disk before its data did (a power cut). Torn, not damaged.
        if tail.iter().all(|&b| b == 0) {
            recovery.torn_tail = Some(region(start, tail.len()));
        } else {
            recovery.damaged.push(region(start, tail.len()));
        }
    }
    recovery.live = live.into_values().collect();
    recovery
}

fn apply(live: &mut BTreeMap<u64, Replayed>, kind: u8, body: &[u8]) {
    match kind {
        KIND_ACCEPTED | KIND_HELD => {
            live.insert(
                le_u64(&body[..8]),
                Replayed {
                    received: UNIX_EPOCH + Duration::from_millis(le_u64(&body[8..16])),
                    payload: body[16..].to_vec(),
                    held: kind == KIND_HELD,
                },
            );
        }
        _ => {
            live.remove(&le_u64(body));
        }
    }
}

/// The next position at or after `from` where a sync marker starts (or the end).
fn next_sync(bytes: &[u8], from: usize) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.windows(2).position(|w| w == SYNC))
        .map_or(bytes.len(), |i| from + i)
}

/// The first version's format: `kind | len | body | crc`, no way to find the
/// next record after a bad one, so reading stops there.
fn recover_v1(bytes: &[u8]) -> Recovery {
    let mut recovery = Recovery::default();
    let mut live = BTreeMap::new();
    let mut pos = HEADER_V1.len();
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let record = (|| {
            let kind = *rest.first()?;
            let len = le_u32(rest.get(1..5)?);
            let end = 5usize.checked_add(usize::try_from(len).ok()?)?;
            let crc = le_u32(rest.get(end..end.checked_add(4)?)?);
            let ok = len <= MAX_RECORD
                && crc32(&rest[..end]) == crc
                && matches!((kind, len), (KIND_ACCEPTED, 16..) | (KIND_DONE, 8));
            ok.then(|| (kind, &rest[5..end], end + 4))
        })();
        match record {
            Some((kind, body, used)) => {
                apply(&mut live, kind, body);
                pos += used;
            }
            None => {
                recovery.torn_tail = Some(region(pos, rest.len()));
                break;
            }
        }
    }
    recovery.live = live.into_values().collect();
    recovery
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
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

/// Removes all but the newest [`KEEP_ASIDE`] files moved aside as `kind`
/// next to `name` in `dir`.
fn prune_aside(dir: &crate::ops::dirs::Dir, name: &std::ffi::OsStr, kind: &str) {
    let mut prefix = name.to_os_string();
    prefix.push(format!(".{kind}-"));
    let prefix = prefix.as_encoded_bytes();
    let Ok(names) = dir.names() else {
        return;
    };
    // By the time of each (a symlink's own: a planted link moved aside is
    // pruned like the rest).
    let mut aside: Vec<((i64, i64), std::ffi::OsString)> = names
        .into_iter()
        .filter(|n| n.as_encoded_bytes().starts_with(prefix))
        .filter_map(|n| Some((dir.stat(&n).ok()?.modified, n)))
        .collect();
    aside.sort();
    let excess = aside.len().saturating_sub(KEEP_ASIDE);
    for (_, old) in aside.into_iter().take(excess) {
        let _ = dir.remove(&old);
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
