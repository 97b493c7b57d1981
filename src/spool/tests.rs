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
    assert_eq!(r.damaged, Some((0, 26)));
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
    assert_eq!(r.damaged, None);
    assert_eq!(r.live[0].received, UNIX_EPOCH + Duration::from_millis(1000));
}

#[test]
fn every_truncation_of_the_last_record_keeps_the_intact_ones() {
    let full = image(&[accepted(1, b"{\"a\":1}"), accepted(2, b"{\"b\":2}")]);
    let last_start = HEADER.len() + 5 + 16 + 7 + 4;
    for cut in last_start..full.len() {
        let r = recover(&full[..cut]);
        assert_eq!(payloads(&r), vec![&b"{\"a\":1}"[..]], "cut at {cut}");
        if cut > last_start {
            assert_eq!(
                r.damaged,
                Some((last_start as u64, (cut - last_start) as u64))
            );
        } else {
            assert_eq!(r.damaged, None);
        }
    }
}

#[test]
fn a_flipped_byte_stops_recovery_at_that_record() {
    let mut bytes = image(&[
        accepted(1, b"one"),
        accepted(2, b"two"),
        accepted(3, b"three"),
    ]);
    let second = HEADER.len() + 5 + 16 + 3 + 4;
    bytes[second + 10] ^= 0x40;
    let r = recover(&bytes);
    assert_eq!(payloads(&r), vec![&b"one"[..]]);
    assert_eq!(r.damaged.map(|d| d.0), Some(second as u64));
}

#[test]
fn a_huge_length_field_is_damage_not_an_allocation() {
    let mut bytes = HEADER.to_vec();
    bytes.push(KIND_ACCEPTED);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let r = recover(&bytes);
    assert!(r.live.is_empty());
    assert!(r.damaged.is_some());
}

#[test]
fn unknown_kind_or_short_body_is_damage() {
    let r = recover(&image(&[accepted(1, b"ok"), (b'X', vec![0; 8])]));
    assert_eq!(payloads(&r), vec![&b"ok"[..]]);
    assert!(r.damaged.is_some());
    let r = recover(&image(&[(KIND_DONE, vec![1, 2])]));
    assert!(r.damaged.is_some());
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ms500-spool-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("relay.spool")
}

#[test]
fn open_append_sync_and_reopen_round_trip() {
    let path = scratch("roundtrip");
    assert!(Spool::read(&path).unwrap().live.is_empty());
    let mut spool = Spool::create(&path, std::iter::empty()).unwrap();
    let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
    spool.accepted(0, t, b"first");
    spool.accepted(1, t, b"second");
    spool.accepted(2, t, b"third");
    spool.done(1);
    spool.sync().unwrap();
    drop(spool);
    let rec = Spool::read(&path).unwrap();
    assert_eq!(payloads(&rec), vec![&b"first"[..], b"third"]);
    assert_eq!(rec.live[0].received, t);
    // Recreating keeps exactly the live commands, under new sequence numbers.
    let live = rec
        .live
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64, r.received, r.payload.as_slice()));
    let _spool = Spool::create(&path, live).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let again = recover(&bytes);
    assert_eq!(payloads(&again), vec![&b"first"[..], b"third"]);
    assert_eq!(bytes.len(), HEADER.len() + 2 * (5 + 16 + 4) + 5 + 5);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn compaction_cuts_the_file_back_when_nothing_is_live() {
    let path = scratch("compact");
    let mut spool = Spool::create(&path, std::iter::empty()).unwrap();
    let now = SystemTime::now();
    spool.accepted(0, now, b"x");
    spool.sync().unwrap();
    spool.done(0);
    assert!(spool.wants_compaction());
    spool.compact(std::iter::empty()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), HEADER);
    // Appending after the cut still yields a valid file.
    spool.accepted(1, now, b"y");
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
    spool.accepted(0, now, b"keep");
    for seq in 1..=COMPACT_MIN_DEAD {
        spool.accepted(seq, now, b"gone");
        spool.done(seq);
    }
    spool.sync().unwrap();
    assert!(spool.wants_compaction());
    spool
        .compact(std::iter::once((0, now, &b"keep"[..])))
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
