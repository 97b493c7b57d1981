//! Fuzzes `mqtt::decode`, the publish link's reader of what a broker sends.
//!
//! Input: the bytes a broker sent. Byte 0 also seeds the chunk sizes of the
//! streamed read (the whole input is the stream).
//!
//! Invariants (any violation panics):
//! * The framing is rumqttc's (`mqttbytes::check` with the same limit, the
//!   independent oracle): "more bytes needed" exactly when rumqttc wants
//!   more, `BadLength` exactly when it finds a malformed remaining length,
//!   `TooLarge(n)` exactly when it refuses `n` bytes, and a decoded packet
//!   takes exactly rumqttc's frame length.
//! * A decoded packet is what rumqttc's `Packet::read` makes of the same
//!   bytes: CONNACK (return codes 0-5; rumqttc refuses others), PUBACK with
//!   the same packet id, PINGRESP; `Other(t)` carries the packet type and
//!   is none of those three. `Malformed` is only for a CONNACK or PUBACK
//!   whose remaining length is not 2.
//! * A result depends only on the bytes it took: every shorter prefix of a
//!   decoded packet needs more bytes, the packet alone decodes the same, and
//!   so does the input with bytes appended; an error stays the same error
//!   with bytes appended.
//! * Read as the publish link reads (append what arrived, decode what is
//!   whole, drain), the input gives the same packets and the same end
//!   (error, or bytes left waiting) whether it arrives at once, in
//!   pseudo-random chunks or byte by byte.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ms500_relay::mqtt::{decode, DecodeError, Incoming, MAX_INCOMING};
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::{check, Error};

/// What one call of `decode` said, owned.
type Decoded = Result<Option<(Incoming, usize)>, DecodeError>;

fn same_framing_as_rumqttc(bytes: &[u8], ours: &Decoded) {
    let theirs = check(bytes.iter(), MAX_INCOMING);
    match (ours, &theirs) {
        (Ok(None), Err(Error::InsufficientBytes(_))) => {}
        (Err(DecodeError::BadLength), Err(Error::MalformedRemainingLength)) => {}
        (Err(DecodeError::TooLarge(n)), Err(Error::PayloadSizeLimitExceeded(m))) if n == m => {}
        (Ok(Some((_, used))), Ok(header)) => {
            assert_eq!(*used, header.frame_length(), "frame length");
        }
        (Err(DecodeError::Malformed(_)), Ok(_)) => {}
        _ => panic!("decode {ours:?}, rumqttc check {theirs:?}"),
    }
}

/// The packet rumqttc reads from the same bytes, compared with ours.
fn same_packet_as_rumqttc(bytes: &[u8], ours: &Decoded) {
    let first = bytes.first().copied().unwrap_or(0);
    let theirs = Packet::read(&mut BytesMut::from(bytes), MAX_INCOMING);
    match (ours, &theirs) {
        (
            Ok(Some((
                Incoming::ConnAck {
                    session_present,
                    code,
                },
                _,
            ))),
            Ok(Packet::ConnAck(ack)),
        ) => {
            assert_eq!(*session_present, ack.session_present, "session present");
            assert_eq!(*code, ack.code as u8, "CONNACK code");
        }
        (
            Ok(Some((Incoming::ConnAck { code, .. }, _))),
            Err(Error::InvalidConnectReturnCode(c)),
        ) => {
            assert!(*code > 5 && code == c, "CONNACK code {code} refused as {c}");
        }
        (Ok(Some((Incoming::PubAck(pkid), _))), Ok(Packet::PubAck(ack))) => {
            assert_eq!(*pkid, ack.pkid, "PUBACK packet id");
        }
        (Ok(Some((Incoming::PingResp, _))), Ok(Packet::PingResp)) => {}
        (Ok(Some((Incoming::Other(kind), _))), _) => {
            assert_eq!(*kind, first >> 4, "packet type");
            assert!(!matches!(kind, 2 | 4 | 13), "{kind} is not another packet");
        }
        (Err(DecodeError::Malformed(what)), _) => {
            let (kind, len) = match *what {
                "CONNACK" => (2, 2),
                "PUBACK" => (4, 2),
                other => panic!("Malformed({other})"),
            };
            assert_eq!(first >> 4, kind, "{what}");
            let header = check(bytes.iter(), MAX_INCOMING).expect("framed");
            assert_ne!(header.frame_length() - header_len(bytes), len, "{what}");
        }
        (Ok(Some(_)), _) => panic!("decode {ours:?}, rumqttc {theirs:?}"),
        _ => {}
    }
}

/// Bytes of the fixed header of a framed packet.
fn header_len(bytes: &[u8]) -> usize {
    2 + bytes[1..].iter().take_while(|b| *b & 0x80 != 0).count()
}

fn depends_only_on_what_it_took(bytes: &[u8], ours: &Decoded) {
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&[0x40, 0x02, 0, 1, 0xFF]);
    match ours {
        Ok(Some((_, used))) => {
            assert!(
                *used >= 2 && *used <= bytes.len(),
                "took {used} of {}",
                bytes.len()
            );
            for cut in 0..*used {
                assert_eq!(decode(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
            }
            assert_eq!(&decode(&bytes[..*used]), ours, "the packet alone");
            assert_eq!(&decode(&longer), ours, "with bytes appended");
        }
        Ok(None) => {}
        Err(_) => assert_eq!(&decode(&longer), ours, "with bytes appended"),
    }
}

/// What the publish link makes of `stream` arriving in `chunks`: the
/// packets, then the error or the bytes left waiting.
fn read_as_the_link_does(
    stream: &[u8],
    chunks: impl Iterator<Item = usize>,
) -> (Vec<Incoming>, Result<usize, DecodeError>) {
    let mut pending = Vec::new();
    let mut packets = Vec::new();
    let mut at = 0;
    for size in chunks {
        let end = (at + size).min(stream.len());
        pending.extend_from_slice(&stream[at..end]);
        at = end;
        let mut used = 0;
        loop {
            match decode(&pending[used..]) {
                Ok(Some((packet, len))) => {
                    packets.push(packet);
                    used += len;
                }
                Ok(None) => break,
                Err(e) => return (packets, Err(e)),
            }
        }
        pending.drain(..used);
        if at == stream.len() {
            break;
        }
    }
    (packets, Ok(pending.len()))
}

/// Chunk sizes 0..=16 from a small linear congruential generator.
fn chunk_sizes(seed: u8) -> impl Iterator<Item = usize> {
    let mut state = u32::from(seed) | 1;
    std::iter::repeat_with(move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((state >> 16) % 17) as usize
    })
}

fuzz_target!(|data: &[u8]| {
    let ours = decode(data);
    same_framing_as_rumqttc(data, &ours);
    same_packet_as_rumqttc(data, &ours);
    depends_only_on_what_it_took(data, &ours);

    let whole = read_as_the_link_does(data, std::iter::once(data.len().max(1)));
    let seed = data.first().copied().unwrap_or(0);
    assert_eq!(
        read_as_the_link_does(data, chunk_sizes(seed)),
        whole,
        "in chunks"
    );
    assert_eq!(
        read_as_the_link_does(data, std::iter::repeat(1)),
        whole,
        "byte by byte"
    );
});
