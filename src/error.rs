//! The crate's one error type: everything that can reach `main`, each variant
//! mapped to exactly one exit code in [`Error::exit_code`].

use std::fmt;
use std::io;

use crate::config::ConfigError;

/// What caused a [`Error::Setup`] or [`Error::Runtime`], kept for `source()`.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub enum Error {
    /// The command line could not be understood.
    Usage(String),
    /// relay.conf could not be read or holds a bad line.
    Config(ConfigError),
    /// The configuration parses but cannot be used (an unusable spool or
    /// certificate file): `what` names the key and file, `cause` says why.
    Setup { what: String, cause: Option<Cause> },
    /// The backend socket could not be bound.
    Listen { addr: String, source: io::Error },
    /// Another instance holds the pid file or runs this configuration:
    /// which, and its pid.
    AlreadyRunning(String),
    /// `status` found the status file missing or stale (already reported on stdout).
    Unhealthy,
    /// `status` found the relay running but no broker reached for longer
    /// than 2 × MQTT_KEEPALIVE (already reported on stdout).
    BrokerAway,
    /// Anything else that stops the relay at run time.
    Runtime { what: String, cause: Option<Cause> },
    /// An I/O error outside the cases above.
    Io(io::Error),
    /// Already reported (or deliberately not repeated: the watchdog's
    /// identical failures, once an hour): exit with this code, print nothing.
    Reported(u8),
}

impl Error {
    /// A setup problem with no deeper cause.
    pub fn setup(what: impl Into<String>) -> Self {
        Error::Setup {
            what: what.into(),
            cause: None,
        }
    }

    /// A setup problem caused by `cause` (shown after `what` and a colon).
    pub fn setup_because(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Error::Setup {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// A run-time problem with no deeper cause.
    pub fn runtime(what: impl Into<String>) -> Self {
        Error::Runtime {
            what: what.into(),
            cause: None,
        }
    }

    /// A run-time problem caused by `cause` (shown after `what` and a colon).
    pub fn runtime_because(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Error::Runtime {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// Exit codes of PROTOCOL.md §4: 1 runtime, 2 configuration or usage, 3 already running, 4 cannot listen.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Setup { .. } => 2,
            Error::Listen { .. } => 4,
            Error::AlreadyRunning(_) | Error::BrokerAway => 3,
            Error::Runtime { .. } | Error::Io(_) | Error::Unhealthy => 1,
            Error::Reported(code) => *code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg} (see --help)"),
            Error::Config(e) => write!(f, "{e}"),
            Error::Setup { what, cause } | Error::Runtime { what, cause } => match cause {
                Some(cause) => write!(f, "{what}: {cause}"),
                None => write!(f, "{what}"),
            },
            Error::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::AlreadyRunning(what) => write!(f, "already running: {what}"),
            Error::Unhealthy => write!(f, "the relay is not healthy"),
            Error::BrokerAway => write!(f, "the relay runs but reaches no broker"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Reported(code) => write!(f, "failed (exit {code}), reported above"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Listen { source, .. } => Some(source),
            Error::Io(e) => Some(e),
            Error::Setup { cause, .. } | Error::Runtime { cause, .. } => cause
                .as_deref()
                .map(|c| c as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
