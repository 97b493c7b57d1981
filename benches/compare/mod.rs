//! The same-run comparison against fixed earlier builds:
//! `cargo bench --bench relay -- baseline REV [REV…]`.
//!
//! Each REV is built once (`cargo build --release` in a detached worktree of
//! this repository, kept under `~/.cache/ms500-relay/baseline/COMMIT`), then
//! the same loads go through every build in turn, interleaved (round 1: every
//! build, round 2: every build, …), each on a broker of its own, and the best
//! (lowest) CPU of each build is kept: machines here are shared and noisy,
//! and what interferes only ever adds CPU. Reported per build, and as ratios
//! to each baseline:
//!
//! - commands: relay and broker CPU per 10,000 AIM commands, 60,000 written
//!   as fast as the relay takes them over 1, 4 and 8 backend connections;
//! - heartbeats: relay and broker CPU per 10,000 heartbeats of 10,000
//!   cameras at 400 a second, published at QoS 1 (as the firmware does) and
//!   at QoS 0, after every camera was seen once.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Broker, Relay, Subscriber};

/// Rounds each build runs unless `--rounds N` says (the best is kept).
const ROUNDS: usize = 2;
const COMMANDS: usize = 60_000;
const CONNECTIONS: [usize; 3] = [1, 4, 8];
const CAMERAS: usize = 10_000;
const PACE: usize = 400;
/// Heartbeats measured per run (20 s at 400 a second).
const HEARTBEATS: usize = 8_000;

/// One build: its name and binary.
struct Build {
    name: String,
    exe: String,
}

/// The best CPU seen for one build, per load.
#[derive(Default, Clone)]
struct Best {
    /// (relay, broker) seconds per 10,000 commands, per connection count.
    commands: [Option<(f64, f64)>; CONNECTIONS.len()],
    /// (relay, broker) seconds per 10,000 heartbeats, QoS 1 and QoS 0.
    heartbeats: [Option<(f64, f64)>; 2],
    lost: usize,
}

fn keep_best(slot: &mut Option<(f64, f64)>, run: (f64, f64)) {
    if slot.is_none_or(|best| run.0 < best.0) {
        *slot = Some(run);
    }
}

/// Which loads to run and how often.
pub struct Plan {
    pub rounds: usize,
    pub commands: bool,
    pub heartbeats: bool,
}

impl Plan {
    /// From the words after `baseline`: `--rounds N`, and `--only commands`
    /// or `--only heartbeats` (both loads by default). The rest are revisions.
    pub fn parse(words: &[String]) -> Result<(Plan, Vec<String>), String> {
        let mut plan = Plan {
            rounds: ROUNDS,
            commands: true,
            heartbeats: true,
        };
        let mut revs = Vec::new();
        let mut words = words.iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "--rounds" => {
                    plan.rounds = words
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--rounds needs a number above 0")?;
                }
                "--only" => match words.next().map(String::as_str) {
                    Some("commands") => plan.heartbeats = false,
                    Some("heartbeats") => plan.commands = false,
                    _ => return Err("--only takes commands or heartbeats".into()),
                },
                w if w.starts_with('-') => {}
                rev => revs.push(rev.to_string()),
            }
        }
        Ok((plan, revs))
    }
}

/// Runs the comparison of this build against `revs`, and prints it.
pub fn run(revs: &[String], plan: &Plan) {
    let mut builds = Vec::new();
    for rev in revs {
        match build(rev) {
            Ok(exe) => builds.push(Build {
                name: rev.clone(),
                exe,
            }),
            Err(why) => {
                eprintln!("baseline {rev}: {why}");
                std::process::exit(1);
            }
        }
    }
    builds.push(Build {
        name: "this build".into(),
        exe: crate::support::relay_words().join(" "),
    });
    let mut best = vec![Best::default(); builds.len()];
    for round in 1..=plan.rounds {
        for (b, build) in builds.iter().enumerate() {
            eprintln!("round {round}: {}", build.name);
            for (c, conns) in CONNECTIONS.iter().enumerate().filter(|_| plan.commands) {
                let (cpu, lost) = commands(&build.exe, *conns);
                best[b].lost += lost;
                keep_best(&mut best[b].commands[c], cpu);
            }
            for (q, qos) in [rumqttc::QoS::AtLeastOnce, rumqttc::QoS::AtMostOnce]
                .into_iter()
                .enumerate()
                .filter(|_| plan.heartbeats)
            {
                keep_best(&mut best[b].heartbeats[q], heartbeats(&build.exe, qos));
            }
        }
    }
    report(&builds, &best, plan.rounds);
}

/// The binary of `rev`, built once and kept.
fn build(rev: &str) -> Result<String, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let commit = git(
        &repo,
        &["rev-parse", "--short=12", &format!("{rev}^{{commit}}")],
    )?;
    let cache = build_cache().join("baseline");
    let dir = cache.join(&commit);
    let exe = dir.join("ms500-relay");
    if exe.is_file() {
        return Ok(exe.to_string_lossy().into_owned());
    }
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    let _ = git(&repo, &["worktree", "prune"]);
    git(
        &repo,
        &[
            "worktree",
            "add",
            "--detach",
            &src.to_string_lossy(),
            &commit,
        ],
    )?;
    eprintln!("building {rev} ({commit}) in {}", src.display());
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "ms500-relay"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", cache.join("target"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let copied = built
        .success()
        .then(|| std::fs::copy(cache.join("target/release/ms500-relay"), &exe));
    let _ = git(
        &repo,
        &["worktree", "remove", "--force", &src.to_string_lossy()],
    );
    match copied {
        Some(Ok(_)) => Ok(exe.to_string_lossy().into_owned()),
        Some(Err(e)) => Err(format!("cannot keep its binary: {e}")),
        None => Err("cargo build failed (its errors are above)".into()),
    }
}

