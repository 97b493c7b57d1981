//! The few MQTT 3.1.1 packets the publish link exchanges with a broker:
//! CONNECT/CONNACK, PUBLISH/PUBACK, PINGREQ/PINGRESP and DISCONNECT, encoded
//! into a caller's buffer within the standard's bounds and decoded from the
//! bytes read so far. Pure; used by the publish link (reading) and the
//! publisher (writing).

use std::fmt;

/// Largest packet the publish link accepts from a broker: it only expects
/// CONNACK, PUBACK and PINGRESP (4 bytes each).
pub const MAX_INCOMING: usize = 64 * 1024;

/// Longest MQTT string: its length is a two-byte prefix (MQTT 3.1.1 §1.5.3).
pub const MAX_STRING: usize = u16::MAX as usize;

/// Largest remaining length four length bytes can say (MQTT 3.1.1 §2.2.3).
pub const MAX_REMAINING: usize = 268_435_455;

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
    /// Only with a user name (MQTT 3.1.1 §3.1.2.9).
    pub password: Option<&'a str>,
    /// Last will: (topic, message), published retained at QoS 1 by the
    /// broker when the connection dies without a DISCONNECT.
    pub will: Option<(&'a str, &'a [u8])>,
}

/// Why a packet cannot be encoded; nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A string field longer than [`MAX_STRING`] bytes: its name and length.
    StringTooLong { field: &'static str, len: usize },
    /// A remaining length over [`MAX_REMAINING`].
    PacketTooLarge(usize),
    /// A QoS 1 PUBLISH needs a non-zero packet id.
    PacketIdZero,
    /// A password without a user name.
    PasswordWithoutUserName,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::StringTooLong { field, len } => write!(
                f,
                "the {field} is {len} bytes, more than the {MAX_STRING} an MQTT string can hold"
            ),
            EncodeError::PacketTooLarge(len) => write!(
                f,
                "a packet of {len} bytes after its header, more than the {MAX_REMAINING} MQTT allows"
            ),
            EncodeError::PacketIdZero => f.write_str("a QoS 1 PUBLISH with packet id 0"),
            EncodeError::PasswordWithoutUserName => {
                f.write_str("a password without a user name")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Appends CONNECT (clean session: the relay keeps its own ledger).
pub fn connect(out: &mut Vec<u8>, c: &Connect<'_>) -> Result<(), EncodeError> {
    if c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::PasswordWithoutUserName);
    }
    let mut flags = 0x02;
    let mut body = Vec::with_capacity(64);
    push_str(&mut body, "protocol name", b"MQTT")?;
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
    push_str(&mut body, "client id", c.client_id.as_bytes())?;
    if let Some((topic, message)) = c.will {
        push_str(&mut body, "will topic", topic.as_bytes())?;
        push_str(&mut body, "will message", message)?;
    }
    if let Some(user) = c.username {
        push_str(&mut body, "user name", user.as_bytes())?;
    }
    if let Some(password) = c.password {
        push_str(&mut body, "password", password.as_bytes())?;
    }
    header(out, CONNECT, body.len())?;
    out.extend_from_slice(&body);
    Ok(())
}

/// Appends PUBLISH; `pkid` is `Some` for QoS 1 (and `None` for QoS 0).
pub fn publish(
    out: &mut Vec<u8>,
    topic: &str,
    pkid: Option<u16>,
    retain: bool,
    payload: &[u8],
) -> Result<(), EncodeError> {
    let topic_len = string_len("topic", topic.as_bytes())?;
    if pkid == Some(0) {
        return Err(EncodeError::PacketIdZero);
    }
    let mut first = PUBLISH;
    if pkid.is_some() {
        first |= 1 << 1;
    }
    if retain {
        first |= 0x01;
    }
    let pkid_len = if pkid.is_some() { 2 } else { 0 };
    // A payload is at most isize::MAX bytes, so this cannot overflow.
    let len = 2 + topic.len() + pkid_len + payload.len();
    header(out, first, len)?;
    out.extend_from_slice(&topic_len);
    out.extend_from_slice(topic.as_bytes());
    if let Some(id) = pkid {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(())
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

/// Appends the fixed header; refuses a remaining length MQTT cannot say,
/// before appending anything.
fn header(out: &mut Vec<u8>, first: u8, len: usize) -> Result<(), EncodeError> {
    if len > MAX_REMAINING {
        return Err(EncodeError::PacketTooLarge(len));
    }
    out.push(first);
    let mut rest = len;
    loop {
        let mut b = (rest % 128) as u8;
        rest /= 128;
        if rest > 0 {
            b |= 0x80;
        }
        out.push(b);
        if rest == 0 {
            return Ok(());
        }
    }
}

/// The two-byte length prefix of an MQTT string, or why `s` cannot be one.
fn string_len(field: &'static str, s: &[u8]) -> Result<[u8; 2], EncodeError> {
    u16::try_from(s.len())
        .map(u16::to_be_bytes)
        .map_err(|_| EncodeError::StringTooLong {
            field,
            len: s.len(),
        })
}

/// Appends `s` as an MQTT string; a longer one is refused, never cut.
fn push_str(out: &mut Vec<u8>, field: &'static str, s: &[u8]) -> Result<(), EncodeError> {
    out.extend_from_slice(&string_len(field, s)?);
    out.extend_from_slice(s);
    Ok(())
}

#[cfg(test)]
mod tests;
