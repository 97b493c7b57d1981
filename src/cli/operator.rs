//! `ms500-relay held [CAMERA]` and `ms500-relay cancel CAMERA [TYPE…]`: an
//! operator's view of the commands waiting for cameras, and a way to drop
//! them, from the running relay (PROTOCOL.md §1.4). Connects to the relay
//! as `send` does, writes one control request and prints the answer
//! (readably, or as it came with `--json`). The relay takes the request
//! only from root or its own user, as the kernel tells it who connected.
//! Runs on the main thread; nothing else is started.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::send;
use crate::config::Config;
use crate::error::Error;
use crate::protocol::redact;

/// How long the relay may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// `held [CAMERA]`: the commands held or unconfirmed, one line each.
pub fn held(config: &Config, camera: Option<&str>, raw: bool) -> Result<(), Error> {
    let request = match camera {
        Some(c) => json!({"control": "held", "camera": c}),
        None => json!({"control": "held"}),
    };
    let lines = ask(config, &request)?;
    let mut out = std::io::stdout().lock();
    if raw {
        for line in &lines {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    let rows: Vec<&Value> = lines.iter().filter(|l| l.get("done").is_none()).collect();
    if !rows.is_empty() {
        writeln!(
            out,
            "CAMERA  STATE  WAITING  TYPE  UNIT  ID  AGE  BYTES  LIFETIME LEFT  FROM"
        )?;
    }
    for r in &rows {
        writeln!(
            out,
            "{}  {}  {}  {}  {}  {}  {} s  {}  {}  {}",
            text(&r["camera"]),
            text(&r["state"]),
            text(&r["waiting"]),
            text(&r["type"]),
            text(&r["unit"]),
            text(&r["id"]),
            r["age_s"],
            r["bytes"],
            r["lifetime_left_s"]
                .as_u64()
                .map_or("never expires".to_string(), |s| format!("{s} s")),
            text(&r["from"]),
        )?;
    }
    let end = lines.last().cloned().unwrap_or_default();
    writeln!(
        out,
        "{} held, {} unconfirmed, for {} cameras",
        end["held"], end["unconfirmed"], end["cameras"]
    )?;
    Ok(())
}

/// `cancel CAMERA [TYPE…]`: drops what is held or unconfirmed for it.
pub fn cancel(config: &Config, camera: &str, types: &[String], raw: bool) -> Result<(), Error> {
    let request = json!({"control": "cancel", "camera": camera, "types": types});
    let lines = ask(config, &request)?;
    let mut out = std::io::stdout().lock();
    for line in &lines {
        if raw {
            writeln!(out, "{line}")?;
        } else if line.get("done").is_some() {
            writeln!(
                out,
                "cancelled {} commands for camera {}",
                line["cancelled"],
                text(&line["camera"])
            )?;
        } else {
            writeln!(
                out,
                "cancelled {} for unit {} id {} ({})",
                text(&line["type"]),
                text(&line["unit"]),
                text(&line["id"]),
                text(&line["was"])
            )?;
        }
    }
    Ok(())
}

/// Sends `request` and reads the answer up to its closing line (the
/// relay's refusal, as an error).
fn ask(config: &Config, request: &Value) -> Result<Vec<Value>, Error> {
    let (stream, at) = send::connect_to_relay(config)?;
    stream.set_write_timeout(Some(ANSWER_WITHIN))?;
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    let mut bytes = request.to_string().into_bytes();
    bytes.push(b'\n');
    (&stream).write_all(&bytes)?;
    let mut lines = Vec::new();
    for line in BufReader::new(&stream).lines() {
        let line = line
            .map_err(|e| Error::runtime_because(format!("no answer from the relay at {at}"), e))?;
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if value["status"] == "error" {
            return Err(Error::runtime(format!(
                "the relay at {at} refused: {}",
                text(&value["error"])
            )));
        }
        let done = value.get("done").is_some();
        lines.push(value);
        if done {
            return Ok(lines);
        }
    }
    Err(Error::runtime(format!(
        "the relay at {at} closed the connection before it answered"
    )))
}

/// A value as the output shows it: strings without quotes, made printable.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => redact::printable(s).into_owned(),
        Value::Null => "-".to_string(),
        other => redact::printable(&other.to_string()).into_owned(),
    }
}
