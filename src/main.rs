//! The `ms500-relay` binary: reads the command line, runs what it asks for
//! (the library does the work), and maps errors to exit codes, all in one
//! place ([`Error::exit_code`]).

use std::io::Write;
use std::process::ExitCode;

use ms500_relay::cli::args::{self as cli, Action};
use ms500_relay::cli::{send, watchdog};
use ms500_relay::error::Error;
use ms500_relay::mqtt::tls;
use ms500_relay::ops::{logging, preflight};
use ms500_relay::report::status;
use ms500_relay::{config, relay};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!, which panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "ms500-relay: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run() -> Result<(), Error> {
    let invocation = cli::parse(std::env::args_os().skip(1))?;
    let load = || config::load(invocation.config.as_deref(), preflight::relay_user());
    match invocation.action {
        // write! rather than print!, which panics when stdout is a closed pipe.
        Action::Help => {
            let mut out = std::io::stdout().lock();
            write!(out, "{}", cli::HELP)?;
            out.flush()?;
            Ok(())
        }
        Action::Version => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ms500-relay {}", env!("CARGO_PKG_VERSION"))?;
            out.flush()?;
            Ok(())
        }
        Action::CheckConfig => {
            let (config, path) = load()?;
            // What the run refuses before serving is refused here too, and
            // what it warns about is warned about.
            preflight::preflight(&config)?;
            tls::client_config(&config)?;
            for warning in preflight::secret_file_warnings(&config, path.as_deref()) {
                let _ = writeln!(std::io::stderr(), "ms500-relay: warning: {warning}");
            }
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
        Action::Send { commands, wait } => {
            let (config, _) = load()?;
            let log = logging::init(log::LevelFilter::Warn, &logging::Destination::Stderr)?;
            let sent = send::run(&config, &commands, wait);
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
