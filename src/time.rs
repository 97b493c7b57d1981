//! UTC timestamps for log lines and the status file, without a date crate.
//! Pure functions of a `SystemTime`.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso8601(t: SystemTime) -> String {
    let (date, time) = civil(unix(t));
    format!("{date}T{time}Z")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, for log lines.
pub fn iso8601_millis(t: SystemTime) -> String {
    let millis = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    let (date, time) = civil(unix(t));
    format!("{date}T{time}.{millis:03}Z")
}

/// ("YYYY-MM-DD", "HH:MM:SS") of a Unix time, by Howard Hinnant's days-from-civil inverse.
fn civil(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60),
    )
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
    fn millis_are_zero_padded() {
        let t = at(0) + Duration::from_millis(7);
        assert_eq!(iso8601_millis(t), "1970-01-01T00:00:00.007Z");
    }

    #[test]
    fn before_the_epoch_reads_as_the_epoch() {
        assert_eq!(
            iso8601(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }
}
