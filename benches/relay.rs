//! End-to-end benchmark: a real mosquitto, the release relay binary, real
//! sockets. Every figure is measured in the same run as its baseline (the
//! same commands published straight to the broker by a plain client), so the
//! ratios hold on a shared, noisy machine where absolute numbers do not.
//!
//! Run: `cargo bench --bench relay` (N = 50,000), or `cargo bench --bench relay -- 5000`
//! for another N; `cargo bench --bench relay -- fleet` runs only the fleet
//! scenario (`fleet/mod.rs`: cameras' heartbeats, commands and SCS round
//! trips, then idle with 10,000 and 100,000 silent devices), which the full
//! run ends with. Under `cargo test` it runs with N = 2,000 as a smoke test
//! that fails on any lost command. `cargo bench --bench relay -- baseline
//! REV [REV…]` builds each REV and compares it with this build in the same
//! run (`compare/mod.rs`).
//!
//! CPU is utime + stime from /proc for the relay and for mosquitto over the
//! same burst, so "relay / broker" compares the relay's cost per command
//! with the broker's per message in the same run. Syscalls per command come
//! from `strace -c -f` attached to the relay over a shorter burst (when
//! strace is installed). With `MS500_BENCH_BASELINE=/path/to/ms500-relay`
//! (another build, e.g. an older commit's `cargo build --release`) the same
//! cost figures are measured for it too, in the same run, against the same
//! broker.

#[path = "compare/mod.rs"]
mod compare;
#[path = "fleet/mod.rs"]
mod fleet;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use support::{Broker, Launch, Relay, Subscriber, TempDir};

const TOPIC_FILTER: &str = "/service/ms500/+/socket";

fn command(i: usize) -> String {
    format!(
        r#"{{"type":"CFG","unit":"cam-{:02}","id":{i},"configs":{{"exposure":3,"gain":1.5,"mode":"day"}}}}"#,
        i % 16
    )
}

fn id_of(payload: &[u8]) -> usize {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["id"].as_u64())
        .unwrap_or(u64::MAX) as usize
}

/// Waits until `n` messages arrived (or 60 s of silence); returns arrival time of each id.
fn arrivals(sub: &Subscriber, n: usize) -> HashMap<usize, Instant> {
    let mut seen = HashMap::with_capacity(n);
    while seen.len() < n {
        match sub.recv(Duration::from_secs(60)) {
            Some(m) => {
                seen.entry(id_of(&m.payload)).or_insert(m.at);
            }
            None => break,
        }
    }
    seen
}

