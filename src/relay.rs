//! Start and shutdown, as lists of steps, on the main thread: [`run`]
//! takes the pid lock, starts the logger, binds the sockets and starts the
//! threads; then serves signals (SIGHUP: reopen the log and reload
//! relay.conf; SIGUSR1: write the status; SIGINT/SIGTERM: shut down) and,
//! between them, its deadlines (status file, device sweep, summaries,
//! systemd's watchdog). Called by `main.rs` for `run`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use rumqttc::Transport;
use rustls::ClientConfig;

use crate::backend::lingering::{self, Lingering};
use crate::backend::listener;
use crate::backend::routes::ReplyRoutes;
use crate::backend::session::Shared;
use crate::backend::sockets::{self, Listening};
use crate::checks;
use crate::checks::{places, preflight};
use crate::config::{self, Changes, Config, Live};
use crate::delivery::item::{Handover, OperatorRequest, OPERATOR_CHANNEL};
use crate::delivery::presence::{HeldView, Presence};
use crate::delivery::publisher::Publisher;
use crate::devices::link::DeviceLink;
use crate::devices::registry;
use crate::devices::summary::{self, Summary};
use crate::devices::table::{DeviceTable, WentOffline};
use crate::error::Error;
use crate::mqtt::brokers::{Brokers, InUse};
use crate::mqtt::connect::Dialer;
use crate::mqtt::dialing::Dialing;
use crate::mqtt::link_messages::{FromPublisher, LinkEvent, Told, FROM_PUBLISHER_CHANNEL};
use crate::mqtt::publish_link::{LinkShared, PublishLink, StateMessages};
use crate::mqtt::tls;
use crate::ops::counters::Counters;
use crate::ops::files;
use crate::ops::log_limit::{self, Kind};
use crate::ops::logging::{self, Destination, LogHandle};
use crate::ops::notify::Notifier;
use crate::ops::pidfile::PidFile;
use crate::ops::record::{Claim, Taken};
use crate::ops::shutdown::Stop;
use crate::ops::sync::lock;
use crate::ops::sys::{self, Received};
use crate::report::writer::{self, StatusWriter};

/// Batches of commands parsed by sessions and not yet taken by the
/// publisher (each at most `session::BATCH_COMMANDS` commands or about
/// `session::BATCH_BYTES`). Small on purpose: these are read from a socket
/// but not yet accepted (not spooled), and the publisher's ledger
/// (`QUEUE_CAPACITY`) is the real queue; a full channel blocks the
/// sessions, which is the TCP backpressure.
const JOB_CHANNEL: usize = 2;

/// `ms500-relay run`: starts, serves signals until SIGINT or SIGTERM, then
/// stops every thread in order (a second signal exits at once).
pub fn run(config: Config, source: Option<PathBuf>) -> Result<(), Error> {
    let mut relay = start(config, source)?;
    relay.serve_signals();
    relay.shut_down();
    Ok(())
}

/// What every thread is given a share of, made before any thread starts.
struct Wiring {
    /// The configuration the relay started with: what only a restart changes.
    config: Arc<Config>,
    /// The configuration in effect, replaced by SIGHUP.
    live: Arc<Live>,
    started: SystemTime,
    counters: Arc<Counters>,
    devices: Arc<Mutex<DeviceTable>>,
    link: Arc<LinkShared>,
    routes: ReplyRoutes,
    /// Cameras coming and going, for the publisher's hold.
    presence: Arc<Presence>,
    /// What the publisher holds for offline cameras, for the status file.
    held: Arc<HeldView>,
    /// Operators' requests, from sessions to the publisher.
    operator: (Sender<OperatorRequest>, Receiver<OperatorRequest>),
    /// What the publisher tells the publish link.
    to_link: (Sender<FromPublisher>, Receiver<FromPublisher>),
    /// Set on SIGINT/SIGTERM: no new backends, no new commands.
    intake: Stop,
    /// Set by the publisher once it has flushed or given up: the links end.
    link_stop: Stop,
}

