//! The package tarball (`scripts/package.sh ARCH`) for a gateway without a
//! package manager: its files, summed, its binary running on its target,
//! its shipped relay.conf valid, its init script parsed by BusyBox.

use std::process::Command;

use crate::artifacts::{
    busybox_parses, gateway_arch, runs_and_names, script_output, shipped_conf_is_valid,
    MAX_BINARY_BYTES,
};
use crate::root::cron_command;
use crate::support::TempDir;

#[test]
#[ignore = "slow: builds the package; scripts/test.sh runs it for each target"]
fn the_tarball_unpacks_and_its_binary_runs() {
    let (arch, _) = gateway_arch();
    let tarball = script_output("scripts/package.sh", &arch);
    let name = format!("ms500-relay-{}-{arch}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        tarball.file_name().unwrap().to_string_lossy(),
        format!("{name}.tar.gz")
    );
    let dir = TempDir::new("package");
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let root = dir.path().join(&name);
    let mut files: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "INSTALL.md",
            "PROTOCOL.md",
            "README.md",
            "SHA256SUMS",
            "crontab",
            "ms500-relay",
            "ms500-relay.8",
            "ms500-relay.init",
            "ms500-relay.procd",
            "relay.conf"
        ]
    );

    let bin = root.join("ms500-relay");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        size <= MAX_BINARY_BYTES,
        "{arch}: {size} bytes, over the 3 MB goal"
    );
    runs_and_names(&bin, &arch);
    // The shipped configuration names the gateway's places and is valid
    // (checked with those places made here, as on a gateway).
    let places = [
        "run/ms500-relay",
        "var/lib/ms500-relay",
        "var/log/ms500-relay",
    ];
    let named = [
        "PID_FILE = /run/ms500-relay/relay.pid",
        "STATUS_FILE = /run/ms500-relay/status.json",
        "SPOOL_FILE = /var/lib/ms500-relay/spool.bin",
        "LOG_FILE = /var/log/ms500-relay/relay.log",
    ];
    shipped_conf_is_valid(&root.join("relay.conf"), &bin, &places, &named);
    let crontab = std::fs::read_to_string(root.join("crontab")).unwrap();
    assert!(crontab.contains(&cron_command()), "{crontab}");
    busybox_parses(&root.join("ms500-relay.init"));
    // Every file is in SHA256SUMS, and each sum holds.
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{sums:?}");
    let listed = std::fs::read_to_string(root.join("SHA256SUMS")).unwrap();
    assert_eq!(listed.lines().count(), files.len() - 1, "{listed}");
    let man = std::fs::read_to_string(root.join("ms500-relay.8")).unwrap();
    assert!(man.starts_with(".TH MS500-RELAY 8") && man.contains(".B MQTT_BROKER"));
}
