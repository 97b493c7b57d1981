//! The real relay binary run as a daemon with a relay.conf the test writes:
//! its log read as it is written, its port read back, signalled, killed and
//! started again on the same relay.conf.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    cpu_seconds, read_json, relay_words, send_signal, tools, wait_listening_port, wait_until,
    Broker, Subscriber, TempDir, WAIT,
};

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
    /// Starts the relay against `broker_port` with `settings` added to
    /// relay.conf, and waits until it listens. `{dir}` in a value stands for
    /// the relay's own scratch directory ([`Relay::path`]), where a test puts
    /// the files it names (`("STATUS_FILE", "{dir}/status.json")`).
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

    /// [`Relay::start`] with a status file in the relay's directory
    /// ([`Relay::status_file`]) written every second, and `settings`.
    pub fn start_with_status(broker_port: u16, settings: &[(&str, &str)]) -> Relay {
        let mut all = vec![
            ("STATUS_FILE", "{dir}/status.json"),
            ("STATUS_INTERVAL", "1"),
        ];
        all.extend_from_slice(settings);
        Relay::start(broker_port, &all)
    }

    /// [`Relay::start`] with `MQTT_BROKER` naming the brokers on `ports` in
    /// order ([`broker_list`]), and `settings`.
    pub fn start_listing(ports: &[u16], settings: &[(&str, &str)]) -> Relay {
        let list = broker_list(ports);
        let mut all = vec![("MQTT_BROKER", list.as_str())];
        all.extend_from_slice(settings);
        Relay::start(ports[0], &all)
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
        let own = dir.path().to_string_lossy().into_owned();
        for (k, v) in settings {
            if *k != "SOCKET_PORT" {
                let v = v.replace("{dir}", &own);
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

    /// The relay's scratch directory, which holds its relay.conf.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// `name` in the relay's scratch directory: what `{dir}/name` in a
    /// setting stands for.
    pub fn path(&self, name: &str) -> PathBuf {
        self._dir.path().join(name)
    }

    /// The status file of [`Relay::start_with_status`].
    pub fn status_file(&self) -> PathBuf {
        self.path("status.json")
    }

    /// The status file as JSON; `Null` while it is not written yet.
    pub fn status(&self) -> serde_json::Value {
        read_json(&self.status_file())
    }

    /// Runs one of the relay's tools (`status`, `send`, `stop`...) on this
    /// relay's relay.conf: see [`tools::tool`].
    pub fn tool(&self, args: &[&str]) -> (i32, String, String) {
        tools::tool(args, &self.conf)
    }

    /// [`Relay::tool`] with `input` on its standard input.
    pub fn tool_with_input(&self, args: &[&str], input: &[u8]) -> (i32, String, String) {
        tools::tool_with_input(args, &self.conf, Some(input))
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

    /// Waits until the log has a line holding `needle`, and returns it.
    pub fn log_line(&self, needle: &str, timeout: Duration) -> String {
        self.expect_log(needle, timeout);
        let log = self.log();
        let line = log.lines().find(|l| l.contains(needle)).unwrap_or_default();
        line.to_string()
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

/// How many commands the relay has logged as accepted.
pub fn accepted_count(relay: &Relay) -> usize {
    relay.log().matches("INFO  accepted ").count()
}

/// `settings` with the device link on `protocol` (`MQTT_PROTOCOL`).
pub fn with_protocol<'a>(
    protocol: &'a str,
    settings: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all = settings.to_vec();
    all.push(("MQTT_PROTOCOL", protocol));
    all
}

/// A mosquitto, a subscriber to `filter` on it, then the relay started with
/// `settings` ([`Relay::start`]): the subscriber misses nothing the relay
/// publishes.
pub fn relay_with_subscriber(
    filter: &str,
    settings: &[(&str, &str)],
) -> (Broker, Relay, Subscriber) {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, filter);
    let relay = Relay::start(broker.port, settings);
    (broker, relay, sub)
}

/// `MQTT_BROKER` naming the brokers on these loopback ports, in order.
pub fn broker_list(ports: &[u16]) -> String {
    let each: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    each.join(", ")
}

/// The publish link's line once it is connected to the broker on `port`.
pub fn publish_link_on(port: u16) -> String {
    format!("{PUBLISH_LINK_UP}127.0.0.1:{port}")
}

/// The device link's line once it is connected to the broker on `port`.
pub fn device_link_on(port: u16) -> String {
    format!("device link connected to broker 127.0.0.1:{port}")
}

/// The relay on `broker_port` with its device link subscribed, at
/// LOG_LEVEL debug (single heartbeats are debug lines) and with a status
/// file ([`Relay::start_with_status`]): every heartbeat shows in both.
pub fn showing_heartbeats(broker_port: u16) -> Relay {
    let relay = Relay::start_with_status(broker_port, &[("LOG_LEVEL", "debug")]);
    relay.expect_subscribed();
    relay
}

/// A mosquitto and the relay started on it with `settings` ([`Relay::start`]).
pub fn broker_and_relay(settings: &[(&str, &str)]) -> (Broker, Relay) {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, settings);
    (broker, relay)
}

/// A mosquitto and the relay with `settings`, both links up.
pub fn ready(settings: &[(&str, &str)]) -> (Broker, Relay) {
    let (broker, relay) = broker_and_relay(settings);
    relay.expect_ready();
    (broker, relay)
}

/// A mosquitto and the relay with `settings`, its device link on MQTT
/// `protocol` ([`with_protocol`]), both links up.
pub fn ready_on(protocol: &str, settings: &[(&str, &str)]) -> (Broker, Relay) {
    let broker = Broker::start();
    let relay = Relay::start(broker.port, &with_protocol(protocol, settings));
    relay.expect_ready();
    (broker, relay)
}