/// The relay once started: what the main thread serves signals with and
/// stops in order.
struct Running {
    wiring: Wiring,
    /// relay.conf as found at start: what SIGHUP reads again.
    source: Option<PathBuf>,
    log: LogHandle,
    /// The configuration's lock and runtime record, when there is one.
    claim: Option<Claim>,
    /// Where backends connect, for the runtime record.
    listening: String,
    pid_file: Option<PidFile>,
    status: StatusWriter,
    signals: Receiver<Received>,
    threads: Threads,
    /// The periodic device line that stands for single heartbeats at info.
    device_summary: Summary,
    /// Where the cameras seen are kept across restarts (with `SPOOL_FILE`).
    cameras: Option<CamerasFile>,
    /// systemd's notification socket (does nothing without one).
    notify: Notifier,
    /// The publisher was found stuck and systemd's watchdog is not pinged (said once).
    watchdog_withheld: bool,
}

/// The registry file (`devices/registry.rs`) and when it was last written.
struct CamerasFile {
    path: PathBuf,
    /// The device table's change count it was last written at.
    saved: u64,
    saved_at: Instant,
}

/// The registry is written at most this often while devices change (and
/// at a clean stop): a fleet's flapping must not wear the flash.
const REMEMBER_EVERY: Duration = Duration::from_secs(60);

/// Every thread the relay starts, each joined at shutdown.
struct Threads {
    signals: JoinHandle<()>,
    publish_link: JoinHandle<()>,
    device_link: JoinHandle<()>,
    publisher: JoinHandle<()>,
    lingering: JoinHandle<()>,
    listener: JoinHandle<()>,
}

/// Checks everything, takes the pid lock, starts logging, binds, then
/// starts each thread; every refusal comes before the socket is bound.
fn start(config: Config, source: Option<PathBuf>) -> Result<Running, Error> {
    // The relay holds MQTT_PASSWORD and queued Wi-Fi passwords in memory:
    // no core file may carry them off (logged once the log is open).
    let no_core_dumps = sys::forbid_core_dumps();
    sys::limit_malloc_arenas();
    // Before any thread exists: signals wait for the signal thread.
    let signals =
        sys::block_signals().map_err(|e| Error::runtime_because("cannot block signals", e))?;
    let config = Arc::new(config);
    let started = SystemTime::now();
    // Everything the run would refuse, refused now with exit 2, before
    // anything is created; then the missing run-time directories.
    let tls = checks::passed(&config, source.as_deref())?;
    places::make_run_dirs(&config)?;
    // The locks come next: a second instance must say "already running"
    // (exit 3), not fail to bind the port, and touch none of the first
    // one's files. First the configuration's (whatever PID_FILE says since
    // the other started), then PID_FILE's.
    let claim = Claim::take(source.as_deref(), started)?;
    let pid_file = take_pid_lock(&config)?;
    let claim = keep_record(claim, &config, &listening_as_configured(&config));
    let log = start_logging(&config)?;
    log_start_warnings(&config, source.as_deref(), no_core_dumps);
    if let Err(why) = &claim {
        log::warn!("no runtime record of this relay ({why}): the tools find it by PID_FILE only");
    }
    let wiring = Wiring::new(config, started);
    let (cameras, remembered) = load_cameras(&wiring.config);
    lock(&wiring.devices).remember(&remembered, Instant::now());
    let remembered: Vec<_> = remembered.into_iter().map(|e| e.remembered).collect();
    let mut status = StatusWriter::new(
        &wiring.config,
        started,
        Arc::clone(&wiring.link),
        Arc::clone(&wiring.held),
    );
    status.config_loaded(source.as_deref());
    // Reads the spool; a bad one never stops the start (only configuration does).
    let publisher = Publisher::new(
        &wiring.config,
        Arc::clone(&wiring.counters),
        wiring.to_link.0.clone(),
        &remembered,
    )?
    .with_presence(Arc::clone(&wiring.presence), Arc::clone(&wiring.held))
    .with_operator(wiring.operator.1.clone())
    .with_live(Arc::clone(&wiring.live));
    // Then bind: "cannot listen" (exit 4) comes after every configuration check,
    // and STATUS_FILE and METRICS_FILE are written only once the socket is ours.
    let sockets = sockets::bind_all(&wiring.config)?;
    let local = sockets::listening_on(&sockets);
    let claim = claim.ok().flatten();
    if let Some(claim) = &claim {
        write_record(claim, &wiring.config, &local);
    }
    status.report(&wiring.config, &wiring.counters, &wiring.devices);
    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<Received>(8);
    let signal_thread = spawn("signals", move || watch_signals(&signals, &signal_tx))?;
    let threads = wiring.spawn_threads(signal_thread, publisher, tls, sockets)?;
    log_listening(&wiring.config, &local);
    let mut notify = Notifier::from_env();
    notify.ready(&format!("listening on {local}"));
    let device_summary = Summary::new(wiring.config.device_summary_interval, Instant::now(), 0);
    Ok(Running {
        wiring,
        source,
        log,
        claim,
        listening: local,
        pid_file,
        status,
        signals: signal_rx,
        device_summary,
        threads,
        cameras,
        notify,
        watchdog_withheld: false,
    })
}

