//! Records what `--version` tells about the build: when (`MS500_BUILD_UNIX`,
//! seconds since the epoch, and `MS500_BUILD_DATE`, its UTC date;
//! `SOURCE_DATE_EPOCH` when set, for reproducible builds), for which target
//! (`MS500_TARGET`, the triple) and from which commit (`MS500_COMMIT`: the
//! `MS500_COMMIT` variable when set, as a build from a tarball has no git,
//! else `git rev-parse`, else "unknown"). The relay also takes any
//! wall-clock time before the build as impossible: a gateway without a
//! real-time clock boots in 1970 until NTP answers.
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=MS500_COMMIT");
    let built = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=MS500_BUILD_UNIX={built}");
    println!("cargo:rustc-env=MS500_BUILD_DATE={}", utc_date(built));
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=MS500_TARGET={target}");
    println!("cargo:rustc-env=MS500_COMMIT={}", commit());
}

/// The commit built: `MS500_COMMIT`, else git's short hash (with `-dirty`
/// when the tree has changes), else "unknown".
fn commit() -> String {
    if let Ok(commit) = std::env::var("MS500_COMMIT") {
        if !commit.trim().is_empty() {
            return commit.trim().to_string();
        }
    }
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(index) = git(&["rev-parse", "--git-path", "index"]) {
        println!("cargo:rerun-if-changed={index}");
    }
    let Some(hash) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.is_empty());
    if dirty {
        format!("{hash}-dirty")
    } else {
        hash
    }
}

fn git(args: &[&str]) -> Option<String> {
    // Without optional locks `git status` leaves the index as it is: a
    // refreshed index would look like a change to the rerun-if-changed
    // above, and every later cargo command would rebuild the relay.
    let out = Command::new("git")
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `YYYY-MM-DD` of `unix` seconds (UTC), by the civil-from-days rule.
fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
