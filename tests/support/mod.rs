//! Shared fixtures for the integration tests: a real mosquitto on loopback
//! ports the OS picked, the real relay binary with its own relay.conf, a real
//! MQTT subscriber, and real backend sockets. Every process is killed on drop.
//!
//! Tests run in parallel threads of one process (tests/it) and wait on what
//! the relay reports (its log lines, its files, the broker's deliveries),
//! never on a guess of how long something takes: [`WAIT`] bounds each wait.
//! A test whose prerequisite is missing fails with the reason ([`require`]).
#![allow(dead_code)]

pub mod camera;
pub mod fake_broker;
pub mod notify;
pub mod rabbit;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// How long a test waits for something the relay or the broker reports
/// before it fails: generous, as it only costs time when a test fails
/// (2 shared cores, qemu-user, and debug builds are all slow).
pub const WAIT: Duration = Duration::from_secs(20);

/// The longest a command run by [`run_bin`] may take (`send -w 20` and
/// `stop` with its grace included).
const RUN_BIN_LIMIT: Duration = Duration::from_secs(120);

/// The relay binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ms500-relay");

/// A command that runs the relay under test: [`BIN`], or the binary named by
/// `MS500_RELAY_EXE`, which may start with a runner, split at whitespace
/// (`MS500_RELAY_EXE="qemu-aarch64-static /path/to/ms500-relay"` runs an ARM
/// build under qemu; paths with spaces are not supported).
pub fn relay_command() -> Command {
    let words = relay_words();
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]);
    command
}

/// The words of [`relay_command`]: runner (if any), then the binary.
pub fn relay_words() -> Vec<String> {
    std::env::var("MS500_RELAY_EXE")
        .ok()
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .filter(|w: &Vec<String>| !w.is_empty())
        .unwrap_or_else(|| vec![BIN.to_string()])
}

/// Whether the relay under test is this machine's own debug build (so
/// LD_PRELOAD tricks such as libfaketime work on it).
pub fn testing_own_build() -> bool {
    relay_words() == [BIN.to_string()]
}

/// Whether this is a CI run (`CI=true`), where every prerequisite is present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails the test with `why` when a prerequisite is missing: a test that
/// cannot test must never pass. Tests that need root (mount, chown to
/// another user, chroot) are also `#[ignore]`d with the reason, since
/// developers rarely run tests as root; scripts/test.sh (CI) runs as root
/// and runs them with `--ignored`. Everything else they need is a package
/// scripts/test.sh installs.
#[track_caller]
pub fn require(present: bool, why: &str) {
    if present {
        return;
    }
    if in_ci() {
        panic!("prerequisite missing in CI: {why}");
    }
    panic!("prerequisite missing: {why} (scripts/test.sh installs the packages and runs as root)");
}

/// Whether the tests run as root: a file they create is root's.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("whoami");
    let probe = dir.path().join("probe");
    std::fs::write(&probe, "").expect("write a probe file");
    std::fs::metadata(&probe)
        .expect("stat the probe file")
        .uid()
        == 0
}

/// How a [`Relay`] process is started, beyond its relay.conf.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// `ulimit -n` for the relay process.
    pub open_files: Option<u32>,
    /// `umask` for the relay process (octal, as the shell takes it).
    pub umask: Option<u32>,
    /// Another relay binary (runner words included), instead of [`relay_words`].
    pub exe: Option<Vec<String>>,
}

/// A loopback port nobody listens on, never handed out twice in this test
/// process. Racy (someone may bind it before its user does): only for the
/// benchmark's relays of older builds, which cannot bind port 0. Brokers use
/// [`ReservedPort`]; the relay binds port 0 (`SOCKET_PORT = 0`) and the
/// tests read the port it got ([`listening_port`]).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A loopback port the OS picked, held for as long as this value lives by a
/// socket bound with SO_REUSEADDR that never listens. The kernel gives a
/// port in use to no other bind(port 0) nor outgoing connection, so no other
/// test or process can take it; mosquitto, which binds its listeners with
/// SO_REUSEADDR too, can still listen on it, and again after a restart.
/// (mosquitto cannot bind port 0 and report the port: `listener 0` means a
/// Unix socket to it.)
pub struct ReservedPort {
    pub port: u16,
    _holder: socket2::Socket,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        use socket2::{Domain, Socket, Type};
        let holder = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        holder.set_reuse_address(true).expect("SO_REUSEADDR");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
        holder.bind(&any.into()).expect("bind a loopback port");
        let port = holder
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("the port the OS picked");
        ReservedPort {
            port,
            _holder: holder,
        }
    }
}

