//! A real RabbitMQ 3.10 (Debian's `rabbitmq-server`) with its MQTT plugin:
//! the MQTT 3.1.1-only broker the device link must work with (issue 21).
//! One node per test, on ports the OS picked and a node name of its own,
//! all its files in a scratch directory; killed on drop. Starting one takes
//! about 8 s (the Erlang VM), so only the tests that need it use it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{free_port, port_open, wait_until, TempDir};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct Rabbit {
    /// The MQTT listener.
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl Rabbit {
    /// Whether `rabbitmq-server` is installed (scripts/test.sh installs it).
    pub fn installed() -> bool {
        Path::new(SERVER).exists()
    }

    pub fn start() -> Rabbit {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = TempDir::new("rabbit");
        let (port, amqp, dist) = (free_port(), free_port(), free_port());
        let conf = format!(
            "listeners.tcp.default = {amqp}\nmqtt.listeners.tcp.default = {port}\n\
             mqtt.allow_anonymous = true\nloopback_users = none\n"
        );
        std::fs::write(dir.path().join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        std::fs::write(dir.path().join("enabled_plugins"), "[rabbitmq_mqtt].\n")
            .expect("write enabled_plugins");
        let node = format!(
            "relay-test-{}-{}@localhost",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let d = dir.path();
        let log = std::fs::File::create(d.join("server.log")).expect("create server.log");
        let mut child = Command::new(SERVER)
            .env("RABBITMQ_NODENAME", node)
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            // The Erlang cookie is written to $HOME.
            .env("HOME", d)
            // The script then execs the Erlang VM: the child is the broker
            // itself, and killing it on drop leaves nothing behind.
            .env("RABBITMQ_ALLOW_INPUT", "true")
            // An Erlang shell that reads end-of-input stops the VM: stdin
            // stays open (kept in `child`) for as long as the broker runs.
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("the log again"))
            .stderr(log)
            .spawn()
            .expect("start rabbitmq-server");
        let up = wait_until(Duration::from_secs(60), || {
            port_open(port) || !matches!(child.try_wait(), Ok(None))
        });
        if !(up && matches!(child.try_wait(), Ok(None))) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rabbitmq did not listen on {port}; its log:\n{}",
                std::fs::read_to_string(d.join("server.log")).unwrap_or_default()
            );
        }
        Rabbit {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
