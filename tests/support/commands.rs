//! The commands tests send (a valid sample of each type, numbered ones) and
//! the checks that every one of them arrived.

use std::collections::HashMap;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use super::{Message, Relay, Subscriber};

/// The commands of [`samples`], without their types.
pub fn sample_commands(unit: &str) -> Vec<String> {
    samples(unit).into_iter().map(|(_, json)| json).collect()
}

/// `commands` as the payloads the broker delivers.
pub fn bytes_of(commands: &[String]) -> Vec<&[u8]> {
    commands.iter().map(String::as_bytes).collect()
}

/// `n` IMG commands for units `prefix-NNNN-xxx…`, the unit padded with
/// `pad` x's (each command is logged with its unit), one after the other.
pub fn padded_commands(prefix: &str, n: usize, pad: usize) -> String {
    let x = "x".repeat(pad);
    (0..n)
        .map(|i| format!(r#"{{"type":"IMG","unit":"{prefix}-{i:04}-{x}"}}"#))
        .collect()
}

/// The twelve command types with a realistic, valid sample each, for `unit`.
pub fn samples(unit: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "AIM",
            format!(
                r#"{{"type":"AIM","unit":"{unit}","model_id":17,"link":"https://fw.example/model.tflite","md5":"0123456789abcdef0123456789ABCDEF"}}"#
            ),
        ),
        (
            "FMW",
            format!(
                r#"{{"type":"FMW","unit":"{unit}","firmware_id":"2.4.1","link":"https://fw.example/fw.bin","md5":"ffffffffffffffffffffffffffffffff","id":7}}"#
            ),
        ),
        (
            "APP",
            format!(
                r#"{{"type":"APP","unit":"{unit}","application_id":3,"link":"https://fw.example/app.bin","md5":"00000000000000000000000000000000"}}"#
            ),
        ),
        (
            "CDN",
            format!(
                r#"{{"type":"CDN","unit":"{unit}","coordinates":[[0,0],[640,0],[640,480],[0,480]]}}"#
            ),
        ),
        (
            "CFG",
            format!(
                r#"{{"type":"CFG","unit":"{unit}","configs":{{"exposure":3,"name":"Café ☕ 東京"}}}}"#
            ),
        ),
        (
            "CTS",
            format!(r#"{{"type":"CTS","unit":"{unit}","cs_width":1280,"cs_height":720}}"#),
        ),
        (
            "WFI",
            format!(
                r#"{{"type":"WFI","unit":"{unit}","wifi_enabled":1,"wifi_ssid":"site","wifi_password":"hunter2"}}"#
            ),
        ),
        ("SCS", format!(r#"{{"type":"SCS","unit":"{unit}"}}"#)),
        (
            "UDS",
            format!(r#"{{"type":"UDS","unit":"{unit}","settings":{{"fps":5,"tz":"UTC"}}}}"#),
        ),
        (
            "FRS",
            format!(r#"{{"type":"FRS","unit":"{unit}","reset_level":2}}"#),
        ),
        (
            "IMG",
            format!(r#"{{"type":"IMG","unit":"{unit}","id":"img-1"}}"#),
        ),
        (
            "RSR",
            format!(r#"{{"type":"RSR","unit":"{unit}","since": 1.50e3}}"#),
        ),
    ]
}

/// Where the relay publishes `unit`'s commands (the default COMMAND_TOPIC).
pub fn topic(unit: &str) -> String {
    format!("/service/ms500/{unit}/socket")
}

/// Command number `i`: an IMG with `"id": i`, spread over 7 units.
pub fn numbered_command(i: usize) -> String {
    format!(r#"{{"type":"IMG","unit":"d{}","id":{i}}}"#, i % 7)
}

/// [`numbered_command`]s `ids`, one after the other.
pub fn numbered_commands(ids: Range<usize>) -> String {
    ids.map(numbered_command).collect()
}

/// The id of a [`numbered_command`] the broker delivered.
pub fn id_of(m: &Message) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&m.payload).expect("published payload is JSON");
    v["id"].as_u64().expect("id")
}

/// Collects until every id in 0..n was seen or nothing arrives for `quiet`; returns (ids seen, messages seen).
pub fn collect_ids(sub: &Subscriber, n: usize, quiet: Duration) -> (HashMap<u64, usize>, usize) {
    let (seen, total, _) = collect_in_order(sub, n, quiet);
    (seen, total)
}

/// [`collect_ids`], and each (later, earlier) pair of [`numbered_command`]
/// ids of one unit whose first arrivals came in the wrong order.
fn collect_in_order(
    sub: &Subscriber,
    n: usize,
    quiet: Duration,
) -> (HashMap<u64, usize>, usize, Vec<(u64, u64)>) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut last_first: HashMap<u64, u64> = HashMap::new();
    let mut out_of_order = Vec::new();
    let mut total = 0;
    while seen.len() < n {
        let Some(m) = sub.recv(quiet) else { break };
        total += 1;
        let id = id_of(&m);
        let first = !seen.contains_key(&id);
        *seen.entry(id).or_default() += 1;
        if first {
            let unit = id % 7;
            if let Some(&before) = last_first.get(&unit) {
                if before > id {
                    out_of_order.push((before, id));
                }
            }
            last_first.insert(unit, id);
        }
    }
    (seen, total, out_of_order)
}

/// Asserts that every id in 0..n arrived (at least once) and reports the duplicates.
pub fn expect_all(sub: &Subscriber, n: usize, quiet: Duration, what: &str, relay: &Relay) {
    expect_ids(sub, 0..=n as u64 - 1, quiet, what, relay);
}

/// [`expect_all`] for the ids in `ids`.
pub fn expect_ids(
    sub: &Subscriber,
    ids: RangeInclusive<u64>,
    quiet: Duration,
    what: &str,
    relay: &Relay,
) {
    let (seen, total, _) = collect_in_order(sub, ids.clone().count(), quiet);
    expect_none_lost(&seen, total, ids, what, relay);
}

/// [`expect_all`] for [`numbered_command`]s, and also that each unit's
/// commands first arrived in the order sent (ids increasing); a duplicate
/// published again after a broken link may come later, out of order.
pub fn expect_all_in_order(sub: &Subscriber, n: usize, quiet: Duration, what: &str, relay: &Relay) {
    let (seen, total, out_of_order) = collect_in_order(sub, n, quiet);
    expect_none_lost(&seen, total, 0..=n as u64 - 1, what, relay);
    assert!(
        out_of_order.is_empty(),
        "{} commands first arrived after a later one of their unit, e.g. (later, earlier) {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
}

fn expect_none_lost(
    seen: &HashMap<u64, usize>,
    total: usize,
    ids: RangeInclusive<u64>,
    what: &str,
    relay: &Relay,
) {
    let n = ids.clone().count();
    let missing: Vec<u64> = ids.filter(|i| !seen.contains_key(i)).collect();
    println!(
        "{what}: {} distinct of {n} delivered, {} duplicates",
        seen.len(),
        total - seen.len()
    );
    assert!(
        missing.is_empty(),
        "lost {} commands, first {:?}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        relay.log()
    );
}

/// Where a device's reply to `unit` goes.
pub fn reply_topic(unit: &str) -> String {
    format!("/device/ms500/{unit}/socket_reply")
}

/// Where camera `id` publishes its heartbeats.
pub fn heartbeat_topic(id: &str) -> String {
    format!("/device/ms500/{id}/online")
}

/// A valid command: the one the tests write after a bad one.
pub const VALID: &str = r#"{"type":"IMG","unit":"ok"}"#;

/// The filter for every command on its default topic.
pub const COMMANDS: &str = "/service/ms500/+/socket";

/// The filter for every topic under /service/ms500, whatever unit a bad
/// command names.
pub const ANY_COMMAND: &str = "/service/ms500/#";