/// The TCP port process `pid` listens on, from its socket descriptors and
/// /proc/PID/net/tcp{,6}; None until it listens.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, rem_address, st (0A = LISTEN), ..., inode (10th).
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit_once(':')?.1;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}

/// Waits up to [`WAIT`] for process `pid` to listen, and returns its port.
pub fn wait_listening_port(pid: u32) -> u16 {
    let mut port = None;
    wait_until(WAIT, || {
        port = listening_port(pid);
        port.is_some()
    });
    port.unwrap_or_else(|| panic!("process {pid} never listened"))
}

/// Whether every byte written on `stream` reached the peer's kernel: its
/// send queue (unacknowledged bytes, from /proc/net/tcp) is empty. The peer
/// process need not have read them, nor even be running (SIGSTOP).
pub fn peer_kernel_has_all(stream: &TcpStream) -> bool {
    let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
        return false;
    };
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address, rem_address, st, tx_queue:rx_queue, ...
        fields.len() > 4
            && port_of(fields[1]) == Some(local.port())
            && port_of(fields[2]) == Some(remote.port())
            && fields[4].split(':').next() == Some("00000000")
    })
}

/// The text of `path`; empty while it cannot be read (not written yet).
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `path` as JSON; `Null` while it cannot be read or parsed (not written yet).
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or_default()
}

/// How long ago `path` was last modified; None when it is missing.
pub fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    std::time::SystemTime::now().duration_since(modified).ok()
}

