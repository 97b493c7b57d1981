//! Wiring and shutdown: `run` takes the pid lock, starts the logger, binds
//! the backend socket, starts the threads (listener → sessions → job channel
//! → publisher → publish link; device link; lingering; signals), then waits
//! on the main thread for signals. SIGINT/SIGTERM stop the intake, let the
//! publisher flush for up to `SHUTDOWN_GRACE` seconds and join every thread
//! (a second one exits at once); SIGHUP reopens LOG_FILE; SIGUSR1 writes the
//! status snapshot at once. Once a second the main thread also sweeps the
//! device table for devices gone silent and writes the status snapshot and
//! metrics when due.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::RecvTimeoutError;

use crate::backend::lingering;
use crate::backend::listener;
use crate::backend::routes::ReplyRoutes;
use crate::backend::session::Shared;
use crate::config::Config;
use crate::delivery::item::Accepted;
use crate::delivery::publisher::Publisher;
use crate::devices::link::DeviceLink;
use crate::devices::table::DeviceTable;
use crate::error::Error;
use crate::mqtt::brokers::Brokers;
use crate::mqtt::dialing::Dialing;
use crate::mqtt::publish_link::{Dialer, LinkEvent, LinkShared, PublishLink, StateMessages};
use crate::mqtt::tls;
use crate::ops::counters::Counters;
use crate::ops::log_limit;
use crate::ops::logging::{self, Destination, LogHandle};
use crate::ops::pidfile::PidFile;
use crate::ops::shutdown::Stop;
use crate::ops::sys::{self, Received};
use crate::ops::{files, preflight};
use crate::report::metrics;
use crate::report::status;

/// Batches of commands parsed by sessions and not yet taken by the
/// publisher (each at most `session::BATCH_COMMANDS` commands or about
/// `session::BATCH_BYTES`). Small on purpose: these are read from a socket
/// but not yet accepted (not spooled), and the publisher's ledger
/// (`QUEUE_CAPACITY`) is the real queue; a full channel blocks the
/// sessions, which is the TCP backpressure.
const JOB_CHANNEL: usize = 2;

