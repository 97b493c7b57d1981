//! The ledger alone: order, packet ids, resend after a lost link, weight.

use super::{Ledger, Weighed};

impl Weighed for &str {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// Writes everything due with QoS 1: (item, packet id) in order.
fn send_all(ledger: &mut Ledger<&'static str>) -> Vec<(&'static str, u16)> {
    let mut out = Vec::new();
    while let Some((seq, item)) = ledger.next_due() {
        let item = *item;
        out.push((item, ledger.mark_sent(seq)));
    }
    out
}

fn items(sent: &[(&'static str, u16)]) -> Vec<&'static str> {
    sent.iter().map(|(i, _)| *i).collect()
}

#[test]
fn nothing_is_due_while_the_link_is_down() {
    let mut l = Ledger::new(10);
    l.push("a");
    assert!(l.next_due().is_none());
    l.on_link_up();
    assert_eq!(items(&send_all(&mut l)), vec!["a"]);
}

#[test]
fn the_window_bounds_what_is_in_flight() {
    let mut l = Ledger::new(2);
    l.on_link_up();
    for s in ["a", "b", "c"] {
        l.push(s);
    }
    let sent = send_all(&mut l);
    assert_eq!(items(&sent), vec!["a", "b"]);
    assert_eq!(l.on_acked(sent[0].1).map(|(_, t)| t), Some("a"));
    assert_eq!(items(&send_all(&mut l)), vec!["c"]);
}

#[test]
fn acks_name_their_command_in_any_order() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    l.push("b");
    let sent = send_all(&mut l);
    assert_ne!(sent[0].1, sent[1].1);
    assert_eq!(l.on_acked(sent[1].1).map(|(_, t)| t), Some("b"));
    assert_eq!(l.on_acked(sent[0].1).map(|(_, t)| t), Some("a"));
    assert!(l.is_empty());
    assert_eq!(l.in_flight(), 0);
}

#[test]
fn unknown_or_repeated_acks_are_ignored() {
    let mut l = Ledger::<&str>::new(10);
    assert!(l.on_acked(3).is_none());
    l.on_link_up();
    l.push("a");
    let sent = send_all(&mut l);
    assert!(l.on_acked(sent[0].1).is_some());
    assert!(l.on_acked(sent[0].1).is_none());
}

#[test]
fn qos0_write_counts_as_delivery() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    l.push("b");
    let (seq, _) = l.next_due().unwrap();
    l.mark_written(seq);
    assert_eq!(l.next_due().map(|(_, t)| *t), Some("b"));
    assert_eq!(l.remove(seq), Some("a"));
    assert_eq!(l.len(), 1);
    assert_eq!(items(&send_all(&mut l)), vec!["b"]);
}

#[test]
fn everything_unacknowledged_is_written_again_after_a_reconnect() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    for s in ["a", "b", "c", "d"] {
        l.push(s);
    }
    let first = send_all(&mut l);
    assert!(l.on_acked(first[0].1).is_some()); // a acknowledged
    l.on_link_lost();
    assert_eq!(l.in_flight(), 0);
    assert!(l.next_due().is_none());
    // A late PUBACK of the old connection names nothing now.
    assert!(l.on_acked(first[1].1).is_none());
    l.on_link_up();
    let again = send_all(&mut l);
    assert_eq!(items(&again), vec!["b", "c", "d"]);
    for (item, pkid) in &again {
        assert_eq!(l.on_acked(*pkid).map(|(_, t)| t), Some(*item));
    }
    assert!(l.is_empty());
}

#[test]
fn packet_ids_skip_those_still_in_flight_and_wrap() {
    let mut l = Ledger::new(3);
    l.on_link_up();
    l.next_pkid = u16::MAX - 1;
    for s in ["a", "b", "c"] {
        l.push(s);
    }
    let sent = send_all(&mut l);
    let ids: Vec<u16> = sent.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        ids,
        vec![u16::MAX - 1, 1, 2],
        "neither 0 nor the state messages' id"
    );
    // 1 stays in flight; the next ids go round it.
    l.on_acked(u16::MAX - 1);
    l.on_acked(2);
    l.next_pkid = 1;
    l.push("d");
    l.push("e");
    let ids: Vec<u16> = send_all(&mut l).iter().map(|(_, p)| *p).collect();
    assert_eq!(ids, vec![2, 3]);
}

#[test]
fn removed_entries_are_skipped_and_weight_follows() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    let a = l.push("aaa");
    l.push("bb");
    assert_eq!(l.weight(), 5);
    assert_eq!(l.remove(a), Some("aaa"));
    assert_eq!(l.weight(), 2);
    let sent = send_all(&mut l);
    assert_eq!(items(&sent), vec!["bb"]);
    l.on_acked(sent[0].1);
    assert_eq!(l.weight(), 0);
}

#[test]
fn commands_pushed_after_a_write_are_due_next() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    assert_eq!(items(&send_all(&mut l)), vec!["a"]);
    l.push("b");
    assert_eq!(items(&send_all(&mut l)), vec!["b"]);
}

#[test]
fn what_is_in_flight_and_the_oldest_of_it_follow_acks_drops_and_links() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    let seqs: Vec<u64> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|s| l.push(s))
        .collect();
    let sent = send_all(&mut l);
    assert!(seqs.iter().all(|s| l.is_in_flight(*s)));
    assert_eq!(l.oldest_in_flight(), Some(seqs[0]));
    l.on_acked(sent[0].1);
    assert!(!l.is_in_flight(seqs[0]));
    assert_eq!(l.oldest_in_flight(), Some(seqs[1]));
    l.drop_unsendable(seqs[1]);
    assert!(!l.is_in_flight(seqs[1]));
    assert_eq!(l.in_flight(), 2);
    assert_eq!(l.oldest_in_flight(), Some(seqs[2]));
    assert_eq!(l.on_acked(sent[1].1), None, "its packet id is free again");
    l.on_link_lost();
    assert!(!l.is_in_flight(seqs[2]) && l.oldest_in_flight().is_none());
    l.on_link_up();
    let again = send_all(&mut l);
    assert_eq!(items(&again), vec!["c", "d"]);
    assert_eq!(l.oldest_in_flight(), Some(seqs[2]));
}
