//! The probe of the first broker, on its own short-lived thread, started by
//! the publish link while it serves another broker: connect as
//! `CLIENT_ID-probe`, publish one QoS 1 [`ProbeMessage`], await its PUBACK,
//! DISCONNECT, all within [`PROBE_TIMEOUT`]; the answer comes back on a
//! channel of one.

use std::io::{self, ErrorKind};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::mqtt::brokers::Broker;
use crate::mqtt::codec::{self, Incoming};
use crate::mqtt::connect::{ConnectFailure, Dialer};
use crate::mqtt::wire::Wire;

/// The whole probe: connect, publish, PUBACK.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest single read: how soon a stop is noticed.
const SLICE: Duration = Duration::from_millis(200);

/// What the probe publishes: the relay's "online" state message on
/// `STATE_TOPIC` (not retained: the relay is not on that broker yet), or
/// an empty message on `ms500-relay/probe/CLIENT_ID` without one.
#[derive(Clone)]
pub struct ProbeMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A probe under way.
pub struct Probe {
    thread: JoinHandle<()>,
    answer: Receiver<bool>,
}

impl Probe {
    /// Starts probing `first` on a new thread.
    pub fn start(dialer: &Dialer, first: &Broker, message: &ProbeMessage) -> io::Result<Probe> {
        let (tx, answer) = crossbeam_channel::bounded(1);
        let (dialer, first, message) = (dialer.clone(), first.clone(), message.clone());
        let thread = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                let answered = match probe(&dialer, &first, &message) {
                    Ok(()) => true,
                    Err(e) => {
                        log::debug!("broker {first} still does not answer: {}", e.describe());
                        false
                    }
                };
                let _ = tx.send(answered);
            })?;
        Ok(Probe { thread, answer })
    }

    /// The answer, once there is one: true when the first broker took the publish.
    pub fn answer(&self) -> Option<bool> {
        match self.answer.try_recv() {
            Ok(answered) => Some(answered),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(false),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread (at most [`PROBE_TIMEOUT`], less once stopping).
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("the probe thread panicked");
        }
    }
}

fn probe(dialer: &Dialer, first: &Broker, message: &ProbeMessage) -> Result<(), ConnectFailure> {
    let until = Instant::now() + PROBE_TIMEOUT;
    let id = format!("{}-probe", dialer.client_id);
    let wire = dialer.connect(first, &id, false, PROBE_TIMEOUT)?;
    let mut packets = Vec::new();
    codec::publish(
        &mut packets,
        &message.topic,
        Some(codec::STATE_PKID),
        false,
        &message.payload,
    )
    .map_err(|e| ConnectFailure::Protocol(e.to_string()))?;
    let acked = wire
        .write_all(&packets)
        .map_err(|e| ConnectFailure::Unreachable(e.to_string()))
        .and_then(|()| await_puback(&wire, dialer, until));
    let mut bye = Vec::new();
    codec::disconnect(&mut bye);
    let _ = wire.write_all(&bye);
    wire.shut();
    acked
}

/// Reads until the probe's PUBACK, by `until`.
fn await_puback(wire: &Wire, dialer: &Dialer, until: Instant) -> Result<(), ConnectFailure> {
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if dialer.stop.is_set() {
            return Err(ConnectFailure::Stopped);
        }
        if left.is_zero() {
            return Err(ConnectFailure::Protocol(format!(
                "no PUBACK for the probe within {} s",
                PROBE_TIMEOUT.as_secs()
            )));
        }
        wire.set_read_timeout(Some(left.min(SLICE)))
            .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
        match wire.read(&mut buf) {
            Ok(0) => {
                return Err(ConnectFailure::Unreachable(
                    "the broker closed the connection before the probe's PUBACK".into(),
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(ConnectFailure::Unreachable(e.to_string())),
        }
        while let Some((packet, len)) =
            codec::decode(&got).map_err(|e| ConnectFailure::Protocol(e.to_string()))?
        {
            got.drain(..len);
            if packet == Incoming::PubAck(codec::STATE_PKID) {
                return Ok(());
            }
        }
    }
}
