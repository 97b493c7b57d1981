//! ms500-relay: relays JSON commands from a backend TCP socket to MS500
//! cameras over MQTT, and routes device replies back.
//!
//! How a command travels: `listener` accepts a connection and starts a
//! `session`, which frames the byte stream (`frame`), validates each value
//! (`command`) and pushes it to the `publisher`, which records it in the
//! delivery ledger (`delivery`) and hands it to rumqttc; the MQTT event loop
//! (`broker`) reports acknowledgements back and routes device replies
//! (`routes`) to the backend's `outbox`.
//!
//! Log levels: error = needs a human (the relay cannot do its job); warn = a
//! peer, device or the broker misbehaved and the relay carried on; info = one
//! line per command, connection and state change; debug = internals.

mod brokers;
mod cli;
mod command;
mod config;
mod counters;
mod delivery;
mod device_link;
mod devices;
mod error;
mod files;
mod frame;
mod heartbeat;
mod lingering;
mod listener;
mod log_limit;
mod logging;
mod metrics;
mod mqtt;
mod outbox;
mod pidfile;
mod publish_link;
mod publisher;
mod redact;
mod relay;
mod routes;
mod send;
mod session;
mod shutdown;
mod spool;
mod status;
mod sys;
mod time;
mod tls;
mod watchdog;
mod wire;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use cli::Action;
use error::Error;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ms500-relay: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run() -> Result<(), Error> {
    let invocation = cli::parse(std::env::args().skip(1))?;
    let load = || config::load(invocation.config.as_deref());
    match invocation.action {
        Action::Help => {
            print!("{}", cli::HELP);
            Ok(())
        }
        Action::Version => {
            println!("ms500-relay {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Action::CheckConfig => {
            let (config, path) = load()?;
            // What the run refuses before serving is refused here too.
            files::preflight(&config)?;
            tls::client_config(&config)?;
            let mut out = std::io::stdout().lock();
            match path {
                Some(p) => writeln!(out, "# configuration from {}", p.display())?,
                None => writeln!(out, "# no configuration file found: built-in defaults")?,
            }
            for (key, value) in config.effective() {
                writeln!(out, "{key} = {}", config::quoted(&value))?;
            }
            writeln!(out, "# configuration is valid")?;
            Ok(())
        }
        Action::Run => {
            let (config, path) = load()?;
            relay::run(config, path)
        }
        Action::Send {
            commands,
            wait_secs,
        } => {
            let (config, _) = load()?;
            let log = logging::init(log::LevelFilter::Warn, &logging::Destination::Stderr)?;
            let sent = send::run(&config, &commands, Duration::from_secs_f64(wait_secs));
            log.finish();
            sent
        }
        Action::Watchdog => {
            let (config, path) = load()?;
            watchdog::run(&config, path.as_deref())
        }
        Action::Stop => {
            let (config, path) = load()?;
            watchdog::stop(&config, path.as_deref())
        }
        Action::Status { json } => {
            let (config, _) = load()?;
            status::show(&config, json, &mut std::io::stdout().lock())
        }
    }
}
