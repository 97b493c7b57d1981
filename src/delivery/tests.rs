use super::Ledger;

fn hand_all(ledger: &mut Ledger<&'static str>) -> Vec<&'static str> {
    let mut out = Vec::new();
    while let Some((seq, item)) = ledger.next_due() {
        out.push(*item);
        ledger.mark_handed(seq);
    }
    out
}

#[test]
fn nothing_is_due_while_the_link_is_down() {
    let mut l = Ledger::new(10);
    l.push("a");
    assert!(l.next_due().is_none());
    l.on_link_up();
    assert_eq!(hand_all(&mut l), vec!["a"]);
}

#[test]
fn window_bounds_what_is_handed_out() {
    let mut l = Ledger::new(2);
    l.on_link_up();
    for s in ["a", "b", "c"] {
        l.push(s);
    }
    assert_eq!(hand_all(&mut l), vec!["a", "b"]);
    assert!(l.on_sent(1).is_none());
    assert_eq!(l.on_acked(1).map(|(_, t)| t), Some("a"));
    assert_eq!(hand_all(&mut l), vec!["c"]);
}

#[test]
fn acks_correlate_in_fifo_order() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    l.push("b");
    hand_all(&mut l);
    l.on_sent(7);
    l.on_sent(8);
    assert_eq!(l.on_acked(8).map(|(_, t)| t), Some("b"));
    assert_eq!(l.on_acked(7).map(|(_, t)| t), Some("a"));
    assert!(l.is_empty());
    assert_eq!(l.in_flight(), 0);
}

#[test]
fn unknown_or_repeated_acks_are_ignored() {
    let mut l = Ledger::<&str>::new(10);
    assert!(l.on_acked(3).is_none());
    assert!(l.on_sent(3).is_none());
    l.on_link_up();
    l.push("a");
    hand_all(&mut l);
    l.on_sent(1);
    assert!(l.on_acked(1).is_some());
    assert!(l.on_acked(1).is_none());
}

#[test]
fn qos0_write_counts_as_delivery() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    hand_all(&mut l);
    assert_eq!(l.on_sent(0).map(|(_, t)| t), Some("a"));
    assert!(l.is_empty());
}

#[test]
fn everything_unacknowledged_is_handed_again_after_a_reconnect() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    for s in ["a", "b", "c", "d"] {
        l.push(s);
    }
    hand_all(&mut l);
    l.on_sent(1); // a written
    l.on_sent(2); // b written
    assert!(l.on_acked(1).is_some()); // a acknowledged

    // The link drops: c was drained from the client's queue, d was handed after the drop.
    l.on_link_lost(1);
    assert_eq!(l.in_flight(), 1, "d is still in the client's channel");
    assert!(l.next_due().is_none());
    l.on_link_up();
    assert_eq!(hand_all(&mut l), vec!["b", "c", "d"]);
    // the stale d leaves first, then the resends in order
    l.on_sent(1); // stale d
    l.on_sent(2); // b
    l.on_sent(3); // c
    l.on_sent(4); // d again
    assert_eq!(l.on_acked(1).map(|(_, t)| t), Some("d"));
    assert_eq!(l.on_acked(2).map(|(_, t)| t), Some("b"));
    assert_eq!(l.on_acked(3).map(|(_, t)| t), Some("c"));
    assert!(l.on_acked(4).is_none(), "second copy of d is a duplicate");
    assert!(l.is_empty());
    assert_eq!(l.in_flight(), 0);
}

#[test]
fn lost_link_with_more_drained_than_handed_does_not_panic() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    hand_all(&mut l);
    l.on_link_lost(5);
    assert_eq!(l.in_flight(), 0);
    l.on_link_up();
    assert_eq!(hand_all(&mut l), vec!["a"]);
}

#[test]
fn removing_a_later_entry_does_not_skip_earlier_ones() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    let b = l.push("b");
    l.push("c");
    assert_eq!(l.remove(b), Some("b"));
    assert_eq!(hand_all(&mut l), vec!["a", "c"]);
}

#[test]
fn removed_entries_are_skipped() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    let a = l.push("a");
    l.push("b");
    assert_eq!(l.remove(a), Some("a"));
    assert_eq!(hand_all(&mut l), vec!["b"]);
}

#[test]
fn commands_pushed_after_a_handout_are_due_next() {
    let mut l = Ledger::new(10);
    l.on_link_up();
    l.push("a");
    assert_eq!(hand_all(&mut l), vec!["a"]);
    l.push("b");
    assert_eq!(hand_all(&mut l), vec!["b"]);
}