/// Whether process `pid` is alive: it exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// CPU seconds (user + system, all threads) process `pid` has used so far,
/// from /proc/PID/stat (in clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ms500-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A real mosquitto on 127.0.0.1, on ports the OS picked and kept for it
/// ([`ReservedPort`]) so that a restart comes back on the same ones.
pub struct Broker {
    pub port: u16,
    /// The main listener's port, then one per extra listener.
    ports: Vec<ReservedPort>,
    child: Option<Child>,
    dir: TempDir,
    extra: String,
    listeners: Vec<String>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("")
    }

    /// `extra` lines are appended to the listener's configuration.
    pub fn start_with(extra: &str) -> Broker {
        Broker::start_with_listeners(extra, &[])
    }

    /// As [`Broker::start_with`], plus one more listener per entry of
    /// `listeners` (its configuration lines, after its `listener` line), on
    /// a port of its own: [`Broker::listener_port`].
    pub fn start_with_listeners(extra: &str, listeners: &[String]) -> Broker {
        let mut b = Broker::unstarted(extra);
        for lines in listeners {
            b.ports.push(ReservedPort::new());
            b.listeners.push(lines.clone());
        }
        b.restart();
        b
    }

    /// A broker with its port chosen but not running yet: `restart()` starts it.
    pub fn unstarted(extra: &str) -> Broker {
        let main = ReservedPort::new();
        Broker {
            port: main.port,
            ports: vec![main],
            child: None,
            dir: TempDir::new("broker"),
            extra: extra.to_string(),
            listeners: Vec::new(),
        }
    }

    /// The port of extra listener `i` (0-based) of [`Broker::start_with_listeners`].
    pub fn listener_port(&self, i: usize) -> u16 {
        self.ports[i + 1].port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)starts mosquitto on the same ports, and waits until it listens on
    /// every one of them.
    pub fn restart(&mut self) {
        self.stop();
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(&conf, self.config()).expect("write mosquitto.conf");
        let log_path = self.dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path).expect("create mosquitto.log");
        let mut child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (scripts/test.sh installs it)");
        // Nobody else can listen on these ports: open means it is ours.
        let ports: Vec<u16> = self.ports.iter().map(|p| p.port).collect();
        let up = wait_until(WAIT, || {
            ports.iter().all(|&p| port_open(p)) || !matches!(child.try_wait(), Ok(None))
        });
        let running = matches!(child.try_wait(), Ok(None));
        if !(up && running) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mosquitto did not listen on {ports:?}; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        self.child = Some(child);
    }

    /// mosquitto.conf: the main listener with `extra`, then the extra listeners.
    fn config(&self) -> String {
        // Global options must come before the first listener.
        let (global, rest): (Vec<&str>, Vec<&str>) = self
            .extra
            .lines()
            .partition(|l| l.starts_with("per_listener_settings"));
        // No per-client queue limit: the default of 1000 would make the
        // broker itself drop messages for a slow test subscriber. `user`
        // keeps the broker from dropping root's rights, so it can read the
        // test's key files and write its persistence directory.
        let mut conf = format!(
            "{}\nuser {}\nlistener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n{}\n",
            global.join("\n"),
            whoami(),
            self.port,
            rest.join("\n")
        );
        for (i, lines) in self.listeners.iter().enumerate() {
            conf.push_str(&format!(
                "listener {} 127.0.0.1\n{lines}\n",
                self.listener_port(i)
            ));
        }
        conf
    }

    /// Kills mosquitto (SIGKILL): sessions it did not persist are lost.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.expect_closed();
        }
    }

    /// Stops mosquitto with SIGTERM, so a persistent broker saves its sessions.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "TERM");
            let _ = c.wait();
            self.expect_closed();
        }
    }

    /// Checks that nothing answers on the broker's ports once it exited (its
    /// sockets close with it, so this is immediate).
    fn expect_closed(&self) {
        let closed = wait_until(WAIT, || self.ports.iter().all(|p| !port_open(p.port)));
        // Not from a drop during a failing test: a second panic would abort.
        if !closed && !std::thread::panicking() {
            panic!("mosquitto exited but port {} still answers", self.port);
        }
    }

    /// The running mosquitto's pid (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// CPU seconds (user + system) mosquitto has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) mosquitto: connections stay open, nothing is answered.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = self.child.as_ref() {
            send_signal(c.id(), if frozen { "STOP" } else { "CONT" });
        }
    }

    /// Configuration lines for a broker that keeps sessions and queued messages across a SIGTERM restart.
    pub fn persistent_config(dir: &Path) -> String {
        format!(
            "persistence true\npersistence_location {}/\n",
            dir.display()
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.freeze(false);
        self.stop();
        if std::thread::panicking() {
            // Keep the broker's own log next to the failure.
            let kept =
                std::env::temp_dir().join(format!("ms500-failed-mosquitto-{}.log", self.port));
            if std::fs::copy(self.dir.path().join("mosquitto.log"), &kept).is_ok() {
                eprintln!("mosquitto log kept in {}", kept.display());
            }
        }
    }
}

pub fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The user running the tests (mosquitto would otherwise switch to its own user when root).
fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "root".into())
}

fn mosquitto_bin() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// The publish link's line once its CONNACK arrived (its level and the
/// two spaces after it keep the device link's "device link connected to
/// broker" line out).
pub const PUBLISH_LINK_UP: &str = "INFO  connected to broker ";

/// The device link's line once the broker acknowledged its subscription.
pub const DEVICE_LINK_SUBSCRIBED: &str = "INFO  device link subscribed to ";

/// The real relay binary with a generated relay.conf.
pub struct Relay {
    /// The backend port; 0 until read from the running process.
    port: AtomicU16,
    pub conf: PathBuf,
    /// Applies to every (re)launch.
    pub launch: Launch,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// Disconnected once the log reader reached the end of the relay's stderr.
    log_read: crossbeam_channel::Receiver<()>,
    _dir: TempDir,
}

impl Relay {
    /// Starts the relay against `broker_port` with `settings` added to relay.conf, and waits until it listens.
    pub fn start(broker_port: u16, settings: &[(&str, &str)]) -> Relay {
        Relay::start_with(broker_port, settings, Launch::default())
    }

    /// As [`Relay::start`], started as `launch` says.
    pub fn start_with(broker_port: u16, settings: &[(&str, &str)], launch: Launch) -> Relay {
        let relay = Relay::spawn_with(broker_port, settings, launch);
        let quiet = settings
            .iter()
            .any(|(k, v)| *k == "LOG_LEVEL" && ["error", "warn", "off"].contains(v));
        if quiet {
            // No info line to wait for: the port shows in /proc once it listens.
            wait_listening_port(relay.pid());
        } else {
            // Watch the log rather than probing the port: a probe would be a backend session.
            relay.expect_log(" listening on ", WAIT);
        }
        relay.port();
        relay
    }

