//! The `ms500-relay` binary: reads the command line, runs what it asks for
//! (the library does the work), and maps errors to exit codes, all in one
//! place ([`Error::exit_code`]).

use std::io::Write;
use std::process::ExitCode;

use ms500_relay::checks::preflight;
use ms500_relay::cli::args::{self as cli, Action};
use ms500_relay::cli::journal::Journal;
use ms500_relay::cli::{manual, operator, send, watchdog};
use ms500_relay::error::Error;
use ms500_relay::ops::logging;
use ms500_relay::report::status;
use ms500_relay::{checks, config, relay};

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

/// `--version`: what was built, for which target, from which commit, when
/// (build.rs). The first words stay `ms500-relay VERSION`.
fn version_line() -> String {
    format!(
        "ms500-relay {} (target {}, commit {}, built {})",
        env!("CARGO_PKG_VERSION"),
        env!("MS500_TARGET"),
        env!("MS500_COMMIT"),
        env!("MS500_BUILD_DATE"),
    )
}

/// relay.conf, where it was found, and the errors a tool went on without.
type Loaded = (
    config::Config,
    Option<std::path::PathBuf>,
    Vec<config::ConfigError>,
);

/// relay.conf for a tool that needs only `needs` of it (`stop`, `status`,
/// `reload`, `watchdog`): an error in one of those refuses the file; an
/// error elsewhere is printed as a warning and the tool goes on, so that a
/// typo can never leave a running relay unmanaged. The errors not refused
/// are returned (the relay itself would refuse the file).
fn load_needing(
    path: Option<&std::path::Path>,
    tool: &str,
    needs: &[&str],
) -> Result<Loaded, Error> {
    let loaded = load_quietly(path, needs)?;
    let mut err = std::io::stderr().lock();
    for warning in warnings(&loaded.2, tool) {
        let _ = writeln!(err, "{warning}");
    }
    Ok(loaded)
}

/// [`load_needing`] without printing the warnings.
fn load_quietly(path: Option<&std::path::Path>, needs: &[&str]) -> Result<Loaded, Error> {
    let (config, path, mut problems) = config::load_all(path, preflight::relay_user())?;
    if let Some(at) = problems
        .iter()
        .position(|e| e.key().is_some_and(|key| needs.contains(&key)))
    {
        return Err(problems.swap_remove(at).into());
    }
    Ok((config, path, problems))
}

/// The warning line for each error `tool` goes on without.
fn warnings(problems: &[config::ConfigError], tool: &str) -> Vec<String> {
    problems
        .iter()
        .map(|problem| {
            format!(
                "ms500-relay: warning: {problem} ({tool} goes on without it; \
                 the relay refuses this file until it is fixed)"
            )
        })
        .collect()
}

/// `watchdog`, its output through the journal: timestamped, bounded, and
/// an identical failure (a broken relay.conf, every minute) said once an hour.
fn watchdog_run(path: Option<&std::path::Path>) -> Result<(), Error> {
    let loaded = load_quietly(path, &["PID_FILE", "STATUS_FILE", "STATUS_INTERVAL"]);
    let pid_file = loaded
        .as_ref()
        .ok()
        .and_then(|(c, _, _)| c.pid_file.clone());
    let journal = Journal::new(pid_file.as_deref());
    let mut failure = Vec::new();
    let result = loaded.and_then(|(config, source, problems)| {
        failure.extend(warnings(&problems, "watchdog"));
        watchdog::run(&config, source.as_deref(), problems.first())
    });
    if let Err(e) = &result {
        failure.push(format!("ms500-relay: {e}"));
    }
    if failure.is_empty() {
        journal.succeeded();
        return result;
    }
    journal.fail(&failure);
    result.map_err(|e| Error::Reported(e.exit_code()))
}

