//! The connections the publisher owes lines to: each one's outbox, the
//! claims its commands hold on status lines (taken by its session, handed
//! over with the commands) and the operators' requests on it not yet
//! answered. The policy names a connection by its number only; the
//! publisher thread (`publisher.rs`) turns the policy's `Line`, `Done` and
//! `Answered` into lines offered here and claims given back.

use std::collections::HashMap;

use crate::delivery::outbox::{Claims, Outbox};

/// Connections by their number, while anything is owed to them.
#[derive(Default)]
pub struct Replies {
    conns: HashMap<u64, Owed>,
}

/// What one connection is owed.
struct Owed {
    claims: Claims,
    /// Operators' requests not yet answered.
    asks: usize,
}

impl Replies {
    /// A batch's claims on its connection's status lines.
    pub fn take(&mut self, claims: Claims) {
        let conn = claims.outbox().conn();
        match self.conns.get_mut(&conn) {
            Some(owed) => owed.claims.join(claims),
            None => {
                self.conns.insert(conn, Owed { claims, asks: 0 });
            }
        }
    }

    /// An operator's request on `outbox`, to be answered; its connection's number.
    pub fn asked(&mut self, outbox: &Outbox) -> u64 {
        let conn = outbox.conn();
        self.conns
            .entry(conn)
            .or_insert_with(|| Owed {
                claims: Claims::new(outbox),
                asks: 0,
            })
            .asks += 1;
        conn
    }

    /// Offers `line` to `conn` (nothing when nothing is owed to it any more).
    pub fn line(&self, conn: u64, line: Vec<u8>) {
        if let Some(owed) = self.conns.get(&conn) {
            owed.claims.outbox().offer("status line", line);
        }
    }

    /// A command's last line, if any: its claim on `conn`'s lines ends.
    pub fn done(&mut self, conn: u64, line: Option<Vec<u8>>) {
        if let Some(line) = line {
            self.line(conn, line);
        }
        if let Some(owed) = self.conns.get_mut(&conn) {
            owed.claims.give_back_one();
        }
        self.forget_if_settled(conn);
    }

    /// The operator's request on `conn` is answered.
    pub fn answered(&mut self, conn: u64) {
        if let Some(owed) = self.conns.get_mut(&conn) {
            owed.asks = owed.asks.saturating_sub(1);
        }
        self.forget_if_settled(conn);
    }

    /// Connections still owed something.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.conns.len()
    }

    fn forget_if_settled(&mut self, conn: u64) {
        if self
            .conns
            .get(&conn)
            .is_some_and(|owed| owed.claims.count() == 0 && owed.asks == 0)
        {
            self.conns.remove(&conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outbox with the listener's `id` 1, as the TCP and the Unix
    /// listener's first connections both have.
    fn outbox() -> Outbox {
        Outbox::new(1, "127.0.0.1:1".parse().expect("an address")).0
    }

    fn claims(outbox: &Outbox, n: usize) -> Claims {
        let mut claims = Claims::new(outbox);
        (0..n).for_each(|_| claims.take_one());
        claims
    }

    #[test]
    fn a_connection_is_kept_until_its_last_claim_ends() {
        let (a, b) = (outbox(), outbox());
        let mut replies = Replies::default();
        replies.take(claims(&a, 1));
        replies.take(claims(&a, 1));
        replies.take(claims(&b, 1));
        assert_eq!((a.owed(), b.owed(), replies.len()), (2, 1, 2));
        replies.line(a.conn(), b"held".to_vec());
        replies.done(a.conn(), None);
        assert_eq!((a.owed(), replies.len()), (1, 2));
        replies.done(a.conn(), Some(b"ok".to_vec()));
        assert_eq!((a.owed(), b.owed(), replies.len()), (0, 1, 1));
        assert_eq!(a.take(), b"held\nok\n");
        assert!(b.is_empty(), "the other connection numbered 1 got nothing");
        replies.line(a.conn(), b"late".to_vec());
        assert!(a.is_empty(), "nothing owed: nothing offered");
        drop(replies);
        assert_eq!(b.owed(), 0, "dropped: every claim ends");
    }

    #[test]
    fn an_operator_is_answered_on_a_connection_that_owes_nothing_else() {
        let a = outbox();
        let mut replies = Replies::default();
        let conn = replies.asked(&a);
        assert_eq!(conn, a.conn());
        assert_eq!(a.owed(), 0, "a request is no claim on a status line");
        replies.line(conn, b"{}".to_vec());
        replies.answered(conn);
        assert_eq!(replies.len(), 0);
        assert_eq!(a.take(), b"{}\n");
    }
}
