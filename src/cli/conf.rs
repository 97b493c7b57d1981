//! relay.conf for each command of the command line: the run, `send`,
//! `held` and `cancel` refuse a file with any error; `stop`, `status`,
//! `reload` and `watchdog` refuse only an error in the keys they need and
//! go on without the rest, saying so, so that a typo can never leave a
//! running relay unmanaged. Called by `main.rs` and the commands here.

use std::io::Write;
use std::path::Path;

use crate::checks::preflight;
use crate::config::{self, ConfigError, Loaded};
use crate::error::Error;

/// relay.conf, refused at its first error (the relay's own rule).
pub fn load(path: Option<&Path>) -> Result<Loaded, Error> {
    Ok(config::load(path, preflight::relay_user())?)
}

/// relay.conf, with every problem in it (`check-config`).
pub fn load_all(path: Option<&Path>) -> Result<Loaded, Error> {
    Ok(config::load_all(path, preflight::relay_user())?)
}

/// relay.conf for a tool that needs only `needs` of it: an error in one of
/// those refuses the file; an error elsewhere is printed as a warning and
/// the tool goes on. The errors not refused are returned (the relay itself
/// would refuse the file).
pub fn load_needing(path: Option<&Path>, tool: &str, needs: &[&str]) -> Result<Loaded, Error> {
    let loaded = load_quietly(path, needs)?;
    let mut err = std::io::stderr().lock();
    for warning in warnings(&loaded.problems, tool) {
        let _ = writeln!(err, "{warning}");
    }
    Ok(loaded)
}

/// [`load_needing`] without printing the warnings.
pub fn load_quietly(path: Option<&Path>, needs: &[&str]) -> Result<Loaded, Error> {
    let mut loaded = load_all(path)?;
    if let Some(at) = loaded
        .problems
        .iter()
        .position(|e| e.key().is_some_and(|key| needs.contains(&key)))
    {
        return Err(loaded.problems.swap_remove(at).into());
    }
    Ok(loaded)
}

/// The warning line for each error `tool` goes on without.
pub fn warnings(problems: &[ConfigError], tool: &str) -> Vec<String> {
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
