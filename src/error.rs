//! The crate's one error type: everything that can reach `main`, each variant
//! mapped to exactly one exit code in [`Error::exit_code`].

use std::fmt;
use std::io;

use crate::config::ConfigError;

#[derive(Debug)]
pub enum Error {
    /// The command line could not be understood.
    Usage(String),
    /// relay.conf could not be read or holds a bad line.
    Config(ConfigError),
    /// The configuration parses but cannot be used (an unusable spool or certificate file).
    Setup(String),
    /// The backend socket could not be bound.
    Listen { addr: String, source: io::Error },
    /// Another instance holds the pid file.
    AlreadyRunning { path: String, pid: String },
    /// `status` found the status file missing or stale (already reported on stdout).
    Unhealthy,
    /// `status` found the relay running but no broker reached for longer
    /// than 2 × MQTT_KEEPALIVE (already reported on stdout).
    BrokerAway,
    /// Anything else that stops the relay at run time.
    Runtime(String),
    /// An I/O error outside the cases above.
    Io(io::Error),
}

impl Error {
    /// Exit codes of SPEC §4: 1 runtime, 2 configuration or usage, 3 already running, 4 cannot listen.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Setup(_) => 2,
            Error::Listen { .. } => 4,
            Error::AlreadyRunning { .. } | Error::BrokerAway => 3,
            Error::Runtime(_) | Error::Io(_) | Error::Unhealthy => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg} (see --help)"),
            Error::Config(e) => write!(f, "{e}"),
            Error::Setup(msg) => write!(f, "{msg}"),
            Error::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::AlreadyRunning { path, pid } => {
                write!(f, "already running: {path} is locked by pid {pid}")
            }
            Error::Unhealthy => write!(f, "the relay is not healthy"),
            Error::BrokerAway => write!(f, "the relay runs but reaches no broker"),
            Error::Runtime(msg) => write!(f, "{msg}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Listen { source, .. } => Some(source),
            Error::Io(e) => Some(e),
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
