//! How long a test waits for what the relay or the broker reports, and the
//! loop that waits: tests wait on events, never on a guess of how long
//! something takes.

use std::time::{Duration, Instant};

/// How long a test waits for something the relay or the broker reports
/// before it fails: generous, as it only costs time when a test fails
/// (2 shared cores, qemu-user, and debug builds are all slow).
pub const WAIT: Duration = Duration::from_secs(20);

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
