//! The packages a gateway installs from (`scripts/package.sh`), tested as
//! their users meet them: the tarball (`tarball`), the Debian package
//! (`debian`) and the OpenWrt package (`openwrt`). Here, for the target
//! under test (`MS500_GATEWAY_ARCH`): each .deb and .ipk unpacked as its
//! package manager does, its fields, conffiles and files checked, its
//! binary run (under qemu-user for a foreign target), its scripts parsed by
//! BusyBox `sh -n`, and the .deb passed through lintian.

mod debian;
mod openwrt;
mod tarball;

use std::path::Path;

use crate::artifacts::gateway_arch;
use crate::root::walk;

#[test]
#[ignore = "slow: builds the packages; scripts/test.sh runs it for each target"]
fn each_package_unpacks_as_its_manager_does_and_its_binary_runs() {
    let (arch, _) = gateway_arch();
    let (debarch, openwrt) = package_arches(&arch);
    debian::the_deb_unpacks_and_passes_lintian(&arch, debarch);
    for owrt in openwrt {
        openwrt::the_ipk_unpacks_as_opkg_does(&arch, owrt);
    }
}

/// The Debian architecture and the OpenWrt architectures of a target.
pub(super) fn package_arches(arch: &str) -> (&'static str, &'static [&'static str]) {
    match arch {
        "x86_64" => ("amd64", &["x86_64"]),
        "aarch64" => (
            "arm64",
            &[
                "aarch64_generic",
                "aarch64_cortex-a53",
                "aarch64_cortex-a72",
            ],
        ),
        "armv7" => ("armhf", &["arm_cortex-a7_neon-vfpv4"]),
        "mipsel" => ("mipsel", &["mipsel_24kc"]),
        other => panic!("{other}: not a target of scripts/build-static.sh"),
    }
}

/// The value of `field` in a control file's text.
pub(super) fn field<'a>(control: &'a str, field: &str) -> Option<&'a str> {
    control
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// Every file and directory under `root`, as paths relative to it, sorted.
pub(super) fn listing(root: &Path) -> Vec<String> {
    let mut all: Vec<String> = walk(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    all.sort();
    all
}

pub(super) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}
