//! The gateway as it runs the relay: the static binary, a root holding
//! nothing but BusyBox and that binary where the README's crontab line keeps
//! the relay running, the same root finding the broker through a DNS server
//! (for each target's binary, under qemu-user), and the package a gateway
//! installs from. Slow (release builds with LTO, a chroot), so ignored by
//! default: scripts/test.sh runs them with `--ignored` after building each
//! target once. `MS500_GATEWAY_ARCH` (x86_64, aarch64, armv7, mipsel) picks
//! the target of the package and DNS tests; `MS500_RELAY_EXE` its runner.
//! The Debian and OpenWrt packages are tested in `gateway/packages.rs`.

mod support;

#[path = "gateway/packages.rs"]
mod packages;

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{
    alive, send_signal, topic, wait_listening_port, wait_until, Broker, Subscriber, TempDir,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The size goal for a static binary with TLS, on every target.
const MAX_BINARY_BYTES: u64 = 3_000_000;

/// Runs a script of the repository from elsewhere (it must not care) and
/// returns its last line of stdout, the path it promises.
fn script_output(script: &str, arch: &str) -> PathBuf {
    script_output_of(script, &[arch])
}

/// [`script_output`] with any arguments.
fn script_output_of(script: &str, args: &[&str]) -> PathBuf {
    let arch = args.join(" ");
    let out = Command::new(Path::new(REPO).join(script))
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} {arch} failed:\n{stdout}");
    print!("{stdout}");
    let last = stdout.lines().last().expect("no output");
    let path = PathBuf::from(last.trim());
    assert!(
        path.is_absolute(),
        "last line is not an absolute path: {last}"
    );
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

fn file_says(path: &Path) -> String {
    let out = Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .expect("file(1) (scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_static(file_output: &str) -> bool {
    file_output.contains("statically linked") || file_output.contains("static-pie linked")
}

/// The runner in front of the relay binary under test (e.g. qemu-aarch64-static), if any.
fn runner() -> Vec<String> {
    let mut words: Vec<String> = std::env::var("MS500_RELAY_EXE")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    words.pop();
    words
}

#[test]
#[ignore = "slow: static release build; scripts/test.sh runs it"]
fn the_static_x86_64_binary_needs_no_library_is_small_and_runs() {
    let bin = script_output("scripts/build-static.sh", "x86_64");
    let kind = file_says(&bin);
    assert!(is_static(&kind) && kind.contains("x86-64"), "{kind}");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(!ldd.contains("=>"), "ldd lists libraries:\n{ldd}");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size <= MAX_BINARY_BYTES, "{size} bytes: over the 3 MB goal");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!(
        "ms500-relay {} (target ",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
#[ignore = "slow: builds the package; scripts/test.sh runs it for each target"]
fn the_package_unpacks_and_its_binary_runs() {
    let (arch, _) = gateway_arch();
    let tarball = script_output("scripts/package.sh", &arch);
    let name = format!("ms500-relay-{}-{arch}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        tarball.file_name().unwrap().to_string_lossy(),
        format!("{name}.tar.gz")
    );
    let dir = TempDir::new("package");
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let root = dir.path().join(&name);
    let mut files: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "INSTALL.md",
            "PROTOCOL.md",
            "README.md",
            "SHA256SUMS",
            "crontab",
            "ms500-relay",
            "ms500-relay.8",
            "ms500-relay.init",
            "ms500-relay.procd",
            "relay.conf"
        ]
    );

    let bin = root.join("ms500-relay");
    let kind = file_says(&bin);
    assert!(is_static(&kind), "{kind}");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        size <= MAX_BINARY_BYTES,
        "{arch}: {size} bytes, over the 3 MB goal"
    );
    let mut words = runner();
    words.push(bin.to_string_lossy().into_owned());
    let out = Command::new(&words[0])
        .args(&words[1..])
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        version.starts_with(&format!(
            "ms500-relay {} (target ",
            env!("CARGO_PKG_VERSION")
        )),
        "{arch} binary from the package does not run: {version}"
    );
    assert!(version.contains(&arch), "{arch}: {version}");
    // The shipped configuration names the gateway's places and is valid
    // (checked with those places made here, as on a gateway).
    let shipped = std::fs::read_to_string(root.join("relay.conf")).unwrap();
    for line in [
        "PID_FILE = /run/ms500-relay/relay.pid",
        "STATUS_FILE = /run/ms500-relay/status.json",
        "SPOOL_FILE = /var/lib/ms500-relay/spool.bin",
        "LOG_FILE = /var/log/ms500-relay/relay.log",
    ] {
        assert!(
            shipped.lines().any(|l| l == line),
            "{line} missing:\n{shipped}"
        );
    }
    let places = TempDir::new("package-places");
    let local = shipped.replace("= /", &format!("= {}/", places.path().display()));
    for dir in [
        "run/ms500-relay",
        "var/lib/ms500-relay",
        "var/log/ms500-relay",
    ] {
        std::fs::create_dir_all(places.path().join(dir)).unwrap();
    }
    std::fs::write(places.path().join("relay.conf"), local).unwrap();
    let check = Command::new(&words[0])
        .args(&words[1..])
        .args(["check-config", "-c"])
        .arg(places.path().join("relay.conf"))
        .output()
        .unwrap();
    let effective = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{effective}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let crontab = std::fs::read_to_string(root.join("crontab")).unwrap();
    assert!(crontab.contains(&cron_command()), "{crontab}");
    let parses = Command::new("busybox")
        .args(["sh", "-n"])
        .arg(root.join("ms500-relay.init"))
        .status()
        .expect("busybox (scripts/test.sh installs busybox-static)");
    assert!(parses.success(), "BusyBox sh cannot parse the init script");
    // Every file is in SHA256SUMS, and each sum holds.
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{sums:?}");
    let listed = std::fs::read_to_string(root.join("SHA256SUMS")).unwrap();
    assert_eq!(listed.lines().count(), files.len() - 1, "{listed}");
    let man = std::fs::read_to_string(root.join("ms500-relay.8")).unwrap();
    assert!(man.starts_with(".TH MS500-RELAY 8") && man.contains(".B MQTT_BROKER"));
}

