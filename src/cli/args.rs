//! Command-line parsing: turns `argv` into one [`Invocation`]. Pure; runs on
//! the main thread before anything else starts.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// `--version`: what was built, for which target, from which commit, when
/// (build.rs). The first words stay `ms500-relay VERSION`.
pub fn version_line() -> String {
    format!(
        "ms500-relay {} (target {}, commit {}, built {})",
        env!("CARGO_PKG_VERSION"),
        env!("MS500_TARGET"),
        env!("MS500_COMMIT"),
        env!("MS500_BUILD_DATE"),
    )
}

pub const HELP: &str = "\
ms500-relay: relays backend JSON commands to MS500 cameras over MQTT

Usage:
  ms500-relay [run] [-c FILE]            run the relay in the foreground
  ms500-relay check-config [-c FILE]     run the start's checks (creating nothing) and
                                         print the effective configuration
  ms500-relay send [-c FILE] [-w SECS] [JSON...]
                                         send commands (arguments, or stdin when none) to
                                         the running relay; print one ok/error line per
                                         command and what else comes back (exit 0 when
                                         every command was published, 1 otherwise)
  ms500-relay status [-c FILE] [--json]  print STATUS_FILE in a readable form (or raw);
                                         exit 0 healthy, 1 not running or hung (stale or
                                         missing), 2 STATUS_FILE not set or relay.conf
                                         unusable, 3 running but no broker reached for
                                         longer than 2 x MQTT_KEEPALIVE or the spool failing
  ms500-relay watchdog [-c FILE]         start the relay unless one runs and is healthy;
                                         replace a hung one (for a * * * * * crontab line)
  ms500-relay stop [-c FILE]             stop the relay running relay.conf (SIGTERM, then
                                         SIGKILL after SHUTDOWN_GRACE + 1 s)
  ms500-relay reload [-c FILE]           check relay.conf as the start does, then SIGHUP
                                         the relay running it so it applies it
                                         (exit 2: the relay would refuse it, not sent)
  ms500-relay held [-c FILE] [--json] [CAMERA]
                                         list the commands the running relay holds for
                                         cameras (or sent, not yet confirmed): type,
                                         unit, id, age, size, lifetime left, from where
  ms500-relay cancel [-c FILE] [--json] CAMERA [TYPE...]
                                         drop them (only those TYPEs when named): each
                                         gets the error line `cancelled by the operator`
                                         (held and cancel: root or the relay's user)
  ms500-relay man                        print the manual page (roff: man -l -)
  ms500-relay --help | --version

Options:
  -c, --config FILE   configuration file (default ./relay.conf, then
                      /etc/ms500-relay/relay.conf, else built-in defaults)
  -w, --wait SECS     with send: how long to wait for the status lines and
                      replies (default 3, at most 86400)

Signals (to the running relay):
  SIGINT, SIGTERM     stop: read what backends already sent, publish what is
                      queued for up to SHUTDOWN_GRACE s, exit 0 (a second one:
                      exit 1 at once)
  SIGHUP              reopen LOG_FILE (after an external rotation) and reload
                      relay.conf: what can change live applies, keys that need a
                      restart are named; a file with errors, or one the start
                      would refuse, is refused whole
  SIGUSR1             write the status snapshot (and metrics) now

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage,
3 already running (status: broker unreachable), 4 cannot listen on the socket.
";

/// The longest `send --wait` (a day): any number of seconds past it would
/// overflow a deadline, and no operator waits that long.
const MAX_WAIT_SECS: f64 = 86_400.0;

/// `send`'s wait when `-w` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Run,
    CheckConfig,
    Send {
        commands: Vec<String>,
        /// At most `MAX_WAIT_SECS`, so `Instant::now() + wait` cannot overflow.
        wait: Duration,
    },
    Status {
        /// Print the raw snapshot.
        json: bool,
    },
    Watchdog,
    Stop,
    /// Check relay.conf, then SIGHUP the running relay.
    Reload,
    /// List what the running relay holds for cameras.
    Held {
        camera: Option<String>,
        json: bool,
    },
    /// Drop what the running relay holds for a camera.
    Cancel {
        camera: String,
        types: Vec<String>,
        json: bool,
    },
    /// Print the manual page (roff).
    Manual,
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub action: Action,
    pub config: Option<PathBuf>,
}

