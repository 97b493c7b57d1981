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
    page.push_str(".SH FILES\n/etc/ms500-relay/relay.conf\n");
    page
}

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
