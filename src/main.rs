//! The `ms500-relay` binary: reads the command line, hands each action to
//! the library, and maps errors to exit codes, all in one place
//! ([`Error::exit_code`]).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::Write;
use std::process::ExitCode;

use ms500_relay::cli::args::{self, Action};
use ms500_relay::cli::{check, conf, manual, operator, send, watchdog};
use ms500_relay::error::Error;
use ms500_relay::relay;
use ms500_relay::report::status;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, Error::Reported(_)) {
                // Not eprintln!, which panics when stderr is a closed pipe.
                let _ = writeln!(std::io::stderr(), "ms500-relay: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run() -> Result<(), Error> {
    let invocation = args::parse(std::env::args_os().skip(1))?;
    let path = invocation.config.as_deref();
    match invocation.action {
        Action::Help => print(args::HELP),
        Action::Manual => print(&manual::page()),
        Action::Version => print(&format!("{}\n", args::version_line())),
        Action::CheckConfig => check::main(path),
        Action::Run => {
            let loaded = conf::load(path)?;
            relay::run(loaded.config, loaded.source)
        }
        Action::Send { commands, wait } => send::main(path, &commands, wait),
        Action::Watchdog => watchdog::main(path),
        Action::Stop => {
            let loaded = conf::load_needing(path, "stop", &["PID_FILE"])?;
            watchdog::stop(&loaded.config, loaded.source.as_deref())
        }
        Action::Reload => {
            let loaded = conf::load_needing(path, "reload", &["PID_FILE"])?;
            let refused = loaded.problems.first();
            watchdog::reload(&loaded.config, loaded.source.as_deref(), refused)
        }
        Action::Held { camera, json } => {
            operator::held(&conf::load(path)?.config, camera.as_deref(), json)
        }
        Action::Cancel {
            camera,
            types,
            json,
        } => operator::cancel(&conf::load(path)?.config, &camera, &types, json),
        Action::Status { json } => {
            let needs = ["STATUS_FILE", "STATUS_INTERVAL", "PID_FILE"];
            let loaded = conf::load_needing(path, "status", &needs)?;
            let out = &mut std::io::stdout().lock();
            status::show(&loaded.config, loaded.source.as_deref(), json, out)
        }
    }
}

/// Prints `text` as it is: write! rather than print!, which panics when
/// stdout is a closed pipe.
fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    out.flush()?;
    Ok(())
}