/// The command of the crontab line in README's "Install on a gateway"
/// section: what cron hands to `/bin/sh -c` every minute.
fn cron_command() -> String {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Install on a gateway"))
        .expect("README has an \"Install on a gateway\" section");
    let line = section
        .lines()
        .find(|l| l.starts_with("* * * * * "))
        .expect("a crontab line in that section");
    line["* * * * * ".len()..].trim().to_string()
}

/// A gateway's root file system holding BusyBox (static) and the relay's
/// static binary, nothing else: no bash, no shared library.
struct Gateway {
    root: TempDir,
}

impl Gateway {
    fn new(relay_bin: &Path, broker_port: u16) -> Gateway {
        let root = TempDir::new("gateway-root");
        let r = root.path();
        for dir in [
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "usr/local/bin",
            "etc/ms500-relay",
            "var/lib/ms500-relay",
            "var/log",
            "run",
            "tmp",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            is_static(&file_says(busybox)),
            "/bin/busybox is not the static BusyBox (scripts/test.sh installs busybox-static)"
        );
        std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
        std::fs::create_dir_all(r.join("dev")).unwrap();
        let null = Command::new("mknod")
            .args(["-m", "666"])
            .arg(r.join("dev/null"))
            .args(["c", "1", "3"])
            .status()
            .expect("mknod");
        assert!(
            null.success(),
            "cannot create /dev/null in the gateway root"
        );
        std::fs::copy(relay_bin, r.join("usr/local/bin/ms500-relay")).unwrap();
        std::fs::write(
            r.join("etc/hosts"),
            "127.0.0.1 localhost\n127.0.0.1 mqtt-broker.gateway\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/ms500-relay/relay.conf"),
            format!(
                "MQTT_BROKER = mqtt-broker.gateway\nMQTT_PORT = {broker_port}\n\
                 SOCKET_PORT = 0\n\
                 PID_FILE = /run/ms500-relay/relay.pid\n\
                 STATUS_FILE = /run/ms500-relay/status.json\n\
                 SPOOL_FILE = /var/lib/ms500-relay/spool.bin\n\
                 STATUS_INTERVAL = 1\nSHUTDOWN_GRACE = 1\n"
            ),
        )
        .unwrap();
        Gateway { root }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.root.path().join(inside.trim_start_matches('/'))
    }

    /// Runs `argv` inside the root with cron's bare environment.
    fn run(&self, argv: &[&str]) -> std::process::Output {
        Command::new("chroot")
            .arg(self.root.path())
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", "/")
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null())
            .output()
            .expect("run chroot")
    }

    /// What cron does every minute: the README's command through /bin/sh.
    fn cron(&self) -> std::process::Output {
        self.run(&["/bin/sh", "-c", &cron_command()])
    }

    /// The port the relay got (it binds port 0).
    fn relay_port(&self) -> u16 {
        wait_listening_port(self.relay_pid().expect("a pid in PID_FILE"))
    }

    fn relay_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path("/run/ms500-relay/relay.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn watchdog_log(&self) -> String {
        std::fs::read_to_string(self.path("/var/log/ms500-relay-watchdog.log")).unwrap_or_default()
    }

    fn relay_log(&self) -> String {
        std::fs::read_to_string(self.path("/run/ms500-relay/ms500-relay.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(pid) = self.relay_pid() {
            send_signal(pid, "CONT");
            send_signal(pid, "KILL");
        }
    }
}