/// Writes the cameras seen to their file when they changed (and at most
/// every [`REMEMBER_EVERY`]), or now (`stopping`).
fn remember_cameras(file: Option<&mut CamerasFile>, wiring: &Wiring, stopping: bool) {
    let Some(file) = file else {
        return;
    };
    let (changes, entries) = {
        let table = lock(&wiring.devices);
        let changes = table.changes();
        let due = changes != file.saved && (stopping || file.saved_at.elapsed() >= REMEMBER_EVERY);
        if !due {
            return;
        }
        let timeout = wiring.live.get().device_timeout;
        (changes, table.to_remember(Instant::now(), timeout))
    };
    file.saved_at = Instant::now();
    match registry::save(&file.path, &entries) {
        Ok(()) => file.saved = changes,
        Err(e) => log::warn!(
            "cannot keep the cameras seen in {}: {e} (tried again in {} s)",
            file.path.display(),
            REMEMBER_EVERY.as_secs()
        ),
    }
}

/// The cameras the last run saw (with `SPOOL_FILE`): a file that cannot be
/// read is logged and the relay starts knowing none.
fn load_cameras(config: &Config) -> (Option<CamerasFile>, Vec<registry::Entry>) {
    let Some(spool) = &config.spool_file else {
        return (None, Vec::new());
    };
    let path = registry::path_for(spool);
    let entries = match registry::load(&path, config.max_devices) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!(
                "cannot read the cameras seen before, {}: {e}; every camera counts as never seen",
                path.display()
            );
            Vec::new()
        }
    };
    if !entries.is_empty() {
        log::info!(
            "{} cameras seen before ({}): their presence is unknown until their next heartbeat",
            entries.len(),
            path.display()
        );
    }
    let file = CamerasFile {
        path,
        saved: 0,
        saved_at: Instant::now(),
    };
    (Some(file), entries)
}

fn take_pid_lock(config: &Config) -> Result<Option<PidFile>, Error> {
    config.pid_file.as_deref().map(PidFile::acquire).transpose()
}

/// Where backends will connect, before the sockets are bound.
fn listening_as_configured(config: &Config) -> String {
    match &config.socket_path {
        Some(path) if config.socket_host.is_empty() => path.display().to_string(),
        _ => format!("{}:{}", config.socket_host, config.socket_port),
    }
}

/// The configuration's claim with its first record written (at once, so
/// the tools can name the lock's holder while the relay starts); `Ok(None)`
/// without relay.conf, `Err` why there is no record.
fn keep_record(taken: Taken, config: &Config, listening: &str) -> Result<Option<Claim>, String> {
    match taken {
        Taken::Claimed(claim) => match claim.write(config, listening) {
            Ok(()) => Ok(Some(claim)),
            Err(e) => Err(format!("cannot write it: {e}")),
        },
        Taken::Unkeyed => Ok(None),
        Taken::Unkept(why) => Err(why),
    }
}

/// Rewrites the runtime record; a failure is logged (the tools then find
/// the relay by what it wrote before, or by PID_FILE).
fn write_record(claim: &Claim, config: &Config, listening: &str) {
    if let Err(e) = claim.write(config, listening) {
        log::warn!("cannot rewrite the runtime record: {e}");
    }
}

