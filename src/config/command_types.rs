//! The command types (the `type` names of PROTOCOL.md §1.2) and the
//! lifetimes `COMMAND_TTL` and `COMMAND_TTLS` give each of them. The names
//! are part of the configuration (`COMMAND_TTLS` and `SERIAL_AFTER` name
//! types, and a wrong name stops the start), so the one list lives at the
//! bottom layer; `protocol::command` validates commands of these types, and
//! the delivery policy reads their lifetimes. Pure data, no I/O.

use std::fmt;
use std::time::Duration;

/// The `type` of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// Update the AI model.
    Aim,
    /// Update the firmware.
    Fmw,
    /// Update the application.
    App,
    /// Update ROI coordinates.
    Cdn,
    /// Update the configuration.
    Cfg,
    /// Update capture settings.
    Cts,
    /// Update Wi-Fi.
    Wfi,
    /// Request the current settings; the device replies.
    Scs,
    /// Update system settings; the device replies.
    Uds,
    /// Factory reset.
    Frs,
    /// Request a picture.
    Img,
    /// Resend request.
    Rsr,
}

impl CommandType {
    pub const ALL: [CommandType; 12] = [
        CommandType::Aim,
        CommandType::Fmw,
        CommandType::App,
        CommandType::Cdn,
        CommandType::Cfg,
        CommandType::Cts,
        CommandType::Wfi,
        CommandType::Scs,
        CommandType::Uds,
        CommandType::Frs,
        CommandType::Img,
        CommandType::Rsr,
    ];

    /// The `type` string on the wire, e.g. `"AIM"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::Aim => "AIM",
            CommandType::Fmw => "FMW",
            CommandType::App => "APP",
            CommandType::Cdn => "CDN",
            CommandType::Cfg => "CFG",
            CommandType::Cts => "CTS",
            CommandType::Wfi => "WFI",
            CommandType::Scs => "SCS",
            CommandType::Uds => "UDS",
            CommandType::Frs => "FRS",
            CommandType::Img => "IMG",
            CommandType::Rsr => "RSR",
        }
    }

    /// The type named exactly `s` (case-sensitive), if any.
    pub fn parse(s: &str) -> Option<Self> {
        CommandType::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    /// Every name, as a reason lists them: `AIM, FMW, …`.
    pub fn names() -> String {
        CommandType::ALL.map(CommandType::as_str).join(", ")
    }
}

impl fmt::Display for CommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long commands live: `COMMAND_TTL`, and `COMMAND_TTLS` per type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lifetimes {
    /// `COMMAND_TTL`; None = never expires.
    pub ttl: Option<Duration>,
    /// `COMMAND_TTLS`: each type at most once; None = never expires.
    pub per_type: Vec<(CommandType, Option<Duration>)>,
}

impl Lifetimes {
    /// The lifetime of a command of type `kind` (its `COMMAND_TTLS` entry,
    /// else `COMMAND_TTL`); None = never expires.
    pub fn ttl_for(&self, kind: CommandType) -> Option<Duration> {
        self.per_type
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(self.ttl, |(_, ttl)| *ttl)
    }

    /// The key that sets `kind`'s lifetime, as log lines name it.
    pub fn ttl_key(&self, kind: CommandType) -> String {
        if self.per_type.iter().any(|(k, _)| *k == kind) {
            format!("COMMAND_TTLS {kind}")
        } else {
            "COMMAND_TTL".to_string()
        }
    }
}