/// Where build-static.sh keeps its builds too: `$MS500_BUILD_CACHE`, else
/// `~/.cache/ms500-relay`.
fn build_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("MS500_BUILD_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/ms500-relay")
}

fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(repo)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn aim(i: usize) -> String {
    format!(
        r#"{{"type":"AIM","unit":"cam-{:02}","id":{i},"model_id":17,"link":"https://fw.example/model.tflite","md5":"0123456789abcdef0123456789abcdef"}}"#,
        i % 16
    )
}

/// [`COMMANDS`] AIM commands through `exe` over `conns` connections:
/// (relay, broker) CPU seconds per 10,000, and how many never arrived.
fn commands(exe: &str, conns: usize) -> ((f64, f64), usize) {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let relay = crate::start_relay(&broker, Some(exe), &[]);
    let mut parts: Vec<Vec<u8>> = vec![Vec::new(); conns];
    for i in 0..COMMANDS {
        parts[i % conns].extend_from_slice(aim(i).as_bytes());
        parts[i % conns].push(b'\n');
    }
    let (r0, b0) = (relay.cpu_seconds(), broker.cpu_seconds());
    let writers: Vec<_> = parts
        .into_iter()
        .map(|bytes| {
            let mut s: TcpStream = relay.connect();
            std::thread::spawn(move || {
                for chunk in bytes.chunks(16 * 1024) {
                    let _ = s.write_all(chunk);
                }
                s
            })
        })
        .collect();
    let got = sub.collect(COMMANDS, Duration::from_secs(10)).len();
    let _connections: Vec<_> = writers.into_iter().filter_map(|w| w.join().ok()).collect();
    settle(&relay);
    let per_10k = |secs: f64| secs / COMMANDS as f64 * 10_000.0;
    let cpu = (
        per_10k(relay.cpu_seconds() - r0),
        per_10k(broker.cpu_seconds() - b0),
    );
    (cpu, COMMANDS.saturating_sub(got))
}

/// Heartbeats of [`CAMERAS`] cameras at [`PACE`] a second through `exe`, at
/// `qos`: (relay, broker) CPU seconds per 10,000, after every camera was
/// seen once (a camera's first heartbeat costs more and is not the load).
fn heartbeats(exe: &str, qos: rumqttc::QoS) -> (f64, f64) {
    let broker = Broker::start();
    let relay = crate::start_relay(
        &broker,
        Some(exe),
        &[("MAX_DEVICES", "20000"), ("DEVICE_TIMEOUT", "120")],
    );
    let cams = crate::fleet::cameras(broker.port, "compare-cameras");
    for i in 0..CAMERAS {
        crate::fleet::heartbeat_at(&cams, i, qos);
    }
    settle(&relay);
    // To the nanosecond: 8,000 heartbeats are ten or so of /proc's ticks,
    // and no thread of either process ends during them.
    let cpu = |pid: u32| crate::support::thread_cpu_seconds(pid);
    let (r0, b0) = (cpu(relay.pid()), cpu(broker.pid()));
    let start = Instant::now();
    for k in 0..HEARTBEATS {
        let due = start + Duration::from_secs_f64(k as f64 / PACE as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        crate::fleet::heartbeat_at(&cams, k % CAMERAS, qos);
    }
    settle(&relay);
    let per_10k = |secs: f64| secs / HEARTBEATS as f64 * 10_000.0;
    (
        per_10k(cpu(relay.pid()) - r0),
        per_10k(cpu(broker.pid()) - b0),
    )
}

/// Waits until the relay's CPU stops moving (its work on what came is
/// done), at most 10 s.
fn settle(relay: &Relay) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = relay.cpu_seconds();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = relay.cpu_seconds();
        if now - before < 0.002 {
            return;
        }
        before = now;
    }
}

fn report(builds: &[Build], best: &[Best], rounds: usize) {
    let cell = |v: Option<(f64, f64)>| {
        v.map_or("-".to_string(), |(r, b)| {
            format!("{r:.3} / {b:.3} ({:.2} ×)", r / b)
        })
    };
    println!(
        "\nsame-run comparison, best of {rounds} interleaved rounds; relay / broker CPU s per 10,000 (relay ÷ broker)"
    );
    println!(
        "{:<14} | {:<26} | {:<26} | {:<26} | {:<26} | {:<26} | lost",
        "build",
        "commands k=1",
        "commands k=4",
        "commands k=8",
        "heartbeats QoS 1",
        "heartbeats QoS 0"
    );
    for (build, b) in builds.iter().zip(best) {
        println!(
            "{:<14} | {:<26} | {:<26} | {:<26} | {:<26} | {:<26} | {}",
            build.name,
            cell(b.commands[0]),
            cell(b.commands[1]),
            cell(b.commands[2]),
            cell(b.heartbeats[0]),
            cell(b.heartbeats[1]),
            b.lost
        );
    }
    let this = &best[best.len() - 1];
    for (build, b) in builds.iter().zip(best).take(builds.len() - 1) {
        let ratio = |a: Option<(f64, f64)>, z: Option<(f64, f64)>| match (a, z) {
            (Some(a), Some(z)) => format!("{:.2} ×", a.0 / z.0),
            _ => "-".into(),
        };
        println!(
            "this build ÷ {:<14} relay CPU: commands k=1 {}, k=4 {}, k=8 {}; heartbeats QoS 1 {}, QoS 0 {}",
            build.name,
            ratio(this.commands[0], b.commands[0]),
            ratio(this.commands[1], b.commands[1]),
            ratio(this.commands[2], b.commands[2]),
            ratio(this.heartbeats[0], b.heartbeats[0]),
            ratio(this.heartbeats[1], b.heartbeats[1]),
        );
    }
}