/// `check-config`: every problem the run would refuse, all at once (one
/// line each on stderr, exit 2), or the configuration in effect (exit 0).
fn check_config(path: Option<&std::path::Path>) -> Result<(), Error> {
    let (config, path, errors) = config::load_all(path, preflight::relay_user())?;
    let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    // What the run refuses before serving is refused here too, by the very
    // checks the start runs, and what it warns about is warned about.
    let checked = checks::run(&config, path.as_deref());
    problems.extend(checked.problems);
    let mut err = std::io::stderr().lock();
    if !problems.is_empty() {
        for problem in &problems {
            let _ = writeln!(err, "ms500-relay: {problem}");
        }
        return Err(Error::Usage(format!(
            "{} problem(s) found: the relay would refuse this configuration",
            problems.len()
        )));
    }
    for warning in preflight::secret_file_warnings(&config, path.as_deref()) {
        let _ = writeln!(err, "ms500-relay: warning: {warning}");
    }
    let mut out = std::io::stdout().lock();
    match path {
        Some(p) => writeln!(out, "# configuration from {}", p.display())?,
        None => writeln!(out, "# no configuration file found: built-in defaults")?,
    }
    for (key, value) in config.effective() {
        writeln!(out, "{key} = {}", config::quoted(&value))?;
    }
    let client_id = config.client_id();
    writeln!(
        out,
        "# in effect: client id {client_id} ({client_id}-pub, {client_id}-sub), state topic {}",
        config
            .state_topic_for(&client_id)
            .as_deref()
            .unwrap_or("(off)")
    )?;
    for (key, dir) in &checked.to_make {
        writeln!(
            out,
            "# {key}: the directory {} is created at start",
            dir.display()
        )?;
    }
    writeln!(out, "# configuration is valid")?;
    Ok(())
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
        Action::Manual => {
            let mut out = std::io::stdout().lock();
            write!(out, "{}", manual::page())?;
            out.flush()?;
            Ok(())
        }
        Action::Version => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", version_line())?;
            out.flush()?;
            Ok(())
        }
        Action::CheckConfig => check_config(invocation.config.as_deref()),
        Action::Run => {
            let (config, path) = load()?;
            relay::run(config, path)
        }
        Action::Send { commands, wait } => {
            let (config, path) = load()?;
            let log = logging::init(log::LevelFilter::Warn, &logging::Destination::Stderr)?;
            let sent = send::run(&config, &commands, wait);
            log.finish();
            if sent.is_err() {
                // Which relay.conf said where the relay is: the answer to
                // most "cannot connect" surprises (./relay.conf is read first).
                let read = path.map_or("no relay.conf found: built-in defaults".into(), |p| {
                    format!("configuration from {}", p.display())
                });
                let socket = match &config.socket_path {
                    Some(path) => format!("SOCKET_PATH {}", path.display()),
                    None => format!(
                        "SOCKET_HOST {}, SOCKET_PORT {}",
                        config.socket_host, config.socket_port
                    ),
                };
                let _ = writeln!(
                    std::io::stderr(),
                    "ms500-relay: send used {read} ({socket})"
                );
            }
            sent
        }
        Action::Watchdog => watchdog_run(invocation.config.as_deref()),
        Action::Stop => {
            let (config, path, _) =
                load_needing(invocation.config.as_deref(), "stop", &["PID_FILE"])?;
            watchdog::stop(&config, path.as_deref())
        }
        Action::Reload => {
            let (config, path, problems) =
                load_needing(invocation.config.as_deref(), "reload", &["PID_FILE"])?;
            watchdog::reload(&config, path.as_deref(), problems.first())
        }
        Action::Held { camera, json } => {
            let (config, _) = load()?;
            operator::held(&config, camera.as_deref(), json)
        }
        Action::Cancel {
            camera,
            types,
            json,
        } => {
            let (config, _) = load()?;
            operator::cancel(&config, &camera, &types, json)
        }
        Action::Status { json } => {
            let (config, path, _) = load_needing(
                invocation.config.as_deref(),
                "status",
                &["STATUS_FILE", "STATUS_INTERVAL", "PID_FILE"],
            )?;
            status::show(
                &config,
                path.as_deref(),
                json,
                &mut std::io::stdout().lock(),
            )
        }
    }
}
