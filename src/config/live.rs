//! The running configuration, replaced whole by a reload: every thread that
//! reads a setting which may change live holds an `Arc<Live>` and takes the
//! current [`Config`] ([`Live::get`]) where it decides something; a thread
//! that sleeps between looks is woken by [`Live::watch`]. [`FIXED_KEYS`]
//! only a restart changes. The main thread's reload (`relay.rs`) replaces it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::Config;

/// Keys read once at start, which a reloaded configuration keeps at their
/// running values ([`Config::keeping_fixed`]), so that no thread ever sees
/// a setting the relay cannot honour: the listener's socket, the files the relay
/// holds open or locked, the log's destination, the MQTT identity,
/// subscriptions and device link version (what `auto` learned per broker
/// is kept for the run), and the sizes the queues and tables were made with.
pub const FIXED_KEYS: &[&str] = &[
    "SOCKET_HOST",
    "SOCKET_PORT",
    "SOCKET_PATH",
    "SOCKET_MODE",
    "SOCKET_GROUP",
    "PID_FILE",
    "SPOOL_FILE",
    "LOG_FILE",
    "LOG_SYSLOG",
    "LOG_MAX_BYTES",
    "LOG_KEEP",
    "MQTT_CLIENT_ID",
    "MQTT_QOS",
    "MQTT_PROTOCOL",
    "STATE_TOPIC",
    "HEARTBEAT_TOPIC",
    "REPLY_TOPIC",
    "QUEUE_CAPACITY",
    "QUEUE_MAX_BYTES",
    "HOLD_OFFLINE",
    "HOLD_MAX_PER_CAMERA",
    "HOLD_MAX_BYTES",
    "PRESENCE_FIELD",
    "SERIAL_AFTER",
    "SERIAL_TIMEOUT",
    "UNSEEN_WAIT",
    "MAX_DEVICES",
    "SHUTDOWN_GRACE",
];

/// Keys a reload applies to the broker links from each one's next
/// connection on: the connection up keeps what it agreed with its broker
/// (the broker list as `dialing.rs` says). The reload line names them so.
pub const AT_NEXT_CONNECTION: &[&str] = &[
    "MQTT_BROKER",
    "MQTT_PORT",
    "MQTT_KEEPALIVE",
    "MQTT_USERNAME",
    "MQTT_PASSWORD",
    "MQTT_TLS",
    "MQTT_CA_FILE",
    "MQTT_CLIENT_CERT",
    "MQTT_CLIENT_KEY",
];

/// Keys a reload applies at once, to what the relay decides next (a backend
/// connection, a command, an expiry check, a write to the broker, a sweep
/// of the devices, a log or status line). With [`FIXED_KEYS`] and
/// [`AT_NEXT_CONNECTION`], every key is in exactly one list (a test says so).
pub const AT_ONCE: &[&str] = &[
    "MQTT_MAX_PACKET_BYTES",
    "SOCKET_ALLOW",
    "SOCKET_ALLOW_USERS",
    "MAX_CONNECTIONS",
    "MAX_MESSAGE_BYTES",
    "COMMAND_TOPIC",
    "VALIDATE_FIELDS",
    "ACK_MODE",
    "COMMAND_TTL",
    "COMMAND_TTLS",
    "DEVICE_TIMEOUT",
    "DEVICE_SUMMARY_INTERVAL",
    "STATUS_FILE",
    "STATUS_INTERVAL",
    "LOG_LEVEL",
    "METRICS_FILE",
];

/// Whether `key` needs a restart to change.
pub fn is_fixed(key: &str) -> bool {
    FIXED_KEYS.contains(&key)
}

/// What a reload changes, by key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys whose new value applies now (or at the next connection).
    pub applied: Vec<&'static str>,
    /// Keys that changed in the file but keep their running value until a restart.
    pub need_restart: Vec<&'static str>,
}

