//! The few MQTT 3.1.1 packets the publish link exchanges with a broker:
//! CONNECT/CONNACK, PUBLISH/PUBACK, PINGREQ/PINGRESP and DISCONNECT. Pure:
//! packets are encoded into a caller's buffer (many PUBLISHes into one, to
//! be written at once) and decoded from the bytes read so far. Used by the
//! publish link thread (reading) and the publisher thread (writing).
//!
//! The publish link subscribes to nothing, so a broker has no reason to
//! send it anything else; what it sends anyway is skipped by length.

use std::fmt;

/// Largest packet the publish link accepts from a broker: it only expects
/// CONNACK, PUBACK and PINGRESP (4 bytes each).
pub const MAX_INCOMING: usize = 64 * 1024;

/// The packet id of the relay's own state messages (STATE_TOPIC), which the
/// delivery ledger never gives a command.
pub const STATE_PKID: u16 = u16::MAX;

const CONNECT: u8 = 0x10;
const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const PUBACK: u8 = 0x40;
const PINGREQ: u8 = 0xC0;
const PINGRESP: u8 = 0xD0;
const DISCONNECT: u8 = 0xE0;

/// What the CONNECT packet carries.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub keepalive_secs: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Last will: (topic, message), published retained at QoS 1 by the
    /// broker when the connection dies without a DISCONNECT.
    pub will: Option<(&'a str, &'a [u8])>,
}

/// Appends CONNECT (clean session: the relay keeps its own ledger).
pub fn connect(out: &mut Vec<u8>, c: &Connect<'_>) {
    let mut flags = 0x02;
    let mut body = Vec::with_capacity(64);
    push_str(&mut body, b"MQTT");
    body.push(4);
    if c.will.is_some() {
        flags |= 0x04 | (1 << 3) | 0x20;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&c.keepalive_secs.to_be_bytes());
    push_str(&mut body, c.client_id.as_bytes());
    if let Some((topic, message)) = c.will {
        push_str(&mut body, topic.as_bytes());
        push_str(&mut body, message);
    }
    if let Some(user) = c.username {
        push_str(&mut body, user.as_bytes());
    }
    if let Some(password) = c.password {
        push_str(&mut body, password.as_bytes());
    }
    header(out, CONNECT, body.len());
    out.extend_from_slice(&body);
}

/// Appends PUBLISH; `pkid` is `Some` for QoS 1 (and `None` for QoS 0).
pub fn publish(out: &mut Vec<u8>, topic: &str, pkid: Option<u16>, retain: bool, payload: &[u8]) {
    let mut first = PUBLISH;
    if pkid.is_some() {
        first |= 1 << 1;
    }
    if retain {
        first |= 0x01;
    }
    let len = 2 + topic.len() + if pkid.is_some() { 2 } else { 0 } + payload.len();
    header(out, first, len);
    push_str(out, topic.as_bytes());
    if let Some(id) = pkid {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

pub fn pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[PINGREQ, 0]);
}

pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[DISCONNECT, 0]);
}

/// A packet from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    ConnAck {
        session_present: bool,
        code: u8,
    },
    PubAck(u16),
    PingResp,
    /// Anything else (skipped).
    Other(u8),
}

/// Why bytes from the broker are not MQTT the publish link can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining-length field runs past four bytes.
    BadLength,
    /// Larger than [`MAX_INCOMING`].
    TooLarge(usize),
    /// A CONNACK or PUBACK of the wrong size.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadLength => f.write_str("malformed packet length from the broker"),
            DecodeError::TooLarge(n) => write!(
                f,
                "a {n}-byte packet from the broker (at most {MAX_INCOMING})"
            ),
            DecodeError::Malformed(what) => write!(f, "malformed {what} from the broker"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the packet at the start of `bytes`: `Ok(None)` when more bytes
/// are needed, else the packet and the bytes it took.
pub fn decode(bytes: &[u8]) -> Result<Option<(Incoming, usize)>, DecodeError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let Some(&b) = bytes.get(at) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << (7 * (at - 1));
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(DecodeError::BadLength);
        }
    }
    if len > MAX_INCOMING {
        return Err(DecodeError::TooLarge(len));
    }
    let Some(body) = bytes.get(at..at + len) else {
        return Ok(None);
    };
    let packet = match first & 0xF0 {
        CONNACK if len == 2 => Incoming::ConnAck {
            session_present: body[0] & 1 == 1,
            code: body[1],
        },
        CONNACK => return Err(DecodeError::Malformed("CONNACK")),
        PUBACK if len == 2 => Incoming::PubAck(u16::from_be_bytes([body[0], body[1]])),
        PUBACK => return Err(DecodeError::Malformed("PUBACK")),
        PINGRESP => Incoming::PingResp,
        other => Incoming::Other(other >> 4),
    };
    Ok(Some((packet, at + len)))
}

