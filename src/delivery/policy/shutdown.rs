//! Part of the delivery policy (publisher thread, no I/O): shutdown. What is
//! said of the commands left when the grace runs out, and the last words to
//! the broker ("offline" state, DISCONNECT).

use log::Level;

use super::{Action, Awaiting, Delivery, Durability};
use crate::mqtt::codec;

impl Delivery {
    /// The grace ran out: says what stays undelivered, and where.
    pub(super) fn give_up(&self, unaccepted: usize, out: &mut Vec<Action>) {
        let grace = self
            .stop
            .map(|(_, grace)| grace)
            .unwrap_or_default()
            .as_secs();
        let queued = self.ledger.len().saturating_sub(self.again_queued);
        let path = self.spool_path();
        match &self.spool {
            _ if queued == 0 => {}
            Durability::Writing => self.log(out, Level::Warn, || {
                format!(
                    "shutdown grace of {grace} s ran out: {queued} unacknowledged commands stay in the spool {path} for the next start"
                )
            }),
            Durability::Failing { .. } => self.log(out, Level::Error, || {
                format!(
                    "shutdown grace of {grace} s ran out: {queued} accepted commands not delivered, and the spool {path} cannot be written: lost"
                )
            }),
            Durability::Off => self.log(out, Level::Error, || {
                format!(
                    "shutdown grace of {grace} s ran out: {queued} accepted commands not delivered (no SPOOL_FILE)"
                )
            }),
        }
        if unaccepted > 0 {
            self.log(out, Level::Error, || {
                format!(
                    "shutdown grace of {grace} s ran out: {unaccepted} commands read from backends were never accepted (not spooled, no status line)"
                )
            });
        }
    }

    /// The last words to a connected broker: "offline" (retained) when
    /// there is a state topic, then DISCONNECT.
    pub(super) fn bye(&mut self, out: &mut Vec<Action>) {
        if !self.connected {
            return;
        }
        let mut bye = Vec::new();
        if let Some(state) = &self.settings.state {
            let (topic, message) = (&state.topic, &state.message);
            // check-config bounds STATE_TOPIC and the client id: cannot fail.
            if let Err(e) = codec::publish(&mut bye, topic, Some(codec::STATE_PKID), true, message)
            {
                self.log(out, Level::Error, || {
                    format!("cannot publish the offline state: {e}")
                });
            }
        }
        codec::disconnect(&mut bye);
        self.closing = true;
        self.connected = false;
        out.push(Action::Disconnect(bye));
        self.awaiting = Some(Awaiting::Bye);
    }
}
