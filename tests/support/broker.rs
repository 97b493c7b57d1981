//! A real mosquitto on loopback ports the OS picked, started, restarted,
//! killed, frozen and thawed by the test.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{cpu_seconds, port_open, send_signal, wait_until, ReservedPort, TempDir, WAIT};
use crate::support::Subscriber;
use crate::support::COMMANDS;

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

/// Starts `broker` again and subscribes to every command on it: what the
/// relay sends once the broker is back.
pub fn broker_back(broker: &mut Broker) -> Subscriber {
    broker.restart();
    Subscriber::new(broker.port, COMMANDS)
}