/// Why a broker refused a connection (CONNACK return codes of MQTT 3.1.1).
pub fn refusal(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "client id rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "refused",
    }
}

fn header(out: &mut Vec<u8>, first: u8, mut len: usize) {
    out.push(first);
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    // MQTT strings are at most 65535 bytes; topics and ids are far shorter
    // (config keeps them so), and a longer one is cut rather than mis-framed.
    let len = s.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_with_credentials_and_will() {
        let mut out = Vec::new();
        connect(
            &mut out,
            &Connect {
                client_id: "relay",
                keepalive_secs: 60,
                username: Some("u"),
                password: Some("p"),
                will: Some(("t", b"off")),
            },
        );
        assert_eq!(
            out,
            [
                0x10, 31, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xEE, 0, 60, 0, 5, b'r', b'e', b'l',
                b'a', b'y', 0, 1, b't', 0, 3, b'o', b'f', b'f', 0, 1, b'u', 0, 1, b'p'
            ]
        );
    }

    #[test]
    fn bare_connect_asks_for_a_clean_session() {
        let mut out = Vec::new();
        connect(
            &mut out,
            &Connect {
                client_id: "c",
                keepalive_secs: 5,
                username: None,
                password: None,
                will: None,
            },
        );
        assert_eq!(out[9], 0x02, "clean session, nothing else");
    }

    #[test]
    fn publish_qos1_and_qos0() {
        let mut out = Vec::new();
        publish(&mut out, "a/b", Some(0x0102), false, b"{}");
        assert_eq!(out, [0x32, 9, 0, 3, b'a', b'/', b'b', 1, 2, b'{', b'}']);
        out.clear();
        publish(&mut out, "a", None, true, b"x");
        assert_eq!(out, [0x31, 4, 0, 1, b'a', b'x']);
    }

    #[test]
    fn remaining_length_uses_as_many_bytes_as_needed() {
        for (payload, len_bytes) in [(100, 1), (200, 2), (20_000, 3), (3_000_000, 4)] {
            let mut out = Vec::new();
            publish(&mut out, "t", Some(1), false, &vec![b'x'; payload]);
            assert_eq!(out.len(), 1 + len_bytes + 2 + 1 + 2 + payload, "{payload}");
        }
        let mut out = Vec::new();
        header(&mut out, PUBLISH, 321);
        assert_eq!(out, [0x30, 0xC1, 0x02]);
    }

    #[test]
    fn decodes_what_a_broker_sends_the_publish_link() {
        assert_eq!(
            decode(&[0x20, 2, 0, 0]),
            Ok(Some((
                Incoming::ConnAck {
                    session_present: false,
                    code: 0
                },
                4
            )))
        );
        assert_eq!(
            decode(&[0x20, 2, 1, 5, 0xFF]),
            Ok(Some((
                Incoming::ConnAck {
                    session_present: true,
                    code: 5
                },
                4
            )))
        );
        assert_eq!(
            decode(&[0x40, 2, 0x12, 0x34]),
            Ok(Some((Incoming::PubAck(0x1234), 4)))
        );
        assert_eq!(decode(&[0xD0, 0]), Ok(Some((Incoming::PingResp, 2))));
        assert_eq!(
            decode(&[0x90, 3, 0, 1, 0]),
            Ok(Some((Incoming::Other(9), 5)))
        );
    }

    #[test]
    fn partial_packets_wait_for_more_bytes() {
        let whole = [0x40, 2, 0, 7];
        for cut in 0..whole.len() {
            assert_eq!(decode(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode(&[0x30, 0x80]), Ok(None));
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::BadLength)
        );
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::TooLarge(268_435_455))
        );
        assert_eq!(
            decode(&[0x40, 3, 0, 1, 2]),
            Err(DecodeError::Malformed("PUBACK"))
        );
        assert_eq!(
            decode(&[0x20, 1, 0]),
            Err(DecodeError::Malformed("CONNACK"))
        );
    }
}