/// What the start has to say once the log is open.
fn log_start_warnings(config: &Config, source: Option<&Path>, no_core_dumps: io::Result<()>) {
    if let Some(p) = source {
        log::debug!("configuration from {}", p.display());
    }
    for warning in preflight::secret_file_warnings(config, source) {
        log::warn!("{warning}");
    }
    if let Err(e) = no_core_dumps {
        log::warn!("cannot forbid core dumps (secrets could end up in one): {e}");
    }
}

fn log_listening(config: &Config, local: &str) {
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
}

impl Wiring {
    fn new(config: Arc<Config>, started: SystemTime) -> Wiring {
        let counters = Arc::new(Counters::default());
        let link = Arc::new(LinkShared {
            broker_in_use: Arc::new(InUse::new(config.broker_list().first().clone())),
        });
        counters.link_down();
        Wiring {
            devices: Arc::new(Mutex::new(DeviceTable::new(config.max_devices))),
            routes: ReplyRoutes::new(config.max_devices),
            presence: Arc::default(),
            held: Arc::default(),
            operator: crossbeam_channel::bounded(OPERATOR_CHANNEL),
            to_link: crossbeam_channel::bounded(FROM_PUBLISHER_CHANNEL),
            live: Arc::new(Live::new(Config::clone(&config))),
            config,
            started,
            counters,
            link,
            intake: Stop::new(),
            link_stop: Stop::new(),
        }
    }

    /// Starts the threads in the order commands travel backwards: the links
    /// first, then the publisher, the lingering thread and the listener.
    fn spawn_threads(
        &self,
        signals: JoinHandle<()>,
        publisher: Publisher,
        tls: Option<Arc<ClientConfig>>,
        sockets: Vec<Listening>,
    ) -> Result<Threads, Error> {
        let client_id = self.config.client_id();
        let state = self
            .config
            .state_topic_for(&client_id)
            .map(|topic| StateMessages::new(topic, &client_id, self.started));
        // Read once: both links trust exactly the same files.
        let transport = tls::transport(tls.clone());
        let (link_tx, link_rx) = crossbeam_channel::bounded::<LinkEvent>(4096);
        let publish_link = self.spawn_publish_link(&client_id, tls, state.clone(), link_tx)?;
        let device_link = self.spawn_device_link(&client_id, transport)?;
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Handover>(JOB_CHANNEL);
        let publisher = self.spawn_publisher(publisher.with_state(state), jobs_rx, link_rx)?;
        let (handed_tx, handed_rx) = crossbeam_channel::bounded::<Lingering>(64);
        let (wake_tx, woken) = crossbeam_channel::bounded(1);
        let lingering = self.spawn_lingering(handed_rx, woken)?;
        let listener = self.spawn_listener(sockets, jobs_tx, handed_tx, wake_tx)?;
        Ok(Threads {
            signals,
            publish_link,
            device_link,
            publisher,
            lingering,
            listener,
        })
    }