impl Config {
    /// `self` (the file just read) with every key of [`FIXED_KEYS`] set back
    /// to its value in `running`, and what differs between the two.
    pub fn keeping_fixed(mut self, running: &Config) -> (Config, Changes) {
        let mut changes = Changes::default();
        let new = self.effective();
        let old = running.effective();
        for ((key, new), (_, old)) in new.iter().zip(old.iter()) {
            if new == old {
                continue;
            }
            if is_fixed(key) {
                changes.need_restart.push(key);
            } else {
                changes.applied.push(key);
            }
        }
        // MQTT_PASSWORD renders as *** either way: compare the values.
        if self.mqtt_password != running.mqtt_password {
            changes.applied.push("MQTT_PASSWORD");
        }
        self.socket_host.clone_from(&running.socket_host);
        self.socket_port = running.socket_port;
        self.socket_path.clone_from(&running.socket_path);
        self.socket_mode = running.socket_mode;
        self.socket_group.clone_from(&running.socket_group);
        self.pid_file.clone_from(&running.pid_file);
        self.spool_file.clone_from(&running.spool_file);
        self.log_file.clone_from(&running.log_file);
        self.log_syslog = running.log_syslog;
        self.log_max_bytes = running.log_max_bytes;
        self.log_keep = running.log_keep;
        self.mqtt_client_id.clone_from(&running.mqtt_client_id);
        self.mqtt_qos = running.mqtt_qos;
        self.mqtt_protocol = running.mqtt_protocol;
        self.state_topic.clone_from(&running.state_topic);
        self.heartbeat_topic.clone_from(&running.heartbeat_topic);
        self.reply_topic.clone_from(&running.reply_topic);
        self.queue_capacity = running.queue_capacity;
        self.queue_max_bytes = running.queue_max_bytes;
        self.hold_offline = running.hold_offline;
        self.hold_max_per_camera = running.hold_max_per_camera;
        self.hold_max_bytes = running.hold_max_bytes;
        self.presence_field.clone_from(&running.presence_field);
        self.serial_after.clone_from(&running.serial_after);
        self.serial_timeout = running.serial_timeout;
        self.unseen_wait = running.unseen_wait;
        self.max_devices = running.max_devices;
        self.shutdown_grace = running.shutdown_grace;
        (self, changes)
    }
}

/// The configuration in effect, replaced whole by a reload: a mutex around
/// an `Arc`, held only to clone the `Arc` (the `ArcSwap` pattern without a
/// crate).
#[derive(Debug)]
pub struct Live {
    current: Mutex<Arc<Config>>,
    /// Bumped at each replacement: a thread that caches what it built from
    /// the configuration rebuilds it when this moved.
    generation: AtomicUsize,
    /// Rung after each replacement (see [`Live::watch`]).
    watchers: Mutex<Vec<Sender<()>>>,
}

impl Live {
    pub fn new(config: Config) -> Live {
        Live {
            current: Mutex::new(Arc::new(config)),
            generation: AtomicUsize::new(0),
            watchers: Mutex::new(Vec::new()),
        }
    }

    /// A receiver that gets a message after each replacement (one waits at
    /// most: rings while nobody listens are one ring), for a thread that
    /// sleeps and must wake for a reload.
    pub fn watch(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// The configuration in effect now.
    pub fn get(&self) -> Arc<Config> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `config` in effect for every thread's next look.
    pub fn replace(&self, config: Config) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        self.generation.fetch_add(1, Ordering::SeqCst);
        // A watcher whose receiver is gone is forgotten.
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|tx| !matches!(tx.try_send(()), Err(TrySendError::Disconnected(_))));
    }

    /// How many times the configuration was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst) as u64
    }
}