    /// Starts the relay without waiting for it to listen.
    pub fn spawn(broker_port: u16, settings: &[(&str, &str)]) -> Relay {
        Relay::spawn_with(broker_port, settings, Launch::default())
    }

    pub fn spawn_with(broker_port: u16, settings: &[(&str, &str)], launch: Launch) -> Relay {
        let dir = TempDir::new("relay");
        // Port 0: the system picks a free port, read back by `port()`.
        let port = settings
            .iter()
            .find(|(k, _)| *k == "SOCKET_PORT")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut conf =
            format!("MQTT_BROKER = 127.0.0.1\nMQTT_PORT = {broker_port}\nSOCKET_PORT = {port}\n");
        for (k, v) in settings {
            if *k != "SOCKET_PORT" {
                conf.push_str(&format!("{k} = \"{v}\"\n"));
            }
        }
        let path = dir.path().join("relay.conf");
        std::fs::write(&path, conf).unwrap();
        let mut relay = Relay {
            port: AtomicU16::new(port),
            conf: path,
            launch,
            child: None,
            log: Arc::default(),
            log_read: crossbeam_channel::never(),
            _dir: dir,
        };
        relay.launch();
        relay
    }

    fn launch(&mut self) {
        let words = self.launch.exe.clone().unwrap_or_else(relay_words);
        let mut shell = Vec::new();
        if let Some(n) = self.launch.open_files {
            shell.push(format!("ulimit -n {n}"));
        }
        if let Some(mask) = self.launch.umask {
            shell.push(format!("umask {mask:03o}"));
        }
        let mut command = if shell.is_empty() {
            let mut c = Command::new(&words[0]);
            c.args(&words[1..]);
            c
        } else {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(format!("{} && exec \"$@\"", shell.join(" && ")))
                .arg("relay")
                .args(&words);
            c
        };
        for (k, v) in &self.launch.env {
            command.env(k, v);
        }
        let mut child = command
            .arg("-c")
            .arg(&self.conf)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start relay");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::clone(&self.log);
        let (read_all, log_read) = crossbeam_channel::bounded::<()>(0);
        self.log_read = log_read;
        std::thread::spawn(move || {
            // Dropped at the end of stderr: the log then holds every line.
            let _read_all = read_all;
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if std::env::var_os("RELAY_TEST_ECHO").is_some() {
                    eprint!("relay| {line}");
                }
                log.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        self.child = Some(child);
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The backend port. With `SOCKET_PORT = 0` it is read from the running
    /// relay the first time (waiting up to 10 s for it to listen), then
    /// written into relay.conf so a relaunch binds the same port again, as a
    /// backend reconnecting to a restarted relay expects.
    pub fn port(&self) -> u16 {
        let known = self.port.load(Ordering::SeqCst);
        if known != 0 {
            return known;
        }
        // The "listening on ADDR:PORT" line when it is logged; else /proc
        // (root only: the relay makes itself non-dumpable, which closes its
        // /proc/PID/fd to other non-root users, its own included).
        let logged = self.log().lines().find_map(|line| {
            let addr = line.split(" listening on ").nth(1)?.split(',').next()?;
            addr.rsplit_once(':')?.1.parse::<u16>().ok()
        });
        let port = logged.unwrap_or_else(|| wait_listening_port(self.pid()));
        self.port.store(port, Ordering::SeqCst);
        let conf = std::fs::read_to_string(&self.conf).unwrap();
        let pinned = conf.replacen("SOCKET_PORT = 0\n", &format!("SOCKET_PORT = {port}\n"), 1);
        std::fs::write(&self.conf, pinned).unwrap();
        port
    }

    /// CPU seconds (user + system) the relay process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The last `n` lines of the log, newest first (for assertion messages).
    pub fn log_tail(&self, n: usize) -> String {
        self.log()
            .lines()
            .rev()
            .take(n)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the log contains `needle`; panics with the log otherwise.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        self.expect_log_count(needle, 1, timeout);
    }

    /// Waits until the log contains `needle` at least `n` times; panics with the log otherwise.
    pub fn expect_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        if !wait_until(timeout, || self.log().matches(needle).count() >= n) {
            panic!(
                "relay log never showed {needle:?} {n} times; log:\n{}",
                self.log()
            );
        }
    }

    /// Waits (up to [`WAIT`]) until the publish link has connected `n` times
    /// in all: from then on commands reach the broker. (The device link's
    /// line reads "device link connected to broker".)
    pub fn expect_connected_times(&self, n: usize) {
        self.expect_log_count(PUBLISH_LINK_UP, n, WAIT);
    }

    /// Waits until the publish link is connected: [`Relay::expect_connected_times`] 1.
    pub fn expect_connected(&self) {
        self.expect_connected_times(1);
    }

    /// Waits (up to [`WAIT`]) until the broker has acknowledged the device
    /// link's subscription `n` times in all: from then on no heartbeat or
    /// reply is missed.
    pub fn expect_subscribed_times(&self, n: usize) {
        self.expect_log_count(DEVICE_LINK_SUBSCRIBED, n, WAIT);
    }

    /// Waits until the device link is subscribed: [`Relay::expect_subscribed_times`] 1.
    pub fn expect_subscribed(&self) {
        self.expect_subscribed_times(1);
    }

    /// Makes sure [`Relay::log`] holds every line the relay logged so far,
    /// its per-minute log summaries included: SIGUSR1 makes the main thread
    /// (the one that also writes those summaries) log a line, and that line
    /// is waited for. Needs LOG_LEVEL info or lower.
    pub fn sync_log(&self) {
        let snapshot = "INFO  SIGUSR1: writing the status snapshot now";
        let before = self.log().matches(snapshot).count();
        self.signal("USR1");
        self.expect_log_count(snapshot, before + 1, WAIT);
    }

    /// How many backend connections the relay has admitted so far (its
    /// "backend PEER connected" lines).
    pub fn backends_admitted(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(" INFO  backend ") && l.ends_with(" connected"))
            .count()
    }

    /// Waits until the relay has admitted `n` backend connections in all.
    pub fn expect_backends_admitted(&self, n: usize) {
        if !wait_until(WAIT, || self.backends_admitted() >= n) {
            panic!(
                "the relay never admitted {n} backends; log:\n{}",
                self.log()
            );
        }
    }

    /// Waits until both links are up: commands go out and replies come back.
    pub fn expect_ready(&self) {
        self.expect_connected();
        self.expect_subscribed();
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port())).expect("connect to relay");
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// Starts the same relay (same relay.conf) again after it exited or was killed.
    pub fn relaunch(&mut self) {
        if self.port.load(Ordering::SeqCst) == 0 && self.wait_exit(Duration::ZERO).is_none() {
            self.port();
        }
        self.kill();
        let starts = self.log().matches(" listening on ").count();
        self.launch();
        assert!(
            wait_until(WAIT, || self.log().matches(" listening on ").count()
                > starts),
            "relay did not listen again; log:\n{}",
            self.log()
        );
    }