pub fn run(config: Config, source: Option<PathBuf>) -> Result<(), Error> {
    // The relay holds MQTT_PASSWORD and queued Wi-Fi passwords in memory:
    // no core file may carry them off (logged once the log is open).
    let no_core_dumps = sys::forbid_core_dumps();
    // Before any thread exists: signals wait for the signal thread.
    let signals =
        sys::block_signals().map_err(|e| Error::runtime_because("cannot block signals", e))?;
    let config = Arc::new(config);
    let started = SystemTime::now();
    // Everything the run would refuse, refused now with exit 2.
    preflight::preflight(&config)?;
    let tls = tls::client_config(&config)?;
    // Read once: both links trust exactly the same files.
    let transport = tls::transport(tls.clone());
    // The pid lock comes next: a second instance must say "already running"
    // (exit 3), not fail to bind the port, and touch none of the first one's files.
    let pid_file = match &config.pid_file {
        None => None,
        Some(path) => Some(PidFile::acquire(path)?),
    };
    let log = start_logging(&config)?;
    if let Some(p) = &source {
        log::debug!("configuration from {}", p.display());
    }
    for warning in preflight::secret_file_warnings(&config, source.as_deref()) {
        log::warn!("{warning}");
    }
    if let Err(e) = no_core_dumps {
        log::warn!("cannot forbid core dumps (secrets could end up in one): {e}");
    }
    let counters = Arc::new(Counters::default());
    let devices = Arc::new(Mutex::new(DeviceTable::new(config.max_devices)));
    let mut status = StatusWriter::new(&config, started);
    let link_shared = Arc::new(LinkShared::default());
    *link_shared.broker.lock().unwrap_or_else(|e| e.into_inner()) = config.brokers()[0].to_string();
    status.link = Some(Arc::clone(&link_shared));
    counters.link_down();
    // Reads the spool; a bad one never stops the start (only configuration does).
    let publisher = Publisher::new(&config, Arc::clone(&counters), Arc::clone(&link_shared))?;

    // Then bind: "cannot listen" (exit 4) comes after every configuration check,
    // and STATUS_FILE and METRICS_FILE are written only once the socket is ours.
    let socket = listener::bind(&config.socket_host, config.socket_port)?;
    let local = socket.local_addr().map_err(Error::Io)?;
    status.report(&config, &counters, &devices);

    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<Received>(8);
    let signal_thread = spawn("signals", move || watch_signals(&signals, &signal_tx))?;
    let routes = ReplyRoutes::new(config.max_devices);
    let intake = Stop::new();
    let link_stop = Stop::new();
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Vec<Accepted>>(JOB_CHANNEL);
    let (link_tx, link_rx) = crossbeam_channel::bounded::<LinkEvent>(4096);
    let client_id = config.client_id();
    let keepalive = config.mqtt_keepalive;
    let state = config
        .state_topic_for(&client_id)
        .map(|topic| StateMessages::new(topic, &client_id, started));
    let publish_link = PublishLink {
        dialing: Dialing::new(Brokers::new(config.brokers(), keepalive * 2)),
        dialer: Dialer {
            client_id: format!("{client_id}-pub"),
            keepalive,
            username: config.mqtt_username.clone(),
            password: config
                .mqtt_username
                .as_ref()
                .map(|_| config.mqtt_password.clone().unwrap_or_default()),
            tls,
            will: state.as_ref().map(|s| (s.topic.clone(), s.offline.clone())),
        },
        state: state.clone(),
        events: link_tx,
        shared: Arc::clone(&link_shared),
        counters: Arc::clone(&counters),
        stop: link_stop.clone(),
    };
    let publish_link_thread = spawn("publish-link", move || publish_link.run())?;
    let device_link = DeviceLink {
        config: Arc::clone(&config),
        brokers: config.brokers(),
        client_id: format!("{client_id}-sub"),
        transport,
        routes: routes.clone(),
        counters: Arc::clone(&counters),
        devices: Arc::clone(&devices),
        broker_in_use: Arc::clone(&link_shared.broker_in_use),
        stop: link_stop.clone(),
    };
    let device_link_thread = spawn("device-link", move || device_link.run())?;

    let grace = config.shutdown_grace;
    let publisher_thread = {
        let intake = intake.clone();
        let link_stop = link_stop.clone();
        spawn("publisher", move || {
            publisher
                .with_state(state)
                .run(jobs_rx, link_rx, intake, link_stop, grace)
        })?
    };

    let (lingering_tx, lingering_rx) = crossbeam_channel::bounded(64);
    let (lingering_wake, lingering_woken) = crossbeam_channel::bounded(1);
    let lingering_thread = {
        let stop = intake.clone();
        let cap = lingering_cap();
        spawn("lingering", move || {
            lingering::run(
                lingering_rx,
                lingering_woken,
                stop,
                grace + Duration::from_secs(1),
                cap,
            )
        })?
    };
    let shared = Arc::new(Shared {
        config: Arc::clone(&config),
        jobs: jobs_tx,
        routes,
        counters: Arc::clone(&counters),
        intake: intake.clone(),
        lingering: lingering_tx,
        lingering_wake,
    });
    let listener_thread = spawn("listener", move || listener::run(socket, shared))?;
    log::info!(
        "ms500-relay {} listening on {local}, broker {}",
        env!("CARGO_PKG_VERSION"),
        config
            .brokers()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    loop {
        match signal_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Received::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Received::Hangup) => {
                log.sink.reopen();
                log::info!("SIGHUP: log file reopened");
            }
            Ok(Received::Snapshot) => {
                log::info!("SIGUSR1: writing the status snapshot now");
                status.report(&config, &counters, &devices);
            }
            Ok(Received::Wake) => {}
            Err(RecvTimeoutError::Timeout) => {
                sweep_devices(&devices, &config);
                log_limit::tick();
                if status.due() {
                    if status.publisher_alive(&counters) {
                        status.report(&config, &counters, &devices);
                    } else if !status.failing {
                        // A stale status file is how a watchdog learns the relay is hung.
                        status.failing = true;
                        log::error!(
                            "the publisher thread has not moved for {} s: status file no longer refreshed",
                            status.stuck_for().as_secs()
                        );
                    }
                }
            }
        }
    }

    log::info!(
        "shutting down: no new commands; publishing what is queued for up to {} s",
        config.shutdown_grace.as_secs()
    );
    intake.trigger();
    join(listener_thread);
    join(publisher_thread);
    join(lingering_thread);
    // The links end within a second of the publisher's last word.
    link_stop.trigger();
    join(publish_link_thread);
    join(device_link_thread);
    status.report(&config, &counters, &devices);
    if let Some(pid_file) = pid_file {
        pid_file.release();
    }
    log::info!("stopped");
    sys::wake_signal_thread();
    join(signal_thread);
    log.finish();
    Ok(())
}