impl From<Config> for Live {
    fn from(config: Config) -> Live {
        Live::new(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        crate::config::parse(text, "test").expect("a test configuration")
    }

    #[test]
    fn fixed_keys_keep_their_running_value_and_are_named() {
        let running = parse("SOCKET_PORT = 7000\nLOG_LEVEL = info\n");
        let file = parse("SOCKET_PORT = 7001\nLOG_LEVEL = debug\nACK_MODE = all\n");
        let (kept, changes) = file.keeping_fixed(&running);
        assert_eq!(kept.socket_port, 7000);
        assert_eq!(kept.log_level, log::LevelFilter::Debug);
        assert_eq!(changes.need_restart, vec!["SOCKET_PORT"]);
        assert_eq!(changes.applied, vec!["ACK_MODE", "LOG_LEVEL"]);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let running = parse("MQTT_PASSWORD = a\nMQTT_USERNAME = u\n");
        let (_, changes) = running.clone().keeping_fixed(&running);
        assert_eq!(changes, Changes::default());
        let (_, changes) = parse("MQTT_PASSWORD = b\nMQTT_USERNAME = u\n").keeping_fixed(&running);
        assert_eq!(changes.applied, vec!["MQTT_PASSWORD"]);
    }

    #[test]
    fn every_fixed_key_is_a_key_and_is_kept() {
        for key in FIXED_KEYS {
            assert!(crate::config::KEYS.iter().any(|k| k.key == *key), "{key}");
        }
        // A file that differs in every fixed key leaves the running values.
        let running = Config::default();
        let file = parse(
            "SOCKET_HOST=0.0.0.0\nSOCKET_PORT=1\nSOCKET_PATH=/r.sock\nSOCKET_MODE=600\n\
             SOCKET_GROUP=g\nPID_FILE=/p\nSPOOL_FILE=/s\nLOG_FILE=/l\n\
             LOG_SYSLOG=true\nLOG_MAX_BYTES=70000\nLOG_KEEP=5\nMQTT_CLIENT_ID=x\nMQTT_QOS=0\n\
             MQTT_PROTOCOL=3.1.1\n\
             STATE_TOPIC=s/t\nHEARTBEAT_TOPIC=h/+\nREPLY_TOPIC=r/+\nQUEUE_CAPACITY=5\n\
             QUEUE_MAX_BYTES=70000\nHOLD_OFFLINE=false\nHOLD_MAX_PER_CAMERA=5\n\
             HOLD_MAX_BYTES=70000\nPRESENCE_FIELD=cam\nSERIAL_AFTER=IMG\nSERIAL_TIMEOUT=9\n\
             UNSEEN_WAIT=9\nMAX_DEVICES=5\nSHUTDOWN_GRACE=9\n",
        );
        let (kept, changes) = file.keeping_fixed(&running);
        assert_eq!(kept, running);
        assert_eq!(changes.need_restart.len(), FIXED_KEYS.len());
    }

    #[test]
    fn every_key_is_fixed_or_applied_at_once_or_at_the_next_connection() {
        for doc in crate::config::KEYS {
            let lists = [FIXED_KEYS, AT_NEXT_CONNECTION, AT_ONCE];
            let found = lists.iter().filter(|l| l.contains(&doc.key)).count();
            assert_eq!(found, 1, "{} is in {found} lists", doc.key);
        }
        let listed = FIXED_KEYS.len() + AT_NEXT_CONNECTION.len() + AT_ONCE.len();
        assert_eq!(
            listed,
            crate::config::KEYS.len(),
            "a listed key that is none"
        );
    }

    /// The backticked keys of `text`, in order.
    fn keys_in(text: &str) -> Vec<&str> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|word| crate::config::KEYS.iter().any(|k| k.key == *word))
            .collect()
    }

    /// PROTOCOL.md's Reload paragraph names each key where this module puts it.
    #[test]
    fn the_contract_lists_the_keys_as_a_reload_applies_them() {
        let text = include_str!("../../docs/PROTOCOL.md");
        let part = |from: &str, to: &str| {
            let start = text.find(from).expect(from);
            let end = start + text[start..].find(to).expect(to);
            text[start..end].to_string()
        };
        let at_once = part("* at once, for what the relay decides next", "* from each");
        let later = part(
            "* from each broker connection's next",
            "Keys that only a restart",
        );
        let fixed = part(
            "Keys that only a restart can change (",
            ") keep their running",
        );
        fn sorted(mut v: Vec<&str>) -> Vec<&str> {
            v.sort_unstable();
            v.dedup();
            v
        }
        assert_eq!(sorted(keys_in(&at_once)), sorted(AT_ONCE.to_vec()));
        assert_eq!(sorted(keys_in(&later)), sorted(AT_NEXT_CONNECTION.to_vec()));
        assert_eq!(keys_in(&fixed), FIXED_KEYS.to_vec());
    }

    #[test]
    fn a_replacement_is_seen_by_the_next_get() {
        let live = Live::new(Config::default());
        let before = live.get();
        let watch = live.watch();
        live.replace(parse("ACK_MODE = all\n"));
        assert_eq!(live.generation(), 1);
        assert_ne!(before.ack_mode, live.get().ack_mode);
        assert!(watch.try_recv().is_ok(), "the watcher was rung");
        live.replace(Config::default());
        live.replace(Config::default());
        assert!(watch.try_recv().is_ok());
        assert!(watch.try_recv().is_err(), "two rings unheard are one");
    }
}
