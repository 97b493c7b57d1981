//! What the publish link thread (`publish_link.rs`) and the publisher
//! thread (`delivery/publisher.rs`) tell each other, each on its own
//! bounded channel: [`LinkEvent`]s from the link (a connection up or down,
//! PUBACKs, a planned move), and [`FromPublisher`] messages back (how many
//! commands are in flight, that it stopped writing, that it dropped the
//! connection and why, that its DISCONNECT is going out). Neither side
//! reads the other's state: the publisher sends through [`ToLink`], which
//! never blocks, and the link keeps what it was told in [`Told`].

use std::collections::VecDeque;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::mqtt::wire::Wire;

/// Messages from the publisher the link has not read yet, at most: the
/// link reads them after every read of its socket (at least every quarter
/// keepalive), and the publisher says only what changed.
pub const FROM_PUBLISHER_CHANNEL: usize = 1024;

/// What the publisher learns from the publish link.
pub enum LinkEvent {
    /// A fresh session (clean): everything unacknowledged is published again on `wire`.
    Up(Wire),
    /// The connection is gone; what was in flight on it is unacknowledged.
    Down,
    /// PUBACKs, in the order they were read.
    Acked(Vec<u16>),
    /// A planned move to another broker: write nothing more on this
    /// connection; PUBACKs for what is in flight still come.
    Draining,
    /// The connection was closed as planned (DISCONNECT) after
    /// [`LinkEvent::Draining`]: what is still unacknowledged goes out on
    /// the next one; nothing acknowledged is published again.
    Closed,
}

/// What the publish link learns from the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromPublisher {
    /// Commands written on the connection and not yet acknowledged: work
    /// the link expects PUBACKs for. Sent whenever the number changed.
    InFlight(usize),
    /// The publisher took [`LinkEvent::Draining`]: it writes nothing more
    /// on this connection.
    Paused,
    /// The publisher ended the connection (a failed write, a command
    /// overdue for its PUBACK) for this reason, and shuts it next: the
    /// reason the link reports for the loss.
    Dropped(String),
    /// The publisher's DISCONNECT is going out: the close that follows is
    /// the clean stop.
    Closing,
}

/// The publisher's end: sends without ever blocking; what the channel has
/// no room for waits here, in order, for the next [`ToLink::flush`].
pub struct ToLink {
    tx: Sender<FromPublisher>,
    waiting: VecDeque<FromPublisher>,
    /// The in-flight count last said.
    in_flight: usize,
}

impl ToLink {
    pub fn new(tx: Sender<FromPublisher>) -> ToLink {
        ToLink {
            tx,
            waiting: VecDeque::new(),
            in_flight: 0,
        }
    }

    /// Says how many commands are in flight, when that changed.
    pub fn in_flight(&mut self, n: usize) {
        if n != self.in_flight {
            self.in_flight = n;
            // Only the latest count matters: one not sent yet is replaced.
            if let Some(FromPublisher::InFlight(waiting)) = self.waiting.back_mut() {
                *waiting = n;
            } else {
                self.waiting.push_back(FromPublisher::InFlight(n));
            }
        }
        self.flush();
    }

    pub fn tell(&mut self, message: FromPublisher) {
        self.waiting.push_back(message);
        self.flush();
    }

    /// Sends what waits, as far as the channel takes it.
    pub fn flush(&mut self) {
        while let Some(message) = self.waiting.pop_front() {
            match self.tx.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(message)) => {
                    self.waiting.push_front(message);
                    return;
                }
                // The link has ended: nobody to tell.
                Err(TrySendError::Disconnected(_)) => self.waiting.clear(),
            }
        }
    }

    /// Messages the channel had no room for yet.
    pub fn behind(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// The link's end: what it knows of the publisher, from its messages.
pub struct Told {
    rx: Receiver<FromPublisher>,
    pub in_flight: usize,
    /// Stopped writing on this connection (reset for each new one).
    pub paused: bool,
    /// DISCONNECT went out: the next close is the clean stop (for good).
    pub closing: bool,
    /// Why the publisher dropped this connection (reset for each new one).
    pub dropped: Option<String>,
}

impl Told {
    pub fn new(rx: Receiver<FromPublisher>) -> Told {
        Told {
            rx,
            in_flight: 0,
            paused: false,
            closing: false,
            dropped: None,
        }
    }

    /// Takes in every message that has come.
    pub fn read(&mut self) {
        for message in self.rx.try_iter() {
            match message {
                FromPublisher::InFlight(n) => self.in_flight = n,
                FromPublisher::Paused => self.paused = true,
                FromPublisher::Dropped(why) => self.dropped = Some(why),
                FromPublisher::Closing => self.closing = true,
            }
        }
    }

    /// A new connection: nothing was dropped or paused on it yet.
    pub fn new_connection(&mut self) {
        self.read();
        self.paused = false;
        self.dropped = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_hears_in_order_and_a_full_channel_loses_nothing() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let mut to_link = ToLink::new(tx);
        let mut told = Told::new(rx);
        to_link.in_flight(3);
        to_link.in_flight(3);
        to_link.tell(FromPublisher::Paused);
        to_link.in_flight(5);
        to_link.in_flight(0);
        to_link.tell(FromPublisher::Dropped("overdue".into()));
        assert!(to_link.behind(), "two fit; the rest wait, counts merged");
        told.read();
        assert_eq!((told.in_flight, told.paused), (3, true));
        to_link.flush();
        assert!(!to_link.behind());
        told.read();
        assert_eq!(told.in_flight, 0, "5 then 0: only the latest was sent");
        assert_eq!(told.dropped.as_deref(), Some("overdue"));
        told.new_connection();
        assert!(!told.paused && told.dropped.is_none());
        to_link.tell(FromPublisher::Closing);
        told.new_connection();
        assert!(told.closing, "for good");
    }

    #[test]
    fn with_the_link_gone_nothing_waits() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        drop(rx);
        let mut to_link = ToLink::new(tx);
        to_link.tell(FromPublisher::Closing);
        assert!(!to_link.behind());
    }
}
