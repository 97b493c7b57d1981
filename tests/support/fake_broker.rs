//! A small scriptable MQTT broker for the misbehaving-broker cases a real
//! broker cannot be made to show (issue 21): it speaks just enough of MQTT
//! 3.1.1 and 5 to take the relay's connections, and misbehaves as its
//! [`Script`] says. Each connection runs on its own thread; what the relay
//! published is kept for the test to read. Normal paths are tested against
//! a real mosquitto, never against this.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the fake broker misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Script {
    /// Answers every CONNECT with the start of a CONNACK, then one byte
    /// every 200 ms for as long as the client stays.
    Trickle,
    /// A working broker, except that it never acknowledges the `n`th
    /// QoS 1 PUBLISH (0-based, counted over all connections).
    WithholdPuback(usize),
    /// Accepts every connection and acknowledges no PUBLISH at all.
    NoPuback,
    /// A working broker that never answers a SUBSCRIBE.
    NoSuback,
    /// Refuses an MQTT 5 CONNECT ("unsupported protocol version") and
    /// works on MQTT 3.1.1.
    Only311,
}

/// What the fake broker saw.
#[derive(Default)]
pub struct Seen {
    /// Payloads of the PUBLISH packets of client ids ending in `-pub`, in order.
    pub published: Mutex<Vec<Vec<u8>>>,
    /// CONNECTs taken, by protocol level.
    pub connects: Mutex<Vec<u8>>,
    publishes: AtomicUsize,
}

pub struct FakeBroker {
    pub port: u16,
    pub seen: Arc<Seen>,
    closed: Arc<AtomicBool>,
}

impl FakeBroker {
    pub fn start(script: Script) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let seen = Arc::new(Seen::default());
        let closed = Arc::new(AtomicBool::new(false));
        let (s, c) = (Arc::clone(&seen), Arc::clone(&closed));
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                if c.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(socket) = socket else { continue };
                let (s, c) = (Arc::clone(&s), Arc::clone(&c));
                std::thread::spawn(move || serve(socket, script, &s, &c));
            }
        });
        FakeBroker { port, seen, closed }
    }

    pub fn published(&self) -> Vec<Vec<u8>> {
        self.seen.published.lock().unwrap().clone()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One packet: its first byte and its body.
fn read_packet(socket: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    socket.read_exact(&mut first).ok()?;
    let mut len = 0usize;
    for shift in 0..4 {
        let mut b = [0u8; 1];
        socket.read_exact(&mut b).ok()?;
        len |= usize::from(b[0] & 0x7F) << (7 * shift);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

fn string_at(body: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    Some((body.get(at + 2..at + 2 + len)?, at + 2 + len))
}

fn serve(mut socket: TcpStream, script: Script, seen: &Seen, closed: &AtomicBool) {
    // Blocking reads: a connection ends when its client closes it.
    let Some((0x10, connect)) = read_packet(&mut socket) else {
        return;
    };
    let level = connect.get(6).copied().unwrap_or(0);
    let v5 = level == 5;
    let client_id = connect_client_id(&connect, v5).unwrap_or_default();
    seen.connects.lock().unwrap().push(level);
    if let Script::Trickle = script {
        let _ = socket.write_all(&[0x20, 0x7F]);
        while !closed.load(Ordering::SeqCst) && socket.write_all(&[0]).is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
        return;
    }
    if v5 && matches!(script, Script::Only311) {
        // MQTT 5 §3.1.4: a server that does not speak 5 may answer with
        // the 3.1.1 code 1 and close.
        let _ = socket.write_all(&[0x20, 0x02, 0x00, 0x01]);
        return;
    }
    let connack: &[u8] = if v5 {
        &[0x20, 0x03, 0x00, 0x00, 0x00]
    } else {
        &[0x20, 0x02, 0x00, 0x00]
    };
    if socket.write_all(connack).is_err() {
        return;
    }
    let publisher = client_id.ends_with("-pub");
    while !closed.load(Ordering::SeqCst) {
        let Some((first, body)) = read_packet(&mut socket) else {
            return;
        };
        let answer = answer(first, &body, v5, publisher, script, seen);
        match answer {
            Some(bytes) if socket.write_all(&bytes).is_err() => return,
            Some(_) => {}
            None if first >> 4 == 14 => return,
            None => {}
        }
    }
}

fn connect_client_id(connect: &[u8], v5: bool) -> Option<String> {
    // Protocol name (2+4), level, flags, keepalive (2), [properties].
    let mut at = 10;
    if v5 {
        at += 1 + usize::from(*connect.get(10)?);
    }
    let (id, _) = string_at(connect, at)?;
    Some(String::from_utf8_lossy(id).into_owned())
}

/// The broker's answer to one packet, if any.
fn answer(
    first: u8,
    body: &[u8],
    v5: bool,
    publisher: bool,
    script: Script,
    seen: &Seen,
) -> Option<Vec<u8>> {
    match first >> 4 {
        3 => {
            let qos = (first >> 1) & 3;
            let (_topic, at) = string_at(body, 0)?;
            let (pkid, at) = if qos > 0 {
                (body.get(at..at + 2)?.to_vec(), at + 2)
            } else {
                (Vec::new(), at)
            };
            let payload_at = if v5 {
                at + 1 + usize::from(*body.get(at)?)
            } else {
                at
            };
            let payload = body.get(payload_at..)?.to_vec();
            let is_command = publisher && !payload.starts_with(b"{\"state\"");
            if is_command {
                seen.published.lock().unwrap().push(payload);
            }
            if qos == 0 {
                return None;
            }
            if is_command {
                let n = seen.publishes.fetch_add(1, Ordering::SeqCst);
                if matches!(script, Script::WithholdPuback(k) if k == n) {
                    return None;
                }
            }
            if matches!(script, Script::NoPuback) {
                return None;
            }
            Some([&[0x40, 0x02][..], &pkid].concat())
        }
        8 if matches!(script, Script::NoSuback) => None,
        8 => {
            // SUBSCRIBE: every filter granted at QoS 1.
            let pkid = body.get(0..2)?;
            let mut at = 2;
            if v5 {
                at += 1 + usize::from(*body.get(2)?);
            }
            let mut granted = Vec::new();
            while at < body.len() {
                let (_, next) = string_at(body, at)?;
                at = next + 1;
                granted.push(1u8);
            }
            let props: &[u8] = if v5 { &[0] } else { &[] };
            let len = 2 + props.len() + granted.len();
            let len = u8::try_from(len).ok()?;
            Some([&[0x90, len][..], pkid, props, &granted].concat())
        }
        12 => Some(vec![0xD0, 0x00]),
        _ => None,
    }
}