/// Parses the arguments after the program name (`std::env::args_os()`
/// without the first). Never panics: an argument that is not UTF-8 is a
/// usage error, except the file name after `-c`, which is used as it is.
pub fn parse<I, A>(args: I) -> Result<Invocation, Error>
where
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let mut config = None;
    let mut subcommand: Option<String> = None;
    let mut rest = Vec::new();
    let mut wait: Option<Duration> = None;
    let mut json = false;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let arg = utf8(arg)?;
        match arg.as_str() {
            "-h" | "--help" => {
                return Ok(Invocation {
                    action: Action::Help,
                    config,
                })
            }
            "-V" | "--version" => {
                return Ok(Invocation {
                    action: Action::Version,
                    config,
                })
            }
            "--json" => json = true,
            "-c" | "--config" => {
                let path = args
                    .next()
                    .ok_or_else(|| Error::Usage(format!("{arg} needs a file name")))?;
                config = Some(PathBuf::from(path));
            }
            "-w" | "--wait" => {
                let value = args
                    .next()
                    .ok_or_else(|| Error::Usage(format!("{arg} needs a number of seconds")))?;
                wait = Some(wait_secs(&arg, &utf8(value)?)?);
            }
            _ if subcommand.is_none() && !arg.starts_with('-') => subcommand = Some(arg),
            // `send -` reads stdin, as with no command at all.
            "-" if subcommand.as_deref() == Some("send") => {}
            _ if matches!(subcommand.as_deref(), Some("send" | "held" | "cancel"))
                && !(arg.starts_with('-') && arg.len() > 1) =>
            {
                rest.push(arg)
            }
            _ => return Err(Error::Usage(format!("unexpected argument {arg:?}"))),
        }
    }
    let action = match subcommand.as_deref() {
        None | Some("run") => Action::Run,
        Some("check-config") => Action::CheckConfig,
        Some("status") => Action::Status { json },
        Some("watchdog") => Action::Watchdog,
        Some("stop") => Action::Stop,
        Some("reload") => Action::Reload,
        Some("man") => Action::Manual,
        Some("send") => Action::Send {
            commands: std::mem::take(&mut rest),
            wait: wait.unwrap_or(DEFAULT_WAIT),
        },
        Some("held") if rest.len() <= 1 => Action::Held {
            camera: rest.pop(),
            json,
        },
        Some("held") => return Err(Error::Usage("held takes at most one camera".into())),
        Some("cancel") if !rest.is_empty() => Action::Cancel {
            camera: rest.remove(0),
            types: std::mem::take(&mut rest),
            json,
        },
        Some("cancel") => return Err(Error::Usage("cancel needs a camera".into())),
        Some(other) => return Err(Error::Usage(format!("unknown command {other:?}"))),
    };
    if wait.is_some() && !matches!(action, Action::Send { .. }) {
        return Err(Error::Usage("--wait only goes with send".into()));
    }
    if json
        && !matches!(
            action,
            Action::Status { .. } | Action::Held { .. } | Action::Cancel { .. }
        )
    {
        return Err(Error::Usage(
            "--json only goes with status, held and cancel".into(),
        ));
    }
    Ok(Invocation { action, config })
}

/// The argument as a `String`, or a usage error naming it (lossily).
fn utf8(arg: OsString) -> Result<String, Error> {
    arg.into_string().map_err(|arg| {
        Error::Usage(format!(
            "argument {:?} is not valid UTF-8",
            arg.to_string_lossy()
        ))
    })
}

