//! A deterministic stress test: tens of thousands of randomly mutated valid
//! commands over several connections, each on its own line followed by a
//! valid sentinel. The relay must stay up, publish nothing outside
//! `/service/ms500/<valid unit>/socket`, publish only valid commands, and
//! deliver every sentinel.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use crate::support::{relay_with_subscriber, samples, ANY_COMMAND};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b"/",
    b"+",
    b"#",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"1e999",
    b"-",
    b"null",
    b"true",
    b" ",
    b"\t",
    b"\\u0000",
    b"\\u002f",
    b"\"unit\":\"x\",",
    b"\"type\":\"FRS\",",
    b"99999999999999999999999",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let pos = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let p = pos.min(out.len() - 1);
                out[p] = rng.next() as u8;
            }
            1 if !out.is_empty() => {
                let p = pos.min(out.len() - 1);
                out.remove(p);
            }
            2 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(pos..pos, piece.iter().copied());
            }
            3 if out.len() > 2 => {
                let a = rng.below(out.len());
                let b = rng.below(out.len());
                out.swap(a, b);
            }
            _ => out.insert(pos, rng.next() as u8),
        }
    }
    // One line per command: a mutation must not add line breaks of its own.
    out.retain(|b| *b != b'\n');
    out
}

const TYPES: [&str; 12] = [
    "AIM", "FMW", "APP", "CDN", "CFG", "CTS", "WFI", "SCS", "UDS", "FRS", "IMG", "RSR",
];

fn valid_unit(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 128
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

#[test]
fn mutated_commands_never_escape_and_every_sentinel_arrives() {
    let (_broker, relay, sub) = relay_with_subscriber(ANY_COMMAND, &[("LOG_LEVEL", "error")]);
    let connections = 4;
    let per_connection = 6_000;
    let bases: Vec<Vec<u8>> = samples("cam-7")
        .into_iter()
        .map(|(_, j)| j.into_bytes())
        .collect();

    let writers: Vec<_> = (0..connections)
        .map(|c| {
            let mut s = relay.connect();
            let bases = bases.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
                let mut out = Vec::with_capacity(1 << 20);
                for i in 0..per_connection {
                    let base = &bases[rng.below(bases.len())];
                    out.extend_from_slice(&mutate(&mut rng, base));
                    out.push(b'\n');
                    out.extend_from_slice(
                        format!(r#"{{"type":"RSR","unit":"sentinel","conn":{c},"seq":{i}}}"#)
                            .as_bytes(),
                    );
                    out.push(b'\n');
                }
                for chunk in out.chunks(7_919) {
                    s.write_all(chunk).unwrap();
                }
                s
            })
        })
        .collect();
    let _streams: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let mut sentinels = HashSet::new();
    let mut published = 0usize;
    while sentinels.len() < connections * per_connection {
        let Some(m) = sub.recv(Duration::from_secs(20)) else {
            break;
        };
        published += 1;
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
            panic!(
                "published payload is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&m.payload)
            )
        });
        let kind = v["type"]
            .as_str()
            .expect("published command has a string type");
        let unit = v["unit"]
            .as_str()
            .expect("published command has a string unit");
        assert!(TYPES.contains(&kind), "published unknown type {kind}");
        assert!(valid_unit(unit), "published invalid unit {unit:?}");
        assert_eq!(
            m.topic,
            format!("/service/ms500/{unit}/socket"),
            "topic escaped its unit"
        );
        if unit == "sentinel" && kind == "RSR" && v.get("seq").is_some() {
            sentinels.insert((v["conn"].as_u64(), v["seq"].as_u64()));
        }
    }
    println!(
        "stress: {} mutated commands, {} sentinels delivered, {} mutated ones were still valid and published",
        connections * per_connection,
        sentinels.len(),
        published - sentinels.len()
    );
    assert_eq!(
        sentinels.len(),
        connections * per_connection,
        "sentinels lost; log tail:\n{}",
        relay.log_tail(20)
    );
    // Still up.
    relay
        .connect()
        .write_all(br#"{"type":"IMG","unit":"after"}"#)
        .unwrap();
    let m = sub
        .recv(Duration::from_secs(10))
        .expect("relay still relays");
    assert_eq!(m.topic, "/service/ms500/after/socket");
}
