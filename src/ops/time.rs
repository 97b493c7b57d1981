//! UTC timestamps for log lines and the status file, without a date crate.
//! Pure functions of a `SystemTime`; and [`mono_ms`], a monotonic instant
//! as a number one thread can hand another through a [`super::counters::Counter`].

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds from a process-wide origin (its first use) to `t`; 0 for
/// an instant before it. Monotonic: a clock set on a gateway without a
/// real-time clock does not move it.
pub fn mono_ms(t: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
}

/// When this binary was built (from build.rs). No wall-clock time before it
/// can be right: a gateway without a real-time clock starts in 1970.
pub fn built() -> SystemTime {
    let secs = env!("MS500_BUILD_UNIX").parse().unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// How far in the future a recorded time may lie and still count as now
/// (clocks of one machine disagree by that much after a small correction).
const FUTURE_SLACK: Duration = Duration::from_secs(300);

/// The age of something recorded at wall-clock time `then`, seen at `now`;
/// `None` when one of the two clocks cannot be right (before the build, or
/// `then` in the future): a clock that jumped, not an age.
pub fn age(then: SystemTime, now: SystemTime) -> Option<Duration> {
    let floor = built();
    if then < floor || now < floor {
        return None;
    }
    match now.duration_since(then) {
        Ok(age) => Some(age),
        Err(e) if e.duration() <= FUTURE_SLACK => Some(Duration::ZERO),
        Err(_) => None,
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso8601(t: SystemTime) -> String {
    Stamp::seconds(t).to_string()
}

/// `YYYYMMDDTHHMMSSZ`, for file names.
pub fn compact(t: SystemTime) -> String {
    iso8601(t).replace(['-', ':'], "")
}

/// A time in ISO 8601 (UTC), written straight into whatever formats it:
/// a log line takes its stamp without a string of its own.
pub struct Stamp {
    secs: u64,
    millis: Option<u32>,
}

impl Stamp {
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn seconds(t: SystemTime) -> Stamp {
        Stamp {
            secs: unix(t),
            millis: None,
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn millis(t: SystemTime) -> Stamp {
        let millis = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_millis())
            .unwrap_or(0);
        Stamp {
            secs: unix(t),
            millis: Some(millis),
        }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (year, month, day) = civil(self.secs / 86_400);
        let rem = self.secs % 86_400;
        let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
        )?;
        match self.millis {
            Some(millis) => write!(f, ".{millis:03}Z"),
            None => f.write_str("Z"),
        }
    }
}

/// (year, month, day) of a count of days since 1970-01-01, by Howard
/// Hinnant's days-from-civil inverse.
fn civil(days: u64) -> (i64, i64, i64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn known_dates() {
        assert_eq!(iso8601(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(at(1_795_927_484)), "2026-11-29T04:44:44Z");
        assert_eq!(iso8601(at(4_107_542_399)), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn ages_only_between_plausible_times() {
        let b = built();
        let day = Duration::from_secs(86_400);
        assert_eq!(age(b + day, b + 3 * day), Some(2 * day));
        assert_eq!(
            age(b + day, b + day - Duration::from_secs(10)),
            Some(Duration::ZERO)
        );
        assert_eq!(age(b + 2 * day, b + day), None, "recorded in the future");
        assert_eq!(age(at(3600), b + day), None, "recorded in 1970");
        assert_eq!(age(b + day, at(3600)), None, "now is 1970");
        assert!(b > at(1_790_000_000), "built() is the build date");
    }

    #[test]
    fn compact_form_for_file_names() {
        assert_eq!(compact(at(1_795_927_484)), "20261129T044444Z");
    }

    #[test]
    fn millis_are_zero_padded() {
        let t = at(0) + Duration::from_millis(7);
        assert_eq!(Stamp::millis(t).to_string(), "1970-01-01T00:00:00.007Z");
    }

    #[test]
    fn before_the_epoch_reads_as_the_epoch() {
        assert_eq!(
            iso8601(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }
}