/// The value of `-w`: a decimal number of seconds from 0 to
/// [`MAX_WAIT_SECS`]; anything else (negative, NaN, infinite, too large,
/// hexadecimal, empty) is a usage error. Too small to count (`1e-400`) is 0.
fn wait_secs(flag: &str, value: &str) -> Result<Duration, Error> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| (0.0..=MAX_WAIT_SECS).contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{flag}: {value:?} is not a number of seconds from 0 to {MAX_WAIT_SECS}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Invocation, Error> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn no_arguments_runs_with_default_config() {
        let inv = parse_str(&[]).unwrap();
        assert_eq!(inv.action, Action::Run);
        assert_eq!(inv.config, None);
    }

    #[test]
    fn config_flag_before_or_after_subcommand() {
        let a = parse_str(&["-c", "x.conf", "check-config"]).unwrap();
        let b = parse_str(&["check-config", "--config", "x.conf"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.config, Some(PathBuf::from("x.conf")));
    }

    #[test]
    fn send_collects_json_arguments() {
        let inv = parse_str(&["send", "-c", "r.conf", "{\"a\":1}", "{\"b\":2}"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Send {
                commands: vec!["{\"a\":1}".into(), "{\"b\":2}".into()],
                wait: DEFAULT_WAIT
            }
        );
    }

    #[test]
    fn send_dash_means_stdin() {
        let inv = parse_str(&["send", "-"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Send {
                commands: vec![],
                wait: DEFAULT_WAIT
            }
        );
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(parse_str(&["-c"]), Err(Error::Usage(_))));
        assert!(matches!(parse_str(&["frobnicate"]), Err(Error::Usage(_))));
        assert!(matches!(parse_str(&["run", "extra"]), Err(Error::Usage(_))));
        assert!(matches!(parse_str(&["--bogus"]), Err(Error::Usage(_))));
        assert!(matches!(
            parse_str(&["run", "-w", "2"]),
            Err(Error::Usage(_))
        ));
        // Also when it is the default value: -w only goes with send.
        assert!(matches!(
            parse_str(&["run", "-w", "3"]),
            Err(Error::Usage(_))
        ));
    }

    fn wait_of(value: &str) -> Result<Duration, Error> {
        parse_str(&["send", "-w", value]).map(|inv| match inv.action {
            Action::Send { wait, .. } => wait,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn wait_is_a_usage_error_or_a_duration_of_at_most_a_day() {
        let huge_digits = "9".repeat(400);
        for bad in [
            "x",
            "",
            " 1",
            "-1",
            "-0.5",
            "NaN",
            "nan",
            "-nan",
            "inf",
            "-inf",
            "infinity",
            "1e20",
            "1e19",
            "1e309",
            "86401",
            "86400.001",
            "0x10",
            "1_000",
            "18446744073709551616",
            huge_digits.as_str(),
        ] {
            match wait_of(bad) {
                Err(Error::Usage(msg)) => assert!(msg.contains("-w"), "{bad}: {msg}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for (good, want) in [
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            // Too small to tell from 0 (as f64), whatever its sign.
            ("1e-400", Duration::ZERO),
            ("-1e-400", Duration::ZERO),
            ("0.5", Duration::from_millis(500)),
            ("2", Duration::from_secs(2)),
            ("1e3", Duration::from_secs(1000)),
            ("86400", Duration::from_secs(86_400)),
        ] {
            assert_eq!(wait_of(good).unwrap(), want, "{good}");
        }
        let longest = wait_of("86400").unwrap();
        assert!(std::time::Instant::now().checked_add(longest).is_some());
    }

    #[test]
    fn non_utf8_arguments_are_usage_errors_naming_them() {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"b\xffd").to_os_string();
        for args in [
            vec![bad.clone()],
            vec!["send".into(), bad.clone()],
            vec!["send".into(), "-w".into(), bad.clone()],
            vec!["status".into(), bad.clone(), "--help".into()],
        ] {
            match parse(args.clone()) {
                Err(Error::Usage(msg)) => {
                    assert!(msg.contains("b\u{fffd}d"), "{args:?}: {msg}")
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        // A file name is a file name, UTF-8 or not.
        let inv = parse([std::ffi::OsString::from("-c"), bad.clone()]).unwrap();
        assert_eq!(inv.config, Some(PathBuf::from(bad)));
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(parse_str(&["send", "--help"]).unwrap().action, Action::Help);
        assert_eq!(parse_str(&["-V"]).unwrap().action, Action::Version);
    }
}