fn status_age(gw: &Gateway) -> Option<Duration> {
    support::age(&gw.path("/run/ms500-relay/status.json"))
}

fn send_img(gw: &Gateway, id: u32) {
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", gw.relay_port())).expect("relay listens");
    s.write_all(format!(r#"{{"type":"IMG","unit":"cam-gw","id":{id}}}"#).as_bytes())
        .unwrap();
}

fn expect_command(sub: &Subscriber, id: u32, gw: &Gateway) {
    let want = format!(r#"{{"type":"IMG","unit":"cam-gw","id":{id}}}"#);
    let got = sub.recv(Duration::from_secs(10));
    assert_eq!(
        got.as_ref()
            .map(|m| (m.topic.as_str(), m.payload.as_slice())),
        Some((topic("cam-gw").as_str(), want.as_bytes())),
        "command {id} did not arrive; relay log:\n{}",
        gw.relay_log()
    );
}

#[test]
#[ignore = "slow: static release build and a chroot; scripts/test.sh runs it as root"]
fn a_busybox_only_gateway_keeps_the_relay_running_from_cron() {
    let bin = script_output("scripts/build-static.sh", "x86_64");
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let gw = Gateway::new(&bin, broker.port);
    let probe = gw.run(&["/bin/busybox", "true"]);
    support::require(
        probe.status.success(),
        &format!(
            "chroot is not permitted here ({})",
            String::from_utf8_lossy(&probe.stderr).trim()
        ),
    );
    let out = gw.run(&["/bin/busybox", "--install", "-s"]);
    assert!(out.status.success(), "{out:?}");

    // Nothing but BusyBox and the relay: no bash, no shared library, no loader.
    for entry in walk(gw.root.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name != "bash" && !name.contains(".so"),
            "{}",
            entry.display()
        );
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        if meta.is_file() {
            let kind = file_says(&entry);
            assert!(
                !kind.contains("ELF") || is_static(&kind),
                "{} is dynamically linked: {kind}",
                entry.display()
            );
        }
    }

    // (a) Not running (and /run/ms500-relay missing, as after a reboot): the cron line starts it.
    let first = gw.cron();
    assert!(
        first.status.success(),
        "{}\n{}",
        gw.watchdog_log(),
        gw.relay_log()
    );
    assert!(
        gw.watchdog_log().contains("started"),
        "{}",
        gw.watchdog_log()
    );
    let p1 = gw.relay_pid().expect("a pid in PID_FILE");
    assert!(alive(p1));
    assert!(
        gw.relay_log()
            .contains("connected to broker mqtt-broker.gateway:"),
        "the broker's host name from /etc/hosts: {}",
        gw.relay_log()
    );
    send_img(&gw, 1);
    expect_command(&sub, 1, &gw);

    // (b) Healthy: the next minute changes nothing and says nothing.
    let said = gw.watchdog_log();
    let second = gw.cron();
    assert!(second.status.success());
    assert_eq!(
        gw.watchdog_log(),
        said,
        "a healthy relay must be left alone quietly"
    );
    assert_eq!(gw.relay_pid(), Some(p1));

    // `status` inside the gateway reads the status file and says it is fine.
    let status = gw.run(&[
        "/usr/local/bin/ms500-relay",
        "status",
        "-c",
        "/etc/ms500-relay/relay.conf",
    ]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(&format!("pid {p1}")) && shown.contains("FRESH"),
        "{shown}"
    );
    assert!(shown.contains("connected"), "{shown}");

    // (c) Killed: the next minute starts a new one.
    send_signal(p1, "KILL");
    assert!(wait_until(Duration::from_secs(5), || !alive(p1)));
    let third = gw.cron();
    assert!(third.status.success(), "{third:?}\n{}", gw.watchdog_log());
    let p2 = gw.relay_pid().expect("a pid in PID_FILE");
    assert_ne!(p2, p1);
    assert!(alive(p2));
    send_img(&gw, 2);
    expect_command(&sub, 2, &gw);

    // (d) Hung (SIGSTOP): its status file goes stale, the next minute replaces it.
    send_signal(p2, "STOP");
    assert!(wait_until(Duration::from_secs(10), || status_age(&gw)
        .is_some_and(|a| a > Duration::from_millis(3500))));
    let fourth = gw.cron();
    assert!(fourth.status.success(), "{fourth:?}\n{}", gw.watchdog_log());
    assert!(gw.watchdog_log().contains("hung"), "{}", gw.watchdog_log());
    let p3 = gw.relay_pid().expect("a pid in PID_FILE");
    assert_ne!(p3, p2);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(p2)),
        "the hung relay is still there"
    );
    send_img(&gw, 3);
    expect_command(&sub, 3, &gw);
}