    fn spawn_publish_link(
        &self,
        client_id: &str,
        tls: Option<Arc<ClientConfig>>,
        state: Option<StateMessages>,
        events: Sender<LinkEvent>,
    ) -> Result<JoinHandle<()>, Error> {
        let config = &self.config;
        let keepalive = config.mqtt_keepalive;
        let publish_link = PublishLink {
            dialing: Dialing::new(Brokers::new(config.broker_list(), keepalive * 2)),
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
                stop: self.link_stop.clone(),
            },
            state,
            events,
            told: Told::new(self.to_link.1.clone()),
            shared: Arc::clone(&self.link),
            counters: Arc::clone(&self.counters),
            stop: self.link_stop.clone(),
            live: Arc::clone(&self.live),
            reloaded: self.live.watch(),
        };
        spawn("publish-link", move || publish_link.run())
    }

    fn spawn_device_link(
        &self,
        client_id: &str,
        transport: Transport,
    ) -> Result<JoinHandle<()>, Error> {
        let device_link = DeviceLink {
            config: Arc::clone(&self.live),
            client_id: format!("{client_id}-sub"),
            transport,
            routes: self.routes.clone(),
            counters: Arc::clone(&self.counters),
            devices: Arc::clone(&self.devices),
            presence: Arc::clone(&self.presence),
            broker_in_use: Arc::clone(&self.link.broker_in_use),
            stop: self.link_stop.clone(),
            intake: self.intake.clone(),
        };
        spawn("device-link", move || device_link.run())
    }

    fn spawn_publisher(
        &self,
        publisher: Publisher,
        jobs: Receiver<Handover>,
        link: Receiver<LinkEvent>,
    ) -> Result<JoinHandle<()>, Error> {
        let intake = self.intake.clone();
        let link_stop = self.link_stop.clone();
        let grace = self.config.shutdown_grace;
        spawn("publisher", move || {
            publisher.run(jobs, link, intake, link_stop, grace)
        })
    }

    /// The lingering thread: takes closed connections still owed status lines.
    fn spawn_lingering(
        &self,
        handed: Receiver<Lingering>,
        woken: Receiver<()>,
    ) -> Result<JoinHandle<()>, Error> {
        let stop = self.intake.clone();
        let grace = self.config.shutdown_grace + Duration::from_secs(1);
        let cap = lingering_cap();
        spawn("lingering", move || {
            lingering::run(handed, woken, stop, grace, cap)
        })
    }

    fn spawn_listener(
        &self,
        sockets: Vec<Listening>,
        jobs: Sender<Handover>,
        lingering: Sender<Lingering>,
        lingering_wake: Sender<()>,
    ) -> Result<JoinHandle<()>, Error> {
        let shared = Arc::new(Shared {
            config: Arc::clone(&self.live),
            jobs,
            operator: self.operator.0.clone(),
            routes: self.routes.clone(),
            counters: Arc::clone(&self.counters),
            intake: self.intake.clone(),
            lingering,
            lingering_wake,
        });
        spawn("listener", move || listener::run(sockets, shared))
    }
}

/// The main thread sweeps for silent devices at most this often, so
/// devices going quiet one after another cost one wake-up per second at
/// most, not one each.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The longest the main thread sleeps with no deadline at all.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

impl Running {
    /// The main thread until SIGINT/SIGTERM: signals as they come; between
    /// them it sleeps until its next deadline (`next_wake`) or its bell.
    fn serve_signals(&mut self) {
        let mut swept = Instant::now();
        loop {
            let wait = self
                .next_wake(swept)
                .saturating_duration_since(Instant::now());
            let bells = (
                self.wiring.counters.state_bell.heard(),
                log_limit::bell().heard(),
            );
            crossbeam_channel::select! {
                recv(self.signals) -> signal => match signal {
                    Ok(Received::Stop) | Err(_) => return,
                    Ok(Received::Hangup) => {
                        self.notify.reloading();
                        self.log.sink.reopen();
                        let outcome = self.reload();
                        self.notify.ready(&outcome);
                    }
                    Ok(Received::Snapshot) => {
                        log::info!("SIGUSR1: writing the status snapshot now");
                        self.report();
                    }
                    Ok(Received::Wake) => {}
                },
                recv(bells.0) -> _ => self.on_deadlines(&mut swept),
                recv(bells.1) -> _ => {}
                default(wait) => self.on_deadlines(&mut swept),
            }
        }
    }

