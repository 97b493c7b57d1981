//! `ms500-relay man`: the manual page (roff, section 8), made from the
//! same sources as `--help`, relay.conf and the docs' key tables: the
//! command summary of [`HELP`] and every key of [`KEYS`] with its default
//! and description. Pure; runs on the main thread.

use crate::cli::args::HELP;
use crate::config::KEYS;

/// The whole page.
pub fn page() -> String {
    let mut page = String::from(
        ".TH MS500-RELAY 8 \"\" \"ms500-relay\" \"System Administration\"\n\
         .SH NAME\nms500-relay \\- relays backend JSON commands to MS500 cameras over MQTT\n\
         .SH SYNOPSIS\n.nf\n",
    );
    let usage = HELP
        .split("Usage:\n")
        .nth(1)
        .unwrap_or_default()
        .split("\nOptions:")
        .next()
        .unwrap_or_default();
    page.push_str(&escape(usage.trim_end()));
    page.push_str("\n.fi\n.SH DESCRIPTION\n");
    page.push_str(
        "Reads JSON commands from backend TCP connections, publishes each to its \
         camera's MQTT topic, and routes device replies back. See PROTOCOL.md for the \
         contract and README.md for operation.\n",
    );
    for (title, section) in [
        ("OPTIONS", "Options:\n"),
        ("SIGNALS", "Signals (to the running relay):\n"),
    ] {
        let text = HELP.split(section).nth(1).unwrap_or_default();
        let text = text.split("\n\n").next().unwrap_or_default();
        page.push_str(&format!(".SH {title}\n.nf\n{}\n.fi\n", escape(text)));
    }
    page.push_str(
        ".SH CONFIGURATION\nrelay.conf holds one KEY = value a line; every key is optional.\n",
    );
    for key in KEYS {
        let default = if key.default.is_empty() {
            "(empty)".to_string()
        } else {
            key.default.to_string()
        };
        page.push_str(&format!(
            ".TP\n.B {}\nDefault: {}. {}\n",
            key.key,
            escape(&default),
            escape(key.doc)
        ));
    }
    let exit = HELP.split("Exit codes: ").nth(1).unwrap_or_default();
    page.push_str(&format!(".SH EXIT STATUS\n{}\n", escape(exit.trim_end())));
    page.push_str(".SH ENVIRONMENT\n");
    for (name, what) in ENVIRONMENT {
        page.push_str(&format!(".TP\n.B {name}\n{}\n", escape(what)));
    }
    page.push_str(".SH FILES\n");
    for (path, what) in FILES {
        page.push_str(&format!(".TP\n.B {}\n{}\n", escape(path), escape(what)));
    }
    page
}

/// The variables the relay and its tools read (PROTOCOL.md §4).
const ENVIRONMENT: [(&str, &str); 5] = [
    (
        "NOTIFY_SOCKET",
        "set by systemd for a Type=notify unit: the relay sends READY=1 once it listens, \
         RELOADING=1 and READY=1 around a reload, STOPPING=1 when it stops.",
    ),
    (
        "WATCHDOG_USEC",
        "with NOTIFY_SOCKET: the relay sends WATCHDOG=1 every half of it while its \
         publishing thread keeps its turns (and WATCHDOG_PID, when set, is its pid).",
    ),
    (
        "MAINPID",
        "set by systemd for ExecReload=: reload says RELOADING=1 itself before its signal \
         when MAINPID is the relay it signals.",
    ),
    (
        "MS500_RELAY_LOG",
        "where a relay without LOG_FILE logs when the watchdog starts it (default: \
         ms500-relay.log next to STATUS_FILE).",
    ),
    (
        "RUST_LOG",
        "overrides LOG_LEVEL (error, warn, info, debug).",
    ),
];

/// Where the packages put the relay's files.
const FILES: [(&str, &str); 5] = [
    (
        "/etc/ms500-relay/relay.conf",
        "the configuration (-c); root's, mode 0640 in the group ms500-relay in the Debian package.",
    ),
    (
        "/lib/systemd/system/ms500-relay.service",
        "the systemd unit of the Debian package (Type=notify, watchdog, reload).",
    ),
    (
        "/etc/init.d/ms500-relay",
        "the init script: sysvinit in the Debian package, procd in the OpenWrt package.",
    ),
    (
        "/var/lib/ms500-relay/spool.bin",
        "SPOOL_FILE of the Debian package and the tarball (/etc/ms500-relay/spool.bin on OpenWrt).",
    ),
    (
        "/run/ms500-relay/",
        "PID_FILE and STATUS_FILE (/var/run/ms500-relay/ on OpenWrt).",
    ),
];

/// Text safe in roff: backslashes doubled, a leading dot or quote guarded.
fn escape(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.replace('\\', "\\\\").replace('-', "\\-");
            if line.starts_with(['.', '\'']) {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_the_page_with_its_default() {
        let page = page();
        for key in KEYS {
            assert!(page.contains(&format!(".B {}\n", key.key)), "{}", key.key);
        }
        assert!(page.contains("Default: 127.0.0.1."), "{page}");
        assert!(page.contains(".SH SYNOPSIS"));
        assert!(page.contains("ms500\\-relay status"), "{page}");
        assert!(page.contains(".B NOTIFY_SOCKET\n") && page.contains(".SH FILES\n.TP\n"));
        assert!(
            page.lines().all(|l| !l.starts_with('.')
                || l.starts_with(".TH")
                || l.starts_with(".SH")
                || l.starts_with(".TP")
                || l.starts_with(".B ")
                || l == ".nf"
                || l == ".fi"),
            "only the macros we write start a line with a dot"
        );
    }
}