/// Every path under `dir`, symlinks not followed.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        out.push(path.clone());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
    }
    out
}

/// A DNS server for the gateway root, on a loopback address of its own and
/// port 53 (resolv.conf cannot name a port): it answers A queries for one
/// name with 127.0.0.1, AAAA queries for it with no address, and anything
/// else with NXDOMAIN, and remembers every name it was asked for. Just
/// enough of RFC 1035 for glibc's stub resolver, written here so that the
/// test needs nothing beyond the BusyBox root and the relay.
struct DnsServer {
    address: Ipv4Addr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    fn start(name: &str) -> DnsServer {
        // A loopback address of this process's own, so that tests run by
        // other users of the machine at the same time do not collide on port 53.
        let pid = std::process::id();
        let (socket, address) = (0..64u32)
            .find_map(|n| {
                let address = Ipv4Addr::new(
                    127,
                    53,
                    ((pid >> 8) as u8).wrapping_add(n as u8),
                    pid as u8 | 1,
                );
                UdpSocket::bind((address, 53)).ok().map(|s| (s, address))
            })
            .expect("bind a loopback address on port 53 (needs root)");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (asked, stop, name) = (asked.clone(), stop.clone(), name.to_string());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some((qname, reply)) = dns_answer(&buf[..n], &name) {
                        asked.lock().unwrap().push(qname);
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
        };
        DnsServer {
            address,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to one query (and the name asked for), or None for what is not one.
fn dns_answer(query: &[u8], name: &str) -> Option<(String, Vec<u8>)> {
    let (qdcount, flags) = (
        u16::from_be_bytes([*query.get(4)?, *query.get(5)?]),
        query.get(2)?,
    );
    if qdcount != 1 || flags & 0x80 != 0 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let qname = labels.join(".");
    let known = qname.eq_ignore_ascii_case(name);
    let with_address = known && qtype == 1;
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // id
    let rd = query[2] & 0x01;
    reply.push(0x80 | 0x04 | rd); // a response, authoritative
    reply.push(0x80 | if known { 0 } else { 3 }); // recursion available; NOERROR or NXDOMAIN
    reply.extend_from_slice(&[0, 1, 0, u8::from(with_address), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if with_address {
        // The name by pointer to the question, A, IN, TTL 60 s, 4 bytes.
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some((format!("{qname} type {qtype}"), reply))
}

/// The architecture under test and the qemu-user emulator that runs its
/// binary on this x86_64 machine (none for x86_64).
fn gateway_arch() -> (String, Option<&'static str>) {
    let arch = std::env::var("MS500_GATEWAY_ARCH").unwrap_or_else(|_| "x86_64".into());
    let qemu = match arch.as_str() {
        "x86_64" => None,
        "aarch64" => Some("qemu-aarch64-static"),
        "armv7" => Some("qemu-arm-static"),
        "mipsel" => Some("qemu-mipsel-static"),
        other => panic!("MS500_GATEWAY_ARCH={other}: not a target of scripts/build-static.sh"),
    };
    (arch, qemu)
}

/// The relay of MS500_GATEWAY_ARCH, run in a BusyBox-only root (under the
/// static qemu-user copied into that root for a foreign architecture: the
/// kernel here does not run foreign binaries by itself), finds the broker by
/// a name that only the root's DNS server knows: /etc/hosts lacks it, and
/// /etc/resolv.conf names a server the test runs on a loopback address.
#[test]
#[ignore = "slow: static release build and a chroot; scripts/test.sh runs it as root for each target"]
fn a_busybox_root_finds_the_broker_through_its_dns_server() {
    let (arch, qemu) = gateway_arch();
    let bin = script_output("scripts/build-static.sh", &arch);
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let gw = Gateway::new(&bin, broker.port);
    let probe = gw.run(&["/bin/busybox", "true"]);
    support::require(
        probe.status.success(),
        &format!(
            "chroot is not permitted here ({})",
            String::from_utf8_lossy(&probe.stderr).trim()
        ),
    );
    let dns = DnsServer::start("mqtt-broker.gateway");
    std::fs::write(gw.path("/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(
        gw.path("/etc/resolv.conf"),
        format!("nameserver {}\noptions timeout:2 attempts:3\n", dns.address),
    )
    .unwrap();
    let (mut relay, logged) = start_in_root(&gw, qemu);
    let mut seen = String::new();
    let connected = wait_until(Duration::from_secs(30), || {
        while let Ok(line) = logged.try_recv() {
            seen.push_str(&line);
            seen.push('\n');
        }
        seen.contains("connected to broker mqtt-broker.gateway:")
    });
    let asked = dns.asked();
    if connected {
        // The relay works there, not only connects: a command goes through.
        let mut backend =
            std::net::TcpStream::connect(("127.0.0.1", wait_listening_port(relay.id())))
                .expect("relay listens");
        backend
            .write_all(br#"{"type":"IMG","unit":"cam-dns","id":7}"#)
            .unwrap();
    }
    let got = sub.recv(Duration::from_secs(10));
    let _ = relay.kill();
    let _ = relay.wait();
    // Gone already: the gateway need not stop it again.
    let _ = std::fs::remove_file(gw.path("/run/ms500-relay/relay.pid"));
    assert!(
        connected,
        "{arch}: the relay did not reach the broker by name; DNS was asked {asked:?}; its log:\n{seen}"
    );
    assert!(
        asked.iter().any(|q| q == "mqtt-broker.gateway type 1"),
        "{arch}: the name was not resolved through the DNS server: {asked:?}"
    );
    assert_eq!(
        got.as_ref()
            .map(|m| (m.topic.as_str(), m.payload.as_slice())),
        Some((
            topic("cam-dns").as_str(),
            &br#"{"type":"IMG","unit":"cam-dns","id":7}"#[..]
        )),
        "{arch}: the command did not arrive"
    );
}

/// Starts the relay inside the gateway root (under `qemu`, copied into the
/// root, for a foreign architecture) with its log on stderr, whose lines
/// come through the receiver.
fn start_in_root(
    gw: &Gateway,
    qemu: Option<&str>,
) -> (std::process::Child, crossbeam_channel::Receiver<String>) {
    std::fs::create_dir_all(gw.path("/run/ms500-relay")).unwrap();
    let mut argv = Vec::new();
    if let Some(qemu) = qemu {
        let host = Path::new("/usr/bin").join(qemu);
        std::fs::copy(&host, gw.path(&format!("/usr/bin/{qemu}")))
            .unwrap_or_else(|e| panic!("copy {} (qemu-user-static): {e}", host.display()));
        argv.push(format!("/usr/bin/{qemu}"));
    }
    argv.extend(
        [
            "/usr/local/bin/ms500-relay",
            "-c",
            "/etc/ms500-relay/relay.conf",
        ]
        .map(String::from),
    );
    let mut relay = Command::new("chroot")
        .arg(gw.root.path())
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chroot");
    let stderr = relay.stderr.take().expect("piped stderr");
    let (lines, logged) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    (relay, logged)
}

/// The shell commands of INSTALL.md, in order, as an operator types them on
/// the gateway: every ```sh block, without the lines run elsewhere (`scp`,
/// `ssh`), the editor, and `send` (it needs a broker the gateway has).
fn install_md_commands(install_md: &str) -> String {
    let mut script = String::new();
    let mut in_sh = false;
    for line in install_md.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let skipped = ["scp ", "ssh ", "vi ", "/usr/local/bin/ms500-relay send"];
        if in_sh && !skipped.iter().any(|s| line.starts_with(s)) {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

#[test]
#[ignore = "slow: builds the package and runs it in a chroot; scripts/test.sh runs it as root"]
fn install_md_works_as_written_in_a_busybox_root() {
    let arch = "x86_64";
    let tarball = script_output("scripts/package.sh", arch);
    let root = TempDir::new("install-root");
    let r = root.path();
    // A bare BusyBox system: what its installer leaves, nothing of ours.
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "var/log", "run", "tmp", "dev", "root",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let null = Command::new("mknod")
        .args(["-m", "666"])
        .arg(r.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(null.success());
    std::fs::copy(&tarball, r.join("tmp").join(tarball.file_name().unwrap())).unwrap();
    let gw = Gateway { root };
    let probe = gw.run(&["/bin/busybox", "--install", "-s"]);
    support::require(probe.status.success(), "chroot is not permitted here");

    let install_md =
        std::fs::read_to_string(Path::new(REPO).join("scripts/gateway/INSTALL.md")).unwrap();
    assert!(install_md.contains("::shutdown:/etc/init.d/ms500-relay stop"));
    let script = format!("set -e\n{}", install_md_commands(&install_md));
    assert!(script.contains("check-config") && script.contains("/etc/init.d/ms500-relay start"));
    let out = gw.run(&["/bin/sh", "-c", &script]);
    assert!(
        out.status.success(),
        "INSTALL.md as written fails on BusyBox:\n{script}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = gw.relay_pid().expect("the init script started the relay");
    assert!(alive(pid));
    let crontab = std::fs::read_to_string(gw.path("/var/spool/cron/crontabs/root")).unwrap();
    assert!(crontab.contains(&cron_command()), "{crontab}");
    let stop = gw.run(&["/etc/init.d/ms500-relay", "stop"]);
    assert!(stop.status.success(), "{stop:?}");
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
    let status = gw.run(&["/etc/init.d/ms500-relay", "status"]);
    assert_eq!(status.status.code(), Some(1), "stopped: {status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("STOPPED"));
}