    /// The earliest of: the next device going offline (no sooner than
    /// [`SWEEP_EVERY`] after the last sweep), the device summary line, a
    /// rate-limit summary, the forgotten-devices line, the status
    /// snapshot and systemd's watchdog ping.
    fn next_wake(&self, swept: Instant) -> Instant {
        let w = &self.wiring;
        let config = w.live.get();
        let (offline, forgotten) = {
            let table = lock(&w.devices);
            (
                table.next_offline_at(config.device_timeout),
                table.next_forgotten_report(),
            )
        };
        let offline = offline.map(|at| at.max(swept + SWEEP_EVERY));
        let remember = self.cameras.as_ref().and_then(|file| {
            let changed = lock(&w.devices).changes() != file.saved;
            changed.then_some(file.saved_at + REMEMBER_EVERY)
        });
        [
            offline,
            forgotten,
            remember,
            Some(self.device_summary.next_due()),
            log_limit::next_due(),
            self.status.next_due(&config),
            self.notify.next_ping(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + IDLE_WAKE)
    }

    /// Whatever is due: the sweep, the summary lines, the status snapshot,
    /// the watchdog ping (each checks its own time).
    fn on_deadlines(&mut self, swept: &mut Instant) {
        let w = &self.wiring;
        let config = w.live.get();
        *swept = Instant::now();
        sweep_devices(&w.devices, &config);
        let heartbeats = w.counters.heartbeats.load(Ordering::Relaxed);
        if let Some(rate) = self.device_summary.due(Instant::now(), heartbeats) {
            let counts = lock(&w.devices).counts();
            log::info!("{}", summary::line(counts.known, counts.online, rate));
        }
        log_limit::tick();
        self.status.tick(&config, &w.counters, &w.devices);
        remember_cameras(self.cameras.as_mut(), &self.wiring, false);
        self.ping_watchdog(&config);
    }

    /// systemd's watchdog, when it is due: pinged while the publisher keeps
    /// its turns (the rule that keeps the status file fresh), withheld
    /// while it is stuck, so that systemd restarts a hung relay.
    fn ping_watchdog(&mut self, config: &Config) {
        let now = Instant::now();
        let turns =
            writer::publisher_keeps_turns(config.status_interval, &self.wiring.counters, now);
        if !self.notify.ping_when_due(now, turns.is_ok()) {
            return;
        }
        match turns {
            Ok(()) => self.watchdog_withheld = false,
            Err(late) if !self.watchdog_withheld => {
                self.watchdog_withheld = true;
                log::error!(
                    "the publisher thread is {} s late for its turn: systemd's watchdog is no longer pinged",
                    late.as_secs()
                );
            }
            Err(_) => {}
        }
    }

    fn report(&mut self) {
        let w = &self.wiring;
        self.status.report(&w.live.get(), &w.counters, &w.devices);
    }

    /// SIGHUP: reads relay.conf again. A file with any error is refused
    /// whole (one error line; the running configuration stays); otherwise
    /// it replaces the running one, except for the keys only a restart can
    /// change, which are named once in a warning and keep their values.
    /// Returns the outcome in a few words, for systemd's `STATUS=`.
    fn reload(&mut self) -> String {
        let running = self.wiring.live.get();
        let (config, changes) = match read_again(self.source.as_deref(), &running) {
            Ok(reloaded) => reloaded,
            Err(e) => {
                log::error!("SIGHUP: log file reopened; relay.conf refused, the running configuration is kept: {e}");
                return format!(
                    "relay.conf refused at the last reload, the running configuration is kept: {e}"
                );
            }
        };
        if !changes.need_restart.is_empty() {
            log::warn!(
                "SIGHUP: {} changed in relay.conf but only apply at a restart: the running values are kept",
                changes.need_restart.join(", ")
            );
        }
        let level = (config.log_level != running.log_level).then_some(config.log_level);
        self.device_summary
            .set_every(config.device_summary_interval);
        if let Some(claim) = &self.claim {
            write_record(claim, &config, &self.listening);
        }
        self.wiring.live.replace(config);
        self.status.config_loaded(self.source.as_deref());
        log::info!(
            "SIGHUP: log file reopened; relay.conf {}",
            reloaded(&changes)
        );
        // After the line above, so that a quieter level still shows it.
        if let Some(level) = level {
            self.log.set_level(level);
        }
        self.report();
        "relay.conf reloaded".to_string()
    }

    /// Stops in order: the intake (listener, sessions), the publisher once it
    /// has flushed or the grace ran out, the links, then the last snapshot,
    /// the pid file, the signal thread and the log.
    fn shut_down(mut self) {
        let grace = self.wiring.config.shutdown_grace.as_secs();
        self.notify.stopping(&format!(
            "shutting down: publishing what is queued for up to {grace} s"
        ));
        log::info!("shutting down: no new commands; publishing what is queued for up to {grace} s");
        let threads = self.threads;
        self.wiring.intake.trigger();
        join(threads.listener);
        join(threads.publisher);
        join(threads.lingering);
        // The links end at once: the stop nudges both (a shut socket, a DISCONNECT).
        self.wiring.link_stop.trigger();
        join(threads.publish_link);
        join(threads.device_link);
        remember_cameras(self.cameras.as_mut(), &self.wiring, true);
        let w = &self.wiring;
        self.status
            .report_stopped(&w.live.get(), &w.counters, &w.devices);
        if let Some(pid_file) = self.pid_file {
            pid_file.release();
        }
        if let Some(claim) = self.claim {
            claim.release(&w.live.get(), &self.listening);
        }
        log::info!("stopped");
        sys::wake_signal_thread();
        join(threads.signals);
        self.log.finish();
    }
}

/// What the reload line says was applied: every key whose new value is in
/// effect, and which of them the broker links take only from their next
/// connection.
fn reloaded(changes: &Changes) -> String {
    if changes.applied.is_empty() {
        return "read again: nothing to apply".into();
    }
    let later: Vec<&str> = changes
        .applied
        .iter()
        .copied()
        .filter(|key| config::AT_NEXT_CONNECTION.contains(key))
        .collect();
    let mut line = format!("reloaded: {} applied", changes.applied.join(", "));
    if !later.is_empty() {
        line.push_str(&format!(
            " ({} from each broker link's next connection)",
            later.join(", ")
        ));
    }
    line
}

/// relay.conf read again from `source` (searched again when the relay
/// started without one) and checked whole as the start checks it (the
/// same function `check-config` and `ms500-relay reload` run, so the tool
/// refuses what this refuses), then with the keys that need a restart kept
/// at their values in `running`; a new STATUS_FILE or METRICS_FILE place
/// has its missing directories made as at start.
fn read_again(source: Option<&Path>, running: &Config) -> Result<(Config, Changes), Error> {
    let config = config::load(source, preflight::relay_user())?.config;
    checks::passed(&config, source)?;
    let (config, changes) = config.keeping_fixed(running);
    places::make_run_dirs(&config)?;
    Ok((config, changes))
}

/// Installs the logger `LOG_FILE`, `LOG_SYSLOG` and `LOG_LEVEL` ask for.
fn start_logging(config: &Config) -> Result<LogHandle, Error> {
    // Without LOG_FILE, a relay the watchdog started writes the file the
    // watchdog named (its output's), rotated by the same rules.
    let watchdog_log = std::env::var_os(logging::LOG_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    let plain = match config.log_file.as_ref().or(watchdog_log.as_ref()) {
        Some(path) => Destination::File {
            path: path.clone(),
            max_bytes: config.log_max_bytes,
            keep: config.log_keep,
        },
        None => Destination::Stderr,
    };
    // Syslog falls back to the file (or stderr) while it cannot be reached.
    let destination = if config.log_syslog {
        Destination::Syslog(Box::new(plain))
    } else {
        plain
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

/// On the main thread, when a device's silence crosses DEVICE_TIMEOUT:
/// devices gone silent are logged offline once; devices forgotten because
/// the table is full, once a minute at most. (The publisher's policy
/// judges presence itself, from the same heartbeats.)
fn sweep_devices(devices: &Mutex<DeviceTable>, config: &Config) {
    let timeout = config.device_timeout;
    let now = Instant::now();
    let (gone, forgotten) = {
        let mut table = lock(devices);
        (table.sweep(now, timeout), table.forgotten_to_report(now))
    };
    if let Some(n) = forgotten {
        log::warn!(
            "forgot {n} devices, the longest silent (MAX_DEVICES {} reached)",
            config.max_devices
        );
    }
    // The log takes the first few (a fleet that goes dark together is
    // summed up by log_limit).
    let many = gone.len() >= MANY_DEVICES;
    for WentOffline { id, silent } in gone {
        if log_limit::allow(Kind::DeviceOffline) {
            log::warn!(
                "device {id} offline: no heartbeat for {} s (DEVICE_TIMEOUT {} s)",
                silent.as_secs(),
                config.device_timeout.as_secs()
            );
        }
    }
    if many {
        sys::release_free_memory();
    }
}

/// So many devices changed at once that what their changes took (the
/// sweep's list, the presence board) is worth giving back to the kernel.
const MANY_DEVICES: usize = 1000;

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
