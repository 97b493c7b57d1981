//! The relay binary under test: the one cargo built, or the one named by
//! `MS500_RELAY_EXE` (a static build under qemu-user), and running it to
//! completion for the commands that end (`check-config`, `send`, `status`...).

use std::ffi::OsStr;
use std::fmt::Debug;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The longest a command run by [`run_bin`] may take (`send -w 20` and
/// `stop` with its grace included).
const RUN_BIN_LIMIT: Duration = Duration::from_secs(120);

/// The relay binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ms500-relay");

/// A command that runs the relay under test: [`BIN`], or the binary named by
/// `MS500_RELAY_EXE`, which may start with a runner, split at whitespace
/// (`MS500_RELAY_EXE="qemu-aarch64-static /path/to/ms500-relay"` runs an ARM
/// build under qemu; paths with spaces are not supported).
pub fn relay_command() -> Command {
    let words = relay_words();
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]);
    command
}

/// The words of [`relay_command`]: runner (if any), then the binary.
pub fn relay_words() -> Vec<String> {
    std::env::var("MS500_RELAY_EXE")
        .ok()
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .filter(|w: &Vec<String>| !w.is_empty())
        .unwrap_or_else(|| vec![BIN.to_string()])
}

/// Runs the binary to completion with `args`, returning (exit code, stdout, stderr).
pub fn run_bin<S: AsRef<OsStr> + Debug>(args: &[S], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = relay_command()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run relay binary");
    // Read both pipes on their own threads, so a chatty command cannot block
    // on a full pipe while this thread waits for it to exit.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    // A command that should end but runs on (a relay that started when it
    // should have refused to) fails its test instead of hanging the suite.
    let ended = wait_until(RUN_BIN_LIMIT, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the relay binary");
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        ended,
        "ms500-relay {args:?} still ran after {} s; stderr:\n{err}",
        RUN_BIN_LIMIT.as_secs()
    );
    (status.code().unwrap_or(-1), out, err)
}
