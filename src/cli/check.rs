//! `ms500-relay check-config`: every problem the run would refuse, all at
//! once (one line each on stderr, exit 2), or the configuration in effect
//! (exit 0). Runs the very checks the start runs ([`checks::run`]) and
//! prints what the start would warn about. Called by `main.rs`.

use std::io::Write;
use std::path::Path;

use crate::checks::{self, preflight};
use crate::cli::conf;
use crate::config;
use crate::error::Error;

/// Checks relay.conf at `path` (or where the relay would find it).
pub fn main(path: Option<&Path>) -> Result<(), Error> {
    let loaded = conf::load_all(path)?;
    let (config, path) = (&loaded.config, loaded.source.as_deref());
    let mut problems: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
    let checked = checks::run(config, path);
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
    for warning in preflight::secret_file_warnings(config, path) {
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
    for made in &checked.to_make {
        writeln!(
            out,
            "# {}: the directory {} is created at start",
            made.key,
            made.dir.display()
        )?;
    }
    writeln!(out, "# configuration is valid")?;
    Ok(())
}
