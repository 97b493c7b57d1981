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
mod frame;
mod heartbeat;
mod lingering;
mod listener;
mod log_limit;
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
            let (config, path) = config::load(invocation.config.as_deref())?;
            // TLS files are part of the configuration: unreadable ones fail here too.
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
            let (config, path) = config::load(invocation.config.as_deref())?;
            init_logging(&config.log_level);
            if let Some(p) = path {
                log::debug!("configuration from {}", p.display());
            }
            relay::run(config)
        }
        Action::Send {
            commands,
            wait_secs,
        } => {
            let (config, _) = config::load(invocation.config.as_deref())?;
            init_logging("warn");
            send::run(&config, &commands, Duration::from_secs_f64(wait_secs))
        }
        Action::Watchdog => {
            let (config, path) = config::load(invocation.config.as_deref())?;
            // What check-config refuses, the watchdog refuses before starting anything.
            tls::client_config(&config)?;
            watchdog::run(&config, path.as_deref())
        }
        Action::Stop => {
            let (config, path) = config::load(invocation.config.as_deref())?;
            watchdog::stop(&config, path.as_deref())
        }
        Action::Status => {
            let (config, _) = config::load(invocation.config.as_deref())?;
            if status::show(&config, &mut std::io::stdout().lock())? {
                Ok(())
            } else {
                Err(Error::Unhealthy)
            }
        }
    }
}

/// `RUST_LOG` wins over `LOG_LEVEL` when set.
fn init_logging(level: &str) {
    let mut builder = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            builder.parse_filters(&spec);
        }
        _ => {
            let level = level.parse().unwrap_or(log::LevelFilter::Info);
            builder.filter_level(level);
            // rumqttc and rustls narrate their internals at info; keep them to warnings
            // unless asked for debug.
            if level < log::LevelFilter::Debug {
                builder.filter_module("rumqttc", log::LevelFilter::Warn);
                builder.filter_module("rustls", log::LevelFilter::Warn);
            }
        }
    }
    builder.format(|buf, record| {
        writeln!(
            buf,
            "{} {:<5} {}",
            time::iso8601_millis(std::time::SystemTime::now()),
            record.level(),
            record.args()
        )
    });
    builder.target(env_logger::Target::Stderr);
    let _ = builder.try_init();
}