/// Publishes `cmds` straight to the broker, QoS 1, as fast as the client allows.
fn direct(
    broker: u16,
    cmds: &[(usize, String)],
    pace: Option<Duration>,
) -> HashMap<usize, Instant> {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut opts = MqttOptions::new(
        format!("bench-direct-{}", N.fetch_add(1, Ordering::SeqCst)),
        "127.0.0.1",
        broker,
    );
    opts.set_inflight(100);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 200);
    let total = cmds.len();
    let pump = std::thread::spawn(move || {
        let mut acked = 0;
        for e in conn.iter() {
            match e {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == total {
                        break;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    });
    let mut sent = HashMap::with_capacity(cmds.len());
    let start = Instant::now();
    for (k, (i, c)) in cmds.iter().enumerate() {
        if let Some(p) = pace {
            let due = start + p * k as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let unit = format!("cam-{:02}", i % 16);
        sent.insert(*i, Instant::now());
        client
            .publish(
                format!("/service/ms500/{unit}/socket"),
                QoS::AtLeastOnce,
                false,
                c.clone().into_bytes(),
            )
            .unwrap();
    }
    let _ = pump.join();
    let _ = client.disconnect();
    sent
}

/// Writes `cmds` to the relay over `conns` connections (round robin), as a burst or paced.
fn through_relay(
    relay: &Relay,
    cmds: &[(usize, String)],
    conns: usize,
    pace: Option<Duration>,
) -> HashMap<usize, Instant> {
    let mut sent = HashMap::with_capacity(cmds.len());
    if let Some(p) = pace {
        let mut s = relay.connect();
        let start = Instant::now();
        for (k, (i, c)) in cmds.iter().enumerate() {
            let due = start + p * k as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sent.insert(*i, Instant::now());
            s.write_all(c.as_bytes()).unwrap();
        }
        return sent;
    }
    let mut parts: Vec<Vec<u8>> = vec![Vec::new(); conns];
    for (k, (i, c)) in cmds.iter().enumerate() {
        parts[k % conns].extend_from_slice(c.as_bytes());
        sent.insert(*i, Instant::now());
    }
    let started = Instant::now();
    let writers: Vec<_> = parts
        .into_iter()
        .map(|bytes| {
            let mut s: TcpStream = relay.connect();
            std::thread::spawn(move || {
                for chunk in bytes.chunks(16 * 1024) {
                    s.write_all(chunk).unwrap();
                }
                s
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
    for v in sent.values_mut() {
        *v = started;
    }
    sent
}

struct Throughput {
    delivered: usize,
    secs: f64,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.secs
    }
}

fn burst(sub: &Subscriber, n: usize, run: impl FnOnce() -> HashMap<usize, Instant>) -> Throughput {
    let t0 = Instant::now();
    let _sent = run();
    let seen = arrivals(sub, n);
    let last = seen.values().max().copied().unwrap_or(t0);
    Throughput {
        delivered: seen.len(),
        secs: last.duration_since(t0).as_secs_f64(),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    percentile(&sorted, 0.5)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn latencies(sent: &HashMap<usize, Instant>, seen: &HashMap<usize, Instant>) -> (f64, f64) {
    let mut ms: Vec<f64> = sent
        .iter()
        .filter_map(|(i, t)| {
            seen.get(i)
                .map(|r| r.duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

fn proc_status(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Like support::wait_until, but polls every 0.2 ms so start-up times are not rounded to its 20 ms.
fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

fn batch(range: std::ops::Range<usize>) -> Vec<(usize, String)> {
    range.map(|i| (i, command(i))).collect()
}

/// What one relay binary costs in this run.
struct Cost {
    one: Throughput,
    eight: Throughput,
    /// CPU seconds per 10,000 commands: relay, broker; 1 then 8 connections.
    cpu_one: (f64, f64),
    cpu_eight: (f64, f64),
    syscalls: Option<Syscalls>,
}

/// Syscalls per command, by name, busiest first.
struct Syscalls {
    commands: usize,
    total: f64,
    by_name: Vec<(String, f64)>,
}

impl Syscalls {
    fn describe(&self, top: usize) -> String {
        let names: Vec<String> = self
            .by_name
            .iter()
            .take(top)
            .map(|(name, per)| format!("{name} {per:.2}"))
            .collect();
        format!(
            "{:.2} per command ({}; {} commands)",
            self.total,
            names.join(", "),
            self.commands
        )
    }
}

/// Fresh command ids for each burst, so arrivals are never confused.
struct Ids(usize);

impl Ids {
    fn take(&mut self, n: usize) -> Vec<(usize, String)> {
        let range = self.0..self.0 + n;
        self.0 += n;
        batch(range)
    }
}

/// Starts a relay from `exe` (this build when None) on a port of its own.
fn start_relay(broker: &Broker, exe: Option<&str>, settings: &[(&str, &str)]) -> Relay {
    let launch = Launch {
        exe: exe.map(|e| e.split_whitespace().map(str::to_string).collect()),
        ..Launch::default()
    };
    // An older build may not take SOCKET_PORT = 0: give it a free port.
    let port = support::free_port().to_string();
    let mut all = vec![("SOCKET_PORT", port.as_str())];
    all.extend_from_slice(settings);
    let relay = Relay::start_with(broker.port, &all, launch);
    relay.expect_log("connected to broker", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    relay
}

/// Throughput and CPU of one relay binary over bursts of `n` on 1 and 8
/// connections, and its syscalls over a shorter one.
fn cost(
    broker: &Broker,
    sub: &Subscriber,
    ids: &mut Ids,
    n: usize,
    relay: &Relay,
    strace_n: Option<usize>,
) -> Cost {
    let per_10k = |secs: f64| secs / n as f64 * 10_000.0;
    let mut measure = |conns: usize| {
        let cmds = ids.take(n);
        let (r0, b0) = (relay.cpu_seconds(), broker.cpu_seconds());
        let t = burst(sub, n, || through_relay(relay, &cmds, conns, None));
        let cpu = (
            per_10k(relay.cpu_seconds() - r0),
            per_10k(broker.cpu_seconds() - b0),
        );
        (t, cpu)
    };
    let (one, cpu_one) = measure(1);
    let (eight, cpu_eight) = measure(8);
    let syscalls = strace_n.and_then(|m| {
        let cmds = ids.take(m);
        strace(relay.pid(), m, || {
            burst(sub, m, || through_relay(relay, &cmds, 1, None));
        })
    });
    Cost {
        one,
        eight,
        cpu_one,
        cpu_eight,
        syscalls,
    }
}

/// Counts the syscalls of process `pid` (all threads) while `run` runs.
/// None when strace is missing or cannot attach.
fn strace(pid: u32, commands: usize, run: impl FnOnce()) -> Option<Syscalls> {
    let dir = TempDir::new("bench-strace");
    let out = dir.path().join("strace.txt");
    let mut child = std::process::Command::new("strace")
        .args(["-c", "-f", "-q", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // Attached once it says so in /proc (TracerPid of the main thread).
    let traced = poll_until(Duration::from_secs(5), || {
        proc_status_text(pid, "TracerPid:").is_some_and(|t| t != "0")
    });
    std::thread::sleep(Duration::from_millis(200));
    run();
    support::send_signal(child.id(), "INT");
    let _ = child.wait();
    if !traced {
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    // Rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    let mut by_name = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = fields.last() else { continue };
        if *name == "total" || fields.len() < 5 || fields[0].parse::<f64>().is_err() {
            continue;
        }
        if let Ok(calls) = fields[3].parse::<f64>() {
            by_name.push((name.to_string(), calls / commands as f64));
        }
    }
    by_name.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let total = by_name.iter().map(|(_, per)| per).sum();
    (!by_name.is_empty()).then_some(Syscalls {
        commands,
        total,
        by_name,
    })
}

fn proc_status_text(pid: u32, key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` (scripts/test.sh) runs this
    // as a smoke test with a small N so it cannot rot.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let n: usize =
        args.iter()
            .find_map(|a| a.parse().ok())
            .unwrap_or(if full { 50_000 } else { 2_000 });
    let broker = Broker::start();
    if let Some(at) = args.iter().position(|a| a == "baseline") {
        let (plan, revs) = match compare::Plan::parse(&args[at + 1..]) {
            Ok(parsed) => parsed,
            Err(why) => {
                eprintln!("baseline: {why}");
                std::process::exit(2);
            }
        };
        if revs.is_empty() {
            eprintln!(
                "baseline needs at least one revision: cargo bench --bench relay -- baseline REV [--rounds N] [--only commands|heartbeats]"
            );
            std::process::exit(2);
        }
        compare::run(&revs, &plan);
        return;
    }
    if args.iter().any(|a| a == "release") {
        // The fleet release row alone (also part of `fleet`).
        let mut rows =
            fleet::release::rows("this build", fleet::release::run(&broker, None).as_ref());
        if let Ok(exe) = std::env::var("MS500_BENCH_BASELINE") {
            let old = fleet::release::run(&broker, Some(&exe));
            rows.extend(fleet::release::rows("baseline", old.as_ref()));
        }
        print_rows(&rows);
        return;
    }
    if args.iter().any(|a| a == "fleet") {
        let rows = fleet_rows(&broker);
        print_rows(&rows);
        return;
    }
    let sub = Subscriber::new(broker.port, TOPIC_FILTER);
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut ratios: Vec<(String, f64)> = Vec::new();

    // Start to listening, broker reachable and not: median of 5 alternating starts.
    let dead_port = 1; // nobody listens on port 1
    let mut start_ms = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (k, port) in [broker.port, dead_port].into_iter().enumerate() {
            let t = Instant::now();
            // A port of its own, so readiness is a plain connect (reading
            // /proc/net/tcp on a busy test machine takes milliseconds).
            let own = support::free_port();
            let r = Relay::spawn(port, &[("SOCKET_PORT", own.to_string().as_str())]);
            let listening = poll_until(Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", own)).is_ok()
            });
            drop(r);
            start_ms[k].push(if listening {
                t.elapsed().as_secs_f64() * 1000.0
            } else {
                f64::NAN
            });
        }
    }
    for v in start_ms.iter_mut() {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    rows.push((
        "start to listening, broker up / down (median of 5)".into(),
        format!("{:.1} ms / {:.1} ms", start_ms[0][2], start_ms[1][2]),
    ));

    let mut ids = Ids(0);
    let strace_n = full.then_some(5_000.min(n));
    let relay = start_relay(&broker, None, &[]);
    let pid = relay.pid();
    let idle_rss = proc_status(pid, "VmRSS:");

    // Rounds of: direct, then each relay build, on fresh id ranges. Each
    // relay's throughput is compared with the direct run of its own round,
    // and the median over the rounds is reported (the machine is shared).
    let rounds = if full { 3 } else { 1 };
    let baseline = std::env::var("MS500_BENCH_BASELINE")
        .ok()
        .map(|exe| start_relay(&broker, Some(&exe), &[]));
    let mut relays: Vec<(&str, &Relay, Vec<Cost>)> = vec![("this build", &relay, Vec::new())];
    if let Some(old) = &baseline {
        relays.push(("baseline", old, Vec::new()));
    }
    let mut direct_runs: Vec<(Throughput, f64)> = Vec::new();
    for round in 0..rounds {
        let b0 = broker.cpu_seconds();
        let cmds = ids.take(n);
        let base = burst(&sub, n, || direct(broker.port, &cmds, None));
        let broker_cpu = (broker.cpu_seconds() - b0) / n as f64 * 10_000.0;
        direct_runs.push((base, broker_cpu));
        let last = round + 1 == rounds;
        for (_, r, costs) in relays.iter_mut() {
            costs.push(cost(
                &broker,
                &sub,
                &mut ids,
                n,
                r,
                strace_n.filter(|_| last),
            ));
        }
    }
    let peak_rss = proc_status(pid, "VmHWM:");
    let direct_rates: Vec<f64> = direct_runs.iter().map(|(t, _)| t.rate()).collect();
    rows.push((
        format!("direct QoS 1, {n} commands (median of {rounds})"),
        format!(
            "{:.0} msg/s, broker CPU {:.3} s per 10,000",
            median(&direct_rates),
            median(&direct_runs.iter().map(|(_, c)| *c).collect::<Vec<_>>())
        ),
    ));
    for (name, _, costs) in &relays {
        let per_round = |f: &dyn Fn(&Cost) -> f64| median(&costs.iter().map(f).collect::<Vec<_>>());
        for (conns, rate) in [
            (1, &(|c: &Cost| c.one.rate()) as &dyn Fn(&Cost) -> f64),
            (8, &|c: &Cost| c.eight.rate()),
        ] {
            let ratio = median(
                &costs
                    .iter()
                    .zip(&direct_rates)
                    .map(|(c, d)| rate(c) / d)
                    .collect::<Vec<_>>(),
            );
            let delivered: usize = costs
                .iter()
                .map(|c| {
                    if conns == 1 {
                        c.one.delivered
                    } else {
                        c.eight.delivered
                    }
                })
                .min()
                .unwrap_or(0);
            rows.push((
                format!("{name}: relay, {conns} connection(s), {n} burst"),
                format!(
                    "{:.0} msg/s ({ratio:.2} x direct), {delivered} delivered",
                    per_round(rate)
                ),
            ));
            ratios.push((format!("{name}: relay {conns} conn / direct"), ratio));
        }
        for (conns, pick) in [
            (1, &(|c: &Cost| c.cpu_one) as &dyn Fn(&Cost) -> (f64, f64)),
            (8, &|c: &Cost| c.cpu_eight),
        ] {
            let relay_cpu = per_round(&|c| pick(c).0);
            let broker_cpu = per_round(&|c| pick(c).1);
            rows.push((
                format!("{name}: CPU per 10,000, relay / broker, {conns} conn"),
                format!(
                    "{relay_cpu:.3} s / {broker_cpu:.3} s ({:.2} x)",
                    relay_cpu / broker_cpu
                ),
            ));
            if conns == 1 {
                ratios.push((
                    format!("{name}: relay CPU / broker CPU (1 conn)"),
                    relay_cpu / broker_cpu,
                ));
            }
        }
        if let Some(sys) = costs.last().and_then(|c| c.syscalls.as_ref()) {
            rows.push((
                format!("{name}: syscalls (strace -c -f, 1 conn)"),
                sys.describe(6),
            ));
        }
    }
    if full && relays[0].2.last().is_none_or(|c| c.syscalls.is_none()) {
        rows.push((
            "syscalls".into(),
            "not measured: strace missing or cannot attach (apt-get install strace)".into(),
        ));
    }
    let one_rate = median(&relays[0].2.iter().map(|c| c.one.rate()).collect::<Vec<_>>());
    let lost_in_rounds: usize = relays
        .iter()
        .flat_map(|(_, _, costs)| costs.iter())
        .map(|c| 2 * n - c.one.delivered - c.eight.delivered)
        .sum();
    let cpu_per_10k = median(&relays[0].2.iter().map(|c| c.cpu_one.0).collect::<Vec<_>>());
    drop(relays);
    drop(baseline);

    // Paced latency, relay vs direct.
    let paced = 2000.min(n);
    let pace = Some(Duration::from_millis(1));
    let sent = direct(broker.port, &ids.take(paced), pace);
    let seen = arrivals(&sub, paced);
    let (d50, d99) = latencies(&sent, &seen);
    let sent = through_relay(&relay, &ids.take(paced), 1, pace);
    let seen = arrivals(&sub, paced);
    let (r50, r99) = latencies(&sent, &seen);
    rows.push((
        format!("latency p50/p99, {paced} paced 1/ms, direct"),
        format!("{d50:.3} / {d99:.3} ms"),
    ));
    rows.push((
        format!("latency p50/p99, {paced} paced 1/ms, relay"),
        format!("{r50:.3} / {r99:.3} ms"),
    ));
    ratios.push(("relay p99 - direct p99 (ms)".into(), r99 - d99));

    rows.push((
        "relay RSS idle / peak (VmHWM)".into(),
        format!("{idle_rss:.1} MiB / {peak_rss:.1} MiB"),
    ));
    rows.push((
        "relay CPU per 10,000 commands".into(),
        format!("{cpu_per_10k:.3} s"),
    ));
    drop(relay);

    // Spool on vs off, same burst, same run.
    let dir = TempDir::new("bench-spool");
    let spool = dir.path().join("bench.spool");
    let spooled = Relay::start(broker.port, &[("SPOOL_FILE", spool.to_str().unwrap())]);
    spooled.expect_log("connected to broker", Duration::from_secs(10));
    let cmds = ids.take(n);
    let with_spool = burst(&sub, n, || through_relay(&spooled, &cmds, 1, None));
    drop(spooled);
    rows.push((
        format!("relay + SPOOL_FILE, 1 connection, {n} burst"),
        format!(
            "{:.0} msg/s, {} delivered",
            with_spool.rate(),
            with_spool.delivered
        ),
    ));
    ratios.push((
        "spool on / spool off (1 conn)".into(),
        with_spool.rate() / one_rate,
    ));

    // The cost of one info line per command: the same burst with LOG_LEVEL = warn.
    let quiet = Relay::start(broker.port, &[("LOG_LEVEL", "warn")]);
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = quiet.cpu_seconds();
    let cmds = ids.take(n);
    let without_log = burst(&sub, n, || through_relay(&quiet, &cmds, 1, None));
    let quiet_cpu = (quiet.cpu_seconds() - cpu0) / n as f64 * 10_000.0;
    drop(quiet);
    rows.push((
        format!("relay, LOG_LEVEL = warn, 1 connection, {n} burst"),
        format!(
            "{:.0} msg/s, {} delivered, CPU {quiet_cpu:.3} s per 10,000",
            without_log.rate(),
            without_log.delivered
        ),
    ));
    ratios.push((
        "info logging on / off (1 conn)".into(),
        one_rate / without_log.rate(),
    ));

    if full {
        // Built here, so the size is that of the code being measured.
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-static.sh");
        let out = std::process::Command::new(script)
            .stderr(std::process::Stdio::null())
            .output()
            .expect("run scripts/build-static.sh");
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let size = match std::fs::metadata(&path) {
            Ok(meta) if out.status.success() => {
                format!("{} bytes ({:.2} MB)", meta.len(), meta.len() as f64 / 1e6)
            }
            _ => "build failed".into(),
        };
        rows.push(("static binary (scripts/build-static.sh)".into(), size));
    }

    if full {
        rows.extend(fleet_rows(&broker));
    }
    print_rows(&rows);
    for (k, v) in &ratios {
        println!("{k}: {v:.3}");
    }
    let lost = lost_in_rounds
        + [&with_spool, &without_log]
            .iter()
            .map(|t| n - t.delivered)
            .sum::<usize>();
    println!("lost: {lost}");
    if lost > 0 {
        eprintln!("the relay lost {lost} commands");
        std::process::exit(1);
    }
}

/// The fleet scenario for this build and, with MS500_BENCH_BASELINE, the
/// baseline, each alone against the same broker.
fn fleet_rows(broker: &Broker) -> Vec<(String, String)> {
    let scenario = fleet::Fleet {
        cameras: 10_000,
        pace: 400,
        // A full minute at 400/s: the log's per-minute budgets (device
        // state lines) are measured over the minute they apply to, not
        // extrapolated from the part of it they are spent in.
        heartbeats: 24_000,
        commands_per_s: 50,
        // A whole minute: the status file is written every 5 s, and a
        // snapshot is a burst of work a short window may miss or catch.
        idle_secs: 60,
    };
    let mut rows = Vec::new();
    let this = fleet::run(broker, None, &scenario);
    rows.extend(fleet::rows("this build", &this));
    let released = fleet::release::run(broker, None);
    rows.extend(fleet::release::rows("this build", released.as_ref()));
    if let Ok(exe) = std::env::var("MS500_BENCH_BASELINE") {
        let old = fleet::run(broker, Some(&exe), &scenario);
        rows.extend(fleet::rows("baseline", &old));
        let released = fleet::release::run(broker, Some(&exe));
        rows.extend(fleet::release::rows("baseline", released.as_ref()));
        // Both idle CPUs below a tick read 0: "-" rather than NaN.
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "-".to_string()
            }
        };
        rows.push((
            "fleet, this build / baseline: relay CPU per heartbeat, log bytes, idle CPU 10k, idle CPU 100k, idle wake-ups 100k, RSS 100k".into(),
            [
                ratio(this.relay_cpu_per_10k, old.relay_cpu_per_10k),
                ratio(this.log_bytes_per_min, old.log_bytes_per_min),
                ratio(this.idle_10k.0, old.idle_10k.0),
                ratio(this.idle_100k.0, old.idle_100k.0),
                ratio(this.idle_100k.1, old.idle_100k.1),
                ratio(this.rss_100k_mib, old.rss_100k_mib),
            ]
            .join(", "),
        ));
    }
    rows
}

fn print_rows(rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("\n| {:width$} | result |", "measurement");
    println!("|{}|--------|", "-".repeat(width + 2));
    for (k, v) in rows {
        println!("| {k:width$} | {v} |");
    }
    println!();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
}
