//! The spool file: round trips through a real file in a scratch directory,
//! recovery of damaged and torn images, compaction, moving aside.

use super::*;

fn image(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = HEADER.to_vec();
    for (kind, body) in records {
        encode(&mut out, *kind, body, &[]);
    }
    out
}

fn accepted(seq: u64, payload: &[u8]) -> (u8, Vec<u8>) {
    let mut body = seq.to_le_bytes().to_vec();
    body.extend_from_slice(&1_000u64.to_le_bytes());
    body.extend_from_slice(payload);
    (KIND_ACCEPTED, body)
}

fn done(seq: u64) -> (u8, Vec<u8>) {
    (KIND_DONE, seq.to_le_bytes().to_vec())
}

/// Bytes one accepted record of `payload_len` takes.
fn accepted_len(payload_len: usize) -> usize {
    RECORD_HEAD + 16 + payload_len + 4
}

fn payloads(r: &Recovery) -> Vec<&[u8]> {
    r.live.iter().map(|l| l.payload.as_slice()).collect()
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn empty_file_and_header_only_hold_nothing() {
    assert_eq!(recover(b""), Recovery::default());
    assert_eq!(recover(HEADER), Recovery::default());
}

#[test]
fn a_foreign_file_is_damaged_from_offset_zero() {
    let r = recover(b"hello, this is not a spool");
    assert!(r.live.is_empty());
    assert_eq!(r.damaged, vec![region(0, 26)]);
}

#[test]
fn done_records_remove_their_command() {
    let r = recover(&image(&[
        accepted(1, b"a"),
        accepted(2, b"b"),
        done(1),
        accepted(3, b"c"),
    ]));
    assert_eq!(payloads(&r), vec![&b"b"[..], b"c"]);
    assert_eq!((r.damaged.len(), r.torn_tail), (0, None));
    assert_eq!(r.live[0].received, UNIX_EPOCH + Duration::from_millis(1000));
}

#[test]
fn every_truncation_of_the_last_record_is_a_torn_tail_keeping_the_others() {
    let full = image(&[accepted(1, b"{\"a\":1}"), accepted(2, b"{\"b\":2}")]);
    let last_start = HEADER.len() + accepted_len(7);
    for cut in last_start..full.len() {
        let r = recover(&full[..cut]);
        assert_eq!(payloads(&r), vec![&b"{\"a\":1}"[..]], "cut at {cut}");
        assert!(r.damaged.is_empty(), "cut at {cut}: {:?}", r.damaged);
        if cut > last_start {
            assert_eq!(r.torn_tail, Some(region(last_start, cut - last_start)));
        } else {
            assert_eq!(r.torn_tail, None);
        }
    }
}

#[test]
fn zeros_at_the_end_are_a_torn_tail() {
    let mut bytes = image(&[accepted(1, b"one")]);
    let end = bytes.len();
    bytes.extend_from_slice(&[0; 40]);
    let r = recover(&bytes);
    assert_eq!(payloads(&r), vec![&b"one"[..]]);
    assert_eq!(r.torn_tail, Some(region(end, 40)));
    assert!(r.damaged.is_empty());
}

#[test]
fn a_flipped_byte_costs_only_its_own_record() {
    let records: Vec<_> = (0..100u64)
        .map(|i| accepted(i, format!("{{\"n\":{i}}}").as_bytes()))
        .collect();
    let clean = image(&records);
    // Every byte of record 50, header and body alike.
    let start = HEADER.len()
        + records[..50]
            .iter()
            .map(|(_, b)| RECORD_HEAD + b.len() + 4)
            .sum::<usize>();
    let len = RECORD_HEAD + records[50].1.len() + 4;
    for at in start..start + len {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x40;
        let r = recover(&bytes);
        assert_eq!(r.live.len(), 99, "flip at {at}: {:?}", r.damaged);
        assert!(!r.live.iter().any(|l| l.payload == b"{\"n\":50}"));
        assert_eq!(r.damaged.len(), 1, "flip at {at}");
        assert_eq!(r.damaged[0].offset, start as u64, "flip at {at}");
        assert_eq!(r.torn_tail, None);
    }
}

#[test]
fn garbage_between_records_is_skipped() {
    let mut bytes = image(&[accepted(1, b"one")]);
    bytes.extend_from_slice(b"\xA5\x5Agarbage that looks like a start\xA5");
    let mut rest = Vec::new();
    encode_accepted(&mut rest, 2, 1000, b"two", false);
    bytes.extend_from_slice(&rest);
    let r = recover(&bytes);
    assert_eq!(payloads(&r), vec![&b"one"[..], b"two"]);
    assert_eq!(r.damaged.len(), 1);
}

#[test]
fn a_huge_length_field_is_damage_not_an_allocation() {
    let mut bytes = HEADER.to_vec();
    bytes.extend_from_slice(&SYNC);
    bytes.push(KIND_ACCEPTED);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32(&bytes[HEADER.len()..]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&[1; 64]);
    let r = recover(&bytes);
    assert!(r.live.is_empty());
    assert_eq!(r.damaged.len(), 1);
}

#[test]
fn unknown_kind_or_short_body_is_damage() {
    let r = recover(&image(&[
        accepted(1, b"ok"),
        (b'X', vec![0; 8]),
        accepted(2, b"on"),
    ]));
    assert_eq!(payloads(&r), vec![&b"ok"[..], b"on"]);
    assert_eq!(r.damaged.len(), 1);
    let r = recover(&image(&[(KIND_DONE, vec![1, 2])]));
    assert_eq!(r.damaged.len(), 1);
}

/// A file as the first version wrote it: `kind | len | body | crc`.
fn v1_image(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = HEADER_V1.to_vec();
    for (kind, body) in records {
        let start = out.len();
        out.push(*kind);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

#[test]
fn a_first_version_spool_is_still_replayed() {
    let bytes = v1_image(&[accepted(1, b"a"), accepted(2, b"b"), done(1)]);
    let r = recover(&bytes);
    assert_eq!(payloads(&r), vec![&b"b"[..]]);
    assert_eq!(r.torn_tail, None);
    let r = recover(&bytes[..bytes.len() - 3]);
    assert_eq!(payloads(&r), vec![&b"a"[..], b"b"]);
    assert!(r.torn_tail.is_some());
}
/// A live command `seq` received at `received`, not held.
fn live(seq: u64, received: SystemTime, payload: &[u8]) -> LiveCommand<'_> {
    LiveCommand {
        seq,
        received,
        payload,
        held: false,
    }
}

fn scratch(name: &str) -> PathBuf {
    crate::ops::files::scratch_dir(&format!("spool-{name}")).join("relay.spool")
}

#[test]
fn open_append_sync_and_reopen_round_trip() {
    let path = scratch("roundtrip");
    assert!(Spool::read(&path).unwrap().live.is_empty());
    let mut spool = Spool::create(&path, std::iter::empty()).unwrap();
    let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
    spool.accepted(live(0, t, b"first"));
    spool.accepted(live(1, t, b"second"));
    spool.accepted(live(2, t, b"third"));
    spool.done(1);
    spool.sync().unwrap();
    assert_eq!(spool.bytes(), std::fs::metadata(&path).unwrap().len());
    drop(spool);
    let rec = Spool::read(&path).unwrap();
    assert_eq!(payloads(&rec), vec![&b"first"[..], b"third"]);
    assert_eq!(rec.live[0].received, t);
    // Recreating keeps exactly the live commands, under new sequence numbers.
    let live = rec
        .live
        .iter()
        .enumerate()
        .map(|(i, r)| live(i as u64, r.received, &r.payload));
    let _spool = Spool::create(&path, live).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let again = recover(&bytes);
    assert_eq!(payloads(&again), vec![&b"first"[..], b"third"]);
    assert_eq!(
        bytes.len(),
        HEADER.len() + accepted_len(5) + accepted_len(5)
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["relay.spool"]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_deleted_truncated_or_replaced_file_is_noticed_at_the_next_write() {
    let path = scratch("lost");
    let now = SystemTime::now();
    for how in ["delete", "truncate", "replace"] {
        let mut spool = Spool::create(&path, std::iter::empty()).unwrap();
        spool.accepted(live(0, now, b"x"));
        spool.sync().unwrap();
        match how {
            "delete" => std::fs::remove_file(&path).unwrap(),
            "truncate" => File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(3)
                .unwrap(),
            _ => {
                std::fs::remove_file(&path).unwrap();
                std::fs::write(&path, HEADER).unwrap();
            }
        }
        spool.accepted(live(1, now, b"y"));
        match spool.sync() {
            Err(SpoolError::Lost(why)) => assert!(!why.is_empty(), "{how}"),
            other => panic!("{how}: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn moving_aside_keeps_the_newest_three() {
    let path = scratch("aside");
    let mut moved = Vec::new();
    for i in 0..5u64 {
        std::fs::write(&path, format!("damaged {i}")).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000 + i);
        let aside = Spool::move_aside(&path, Aside::Damaged, at).unwrap();
        // Distinct modification times, oldest first.
        let f = File::options().write(true).open(&aside).unwrap();
        f.set_modified(at).unwrap();
        moved.push(aside);
    }
    assert!(!path.exists());
    let kept: Vec<bool> = moved.iter().map(|p| p.exists()).collect();
    assert_eq!(kept, [false, false, true, true, true]);
    assert!(moved[4]
        .to_string_lossy()
        .ends_with("relay.spool.damaged-20261118T110644Z"));
    assert_eq!(std::fs::read_to_string(&moved[4]).unwrap(), "damaged 4");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn compaction_cuts_the_file_back_when_nothing_is_live() {
    let path = scratch("compact");
    let mut spool = Spool::create(&path, std::iter::empty()).unwrap();
    let now = SystemTime::now();
    spool.accepted(live(0, now, b"x"));
    spool.sync().unwrap();
    spool.done(0);
    assert!(spool.wants_compaction());
    spool.compact(std::iter::empty()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), HEADER);
    // Appending after the cut still yields a valid file, and is not taken for a truncation.
    spool.accepted(live(1, now, b"y"));
    spool.sync().unwrap();
    assert_eq!(
        payloads(&recover(&std::fs::read(&path).unwrap())),
        vec![&b"y"[..]]
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn compaction_rewrites_when_dead_records_pile_up() {
    let path = scratch("rewrite");
    let mut spool = Spool::create(&path, std::iter::empty()).unwrap();
    let now = SystemTime::now();
    spool.accepted(live(0, now, b"keep"));
    for seq in 1..=COMPACT_MIN_DEAD {
        spool.accepted(live(seq, now, b"gone"));
        spool.done(seq);
    }
    spool.sync().unwrap();
    assert!(spool.wants_compaction());
    spool
        .compact(std::iter::once(live(0, now, b"keep")))
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.len() < 100,
        "rewritten file holds one record, not {} bytes",
        bytes.len()
    );
    assert_eq!(payloads(&recover(&bytes)), vec![&b"keep"[..]]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn compaction_rewrites_when_a_few_large_dead_records_take_megabytes() {
    let path = scratch("rewrite-bytes");
    let mut spool = Spool::create(&path, std::iter::empty()).unwrap();
    let now = SystemTime::now();
    let big = vec![b'x'; 60 * 1024];
    spool.accepted(live(0, now, b"keep"));
    let mut seq = 1;
    while spool.bytes() < COMPACT_MIN_BYTES {
        spool.accepted(live(seq, now, &big));
        spool.done(seq);
        seq += 1;
    }
    spool.sync().unwrap();
    assert!(
        seq < COMPACT_MIN_DEAD,
        "far fewer records than the count limit"
    );
    assert!(spool.wants_compaction());
    spool
        .compact(std::iter::once(live(0, now, b"keep")))
        .unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 100);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