    /// Kills the relay with SIGKILL, like a crash.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "KILL");
            let _ = c.wait();
        }
    }

    /// Waits for the relay to exit; None when it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    // The log reader has caught the last lines at the end of stderr.
                    let _ = self.log_read.recv_timeout(WAIT);
                    return Some(status);
                }
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the binary to completion with `args`, returning (exit code, stdout, stderr).
pub fn run_bin(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = relay_command()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run relay binary");
    // Read both pipes on their own threads, so a chatty command cannot block
    // on a full pipe while this thread waits for it to exit.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    // A command that should end but runs on (a relay that started when it
    // should have refused to) fails its test instead of hanging the suite.
    let ended = wait_until(RUN_BIN_LIMIT, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the relay binary");
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        ended,
        "ms500-relay {args:?} still ran after {} s; stderr:\n{err}",
        RUN_BIN_LIMIT.as_secs()
    );
    (status.code().unwrap_or(-1), out, err)
}

/// One message seen by a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// When the subscriber's thread received it.
    pub at: Instant,
}

/// A real MQTT subscriber on its own thread.
pub struct Subscriber {
    rx: crossbeam_channel::Receiver<Message>,
    pub client: Client,
    /// Set when the Subscriber is dropped: its thread then stops retrying
    /// a broker that may be gone for good.
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl Subscriber {
    /// Subscribes to `filter` (QoS 1) and waits for the SubAck.
    pub fn new(broker_port: u16, filter: &str) -> Subscriber {
        Subscriber::with_session(broker_port, filter, None)
    }

    /// With `Some(id)`: a persistent session under that client id, so messages
    /// published while the broker restarts are not missed... as far as the broker keeps them.
    pub fn with_session(broker_port: u16, filter: &str, id: Option<&str>) -> Subscriber {
        Subscriber::subscribe(broker_port, filter, id, QoS::AtLeastOnce)
    }

    /// A subscriber at `qos` (a clean session).
    pub fn with_qos(broker_port: u16, filter: &str, qos: QoS) -> Subscriber {
        Subscriber::subscribe(broker_port, filter, None, qos)
    }

    fn subscribe(broker_port: u16, filter: &str, id: Option<&str>, qos: QoS) -> Subscriber {
        static N: AtomicU32 = AtomicU32::new(0);
        let client_id = id.map(str::to_string).unwrap_or_else(|| {
            format!(
                "test-sub-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            )
        });
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", broker_port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_clean_session(id.is_none());
        let (client, mut conn) = Client::new(opts, 64);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let sub_client = client.clone();
        let filter = filter.to_string();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gone = dropped.clone();
        std::thread::spawn(move || {
            for event in conn.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub_client.try_subscribe(filter.clone(), qos);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send(Message {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                at: Instant::now(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) if gone.load(Ordering::SeqCst) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(WAIT)
            .expect("subscription acknowledged");
        Subscriber {
            rx,
            client,
            dropped,
        }
    }

    pub fn recv(&self, timeout: Duration) -> Option<Message> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Collects messages until `n` arrived or nothing came for `quiet`.
    pub fn collect(&self, n: usize, quiet: Duration) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.rx.recv_timeout(quiet) {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        out
    }

    /// Asserts nothing arrives within `wait`.
    pub fn assert_silent(&self, wait: Duration) {
        if let Ok(m) = self.rx.recv_timeout(wait) {
            panic!(
                "unexpected message on {}: {}",
                m.topic,
                String::from_utf8_lossy(&m.payload)
            );
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

/// Drives a simulated device's MQTT connection on a thread of its own.
/// After an error it waits a little before rumqttc dials again, and gives
/// up once the broker has been unreachable for 30 s: a test's broker is
/// usually gone for good by then, and a thread dialing a closed port in a
/// loop would burn a core for the rest of the test run.
pub fn pump(mut conn: rumqttc::Connection) {
    std::thread::spawn(move || {
        let mut failing_since: Option<Instant> = None;
        for event in conn.iter() {
            match event {
                Ok(_) => failing_since = None,
                // Every Client handle is gone: nothing more will be sent.
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(_) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(30) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
}

/// A short-lived MQTT publisher (a simulated device).
pub fn publish(broker_port: u16, topic: &str, payload: &[u8], qos: QoS) {
    publish_with(broker_port, topic, payload, qos, false);
}

/// [`publish`], retained (QoS 1): the broker offers it to every new subscriber.
pub fn publish_retained(broker_port: u16, topic: &str, payload: &[u8]) {
    publish_with(broker_port, topic, payload, QoS::AtLeastOnce, true);
}

fn publish_with(broker_port: u16, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut opts = MqttOptions::new(
        format!(
            "test-pub-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ),
        "127.0.0.1",
        broker_port,
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 16);
    client
        .publish(topic, qos, retain, payload.to_vec())
        .unwrap();
    client.disconnect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => return,
            Ok(Err(_)) | Err(rumqttc::RecvTimeoutError::Disconnected) => return,
            _ => {}
        }
    }
}

/// Reads lines from a backend socket until `n` lines or `timeout`.
pub fn read_lines<S: Session>(stream: &S, n: usize, timeout: Duration) -> Vec<String>
where
    for<'a> &'a S: Read,
{
    let mut reader = BufReader::new(stream);
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.ends_with('\n') {
                    lines.push(line.trim_end_matches('\n').to_string());
                    line.clear();
                }
            }
            Err(_) => break,
        }
    }
    lines
}

/// A backend's connection to the relay: TCP or the Unix socket.
pub trait Session {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl Session for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl Session for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

/// True when the relay closed the connection (read returns 0) within `timeout`.
pub fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
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

pub fn topic(unit: &str) -> String {
    format!("/service/ms500/{unit}/socket")
}

/// A plain TCP forwarder between the relay and mosquitto, so a test can cut
/// the relay's broker connection while the broker (and its subscribers) keep
/// running. Not a broker: it forwards bytes untouched.
pub struct Cutter {
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// While set, new connections are closed at once: the link stays away.
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl Cutter {
    pub fn new(broker_port: u16) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, st, re) = (Arc::clone(&conns), Arc::clone(&stop), Arc::clone(&refusing));
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                if re.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                {
                    let mut list = c.lock().unwrap();
                    list.push(inbound.try_clone().unwrap());
                    list.push(outbound.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cutter {
            port,
            conns,
            stop,
            refusing,
        }
    }

    /// While `refusing`, every new connection is closed at once.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Cuts every forwarded connection at once, as a network failure would.
    pub fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A small tmpfs mounted by the test (as root), unmounted on drop: a disk
/// that fills up, or one that is read-only.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` at a fresh directory under `parent`;
    /// fails the test ([`require`]) where mounting is not permitted.
    #[track_caller]
    pub fn mount(parent: &Path, size_kib: u64, read_only: bool) -> Tmpfs {
        let dir = parent.join("tmpfs");
        std::fs::create_dir_all(&dir).unwrap();
        let mut options = format!("size={size_kib}k,mode=0755");
        if read_only {
            options.push_str(",ro");
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &options,
                "ms500-test",
                dir.to_str().unwrap(),
            ])
            .output();
        let refused = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run mount: {e}")),
        };
        require(refused.is_none(), refused.as_deref().unwrap_or_default());
        Tmpfs { dir }
    }

    /// Fills the file system up to about `free_kib` of free space.
    pub fn fill_leaving(&self, free_kib: u64) {
        let filler = self.dir.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            if free_bytes(&self.dir) <= free_kib * 1024 {
                break;
            }
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
    }

    /// Gives the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

/// Free bytes on the file system holding `dir`, from `df`.
pub fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Descriptors the process holds now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Command number `i`: an IMG with `"id": i`, spread over 7 units.
pub fn numbered_command(i: usize) -> String {
    format!(r#"{{"type":"IMG","unit":"d{}","id":{i}}}"#, i % 7)
}

pub fn id_of(m: &Message) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&m.payload).expect("published payload is JSON");
    v["id"].as_u64().expect("id")
}

/// Collects until every id in 0..n was seen or nothing arrives for `quiet`; returns (ids seen, messages seen).
pub fn collect_ids(sub: &Subscriber, n: usize, quiet: Duration) -> (HashMap<u64, usize>, usize) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut total = 0;
    while seen.len() < n {
        match sub.recv(quiet) {
            Some(m) => {
                total += 1;
                *seen.entry(id_of(&m)).or_default() += 1;
            }
            None => break,
        }
    }
    (seen, total)
}

/// Asserts that every id in 0..n arrived (at least once) and reports the duplicates.
pub fn expect_all(sub: &Subscriber, n: usize, quiet: Duration, what: &str, relay: &Relay) {
    let (seen, total) = collect_ids(sub, n, quiet);
    let missing: Vec<u64> = (0..n as u64).filter(|i| !seen.contains_key(i)).collect();
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

/// [`expect_all`] for [`numbered_command`]s, and also that each unit's
/// commands first arrived in the order sent (ids increasing); a duplicate
/// published again after a broken link may come later, out of order.
pub fn expect_all_in_order(sub: &Subscriber, n: usize, quiet: Duration, what: &str, relay: &Relay) {
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
    let missing: Vec<u64> = (0..n as u64).filter(|i| !seen.contains_key(i)).collect();
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
    assert!(
        out_of_order.is_empty(),
        "{} commands first arrived after a later one of their unit, e.g. (later, earlier) {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
}

/// How many commands the relay has logged as accepted.
pub fn accepted_count(relay: &Relay) -> usize {
    relay.log().matches("INFO  accepted ").count()
}

/// Runs the openssl CLI in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl command line");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (`ca.key`, `ca.pem`), and `san.ext` naming 127.0.0.1
/// and localhost for the certificates it signs.
pub fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ms500 test CA",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
}

/// libfaketime's preload library, when installed.
pub fn faketime_lib() -> Option<String> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}
