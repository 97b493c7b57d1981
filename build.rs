//! Records when the binary was built (`MS500_BUILD_UNIX`, seconds since the
//! epoch; `SOURCE_DATE_EPOCH` when set, for reproducible builds). The relay
//! takes any wall-clock time before it as impossible: a gateway without a
//! real-time clock boots in 1970 until NTP answers.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
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
}