/// Installs the logger `LOG_FILE`, `LOG_SYSLOG` and `LOG_LEVEL` ask for.
fn start_logging(config: &Config) -> Result<LogHandle, Error> {
    // Without LOG_FILE, a relay the watchdog started writes the file the
    // watchdog named (its output's), rotated by the same rules.
    let watchdog_log = std::env::var_os(logging::LOG_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    let destination = match (
        config.log_syslog,
        config.log_file.as_ref().or(watchdog_log.as_ref()),
    ) {
        (true, _) => Destination::Syslog,
        (false, Some(path)) => Destination::File {
            path: path.clone(),
            max_bytes: config.log_max_bytes,
            keep: config.log_keep,
        },
        (false, None) => Destination::Stderr,
    };
    match logging::init(config.log_level, &destination) {
        Ok(log) => Ok(log),
        // A full or read-only disk must not keep the relay from serving:
        // the log goes to stderr until the next start.
        Err(e) => {
            let what = match &destination {
                Destination::File { path, .. } => format!("LOG_FILE {}", path.display()),
                _ => "LOG_SYSLOG".to_string(),
            };
            if matches!(destination, Destination::File { .. }) && files::disk_problem(&e) {
                let log = logging::init(config.log_level, &Destination::Stderr)?;
                log::error!("{what} cannot be written ({e}): logging to stderr instead");
                return Ok(log);
            }
            Err(Error::setup_because(what, e))
        }
    }
}

/// The signal thread: turns the blocked signals into messages for the main
/// thread. A second SIGINT/SIGTERM ends the process at once (exit 1); the
/// relay's own SIGUSR2 after shutdown ends the thread.
fn watch_signals(signals: &sys::HandledSignals, tx: &crossbeam_channel::Sender<Received>) {
    let mut stops = 0;
    loop {
        match sys::wait_signal(signals) {
            Ok(Received::Wake) => return,
            Ok(Received::Stop) => {
                stops += 1;
                if stops > 1 {
                    log::warn!("second signal: exiting at once");
                    log::logger().flush();
                    std::process::exit(1);
                }
                let _ = tx.try_send(Received::Stop);
            }
            Ok(other) => {
                let _ = tx.try_send(other);
            }
            Err(e) => {
                log::error!("cannot wait for signals: {e}");
                return;
            }
        }
    }
}

/// Writes `STATUS_FILE` (when set) every `STATUS_INTERVAL` seconds; a failure
/// is logged at error once, until a write succeeds again.
struct StatusWriter {
    started: SystemTime,
    /// Where the broker in use is read from.
    link: Option<Arc<LinkShared>>,
    last: Option<Instant>,
    interval: Duration,
    failing: bool,
    /// The publisher's turn count and when it last changed.
    turns: (u64, Instant),
}

impl StatusWriter {
    fn new(config: &Config, started: SystemTime) -> Self {
        StatusWriter {
            started,
            link: None,
            last: None,
            interval: config.status_interval,
            failing: false,
            turns: (0, Instant::now()),
        }
    }

    /// The publisher loop turns at least once a second; 3 intervals (and at
    /// least 5 s) without a turn means it is stuck.
    fn publisher_alive(&mut self, counters: &Counters) -> bool {
        let turns = counters.publisher_turns.load(Ordering::Relaxed);
        if turns != self.turns.0 {
            self.turns = (turns, Instant::now());
        }
        self.stuck_for() <= (self.interval * 3).max(Duration::from_secs(5))
    }

    fn stuck_for(&self) -> Duration {
        self.turns.1.elapsed()
    }

    fn due(&self) -> bool {
        self.last
            .is_none_or(|t| t.elapsed() + Duration::from_millis(50) >= self.interval)
    }

    /// Writes the snapshot (STATUS_FILE, METRICS_FILE) now; a failure is
    /// logged at error once, until a write succeeds.
    fn report(&mut self, config: &Config, counters: &Counters, devices: &Mutex<DeviceTable>) {
        if config.status_file.is_none() && config.metrics_file.is_none() {
            return;
        }
        self.last = Some(Instant::now());
        let devices = devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(status::DEVICES_SHOWN);
        let broker = match &self.link {
            Some(link) => link
                .broker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            None => config.brokers()[0].to_string(),
        };
        let snapshot = status::Snapshot {
            config,
            started: self.started,
            now: SystemTime::now(),
            counters,
            broker,
            devices,
        };
        let mut failed = Vec::new();
        if let Some(path) = &config.status_file {
            if let Err(e) = status::write(path, &snapshot) {
                failed.push(format!("STATUS_FILE {}: {e}", path.display()));
            }
        }
        if let Some(path) = &config.metrics_file {
            if let Err(e) = metrics::write(path, &snapshot) {
                failed.push(format!("METRICS_FILE {}: {e}", path.display()));
            }
        }
        if failed.is_empty() {
            self.failing = false;
        } else if !self.failing {
            self.failing = true;
            log::error!("cannot write {}", failed.join("; nor "));
        }
    }
}

/// Once a second on the main thread: devices gone silent are logged offline
/// once; devices forgotten because the table is full, once a minute at most.
fn sweep_devices(devices: &Mutex<DeviceTable>, config: &Config) {
    let timeout = config.device_timeout;
    let now = Instant::now();
    let (gone, forgotten) = {
        let mut table = devices.lock().unwrap_or_else(|e| e.into_inner());
        (table.sweep(now, timeout), table.forgotten_to_report(now))
    };
    if let Some(n) = forgotten {
        log::warn!(
            "forgot {n} devices, the longest silent (MAX_DEVICES {} reached)",
            config.max_devices
        );
    }
    for (id, silent) in gone {
        log::warn!(
            "device {id} offline: no heartbeat for {} s (DEVICE_TIMEOUT {} s)",
            silent.as_secs(),
            config.device_timeout.as_secs()
        );
    }
}

/// How many closed connections may wait for status lines at once: a quarter
/// of the descriptors the process may open (at least 16, at most 1024), so
/// they can never starve new connections or the broker link.
fn lingering_cap() -> usize {
    let limit = sys::open_files_limit().unwrap_or(1024);
    usize::try_from(limit / 4).unwrap_or(1024).clamp(16, 1024)
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::runtime_because(format!("cannot start the {name} thread"), e))
}

fn join(handle: JoinHandle<()>) {
    let name = handle.thread().name().unwrap_or("?").to_string();
    if handle.join().is_err() {
        log::error!("the {name} thread panicked");
    }
}
