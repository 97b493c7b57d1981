//! What the build scripts make (a static binary, a tarball, a .deb, an
//! .ipk) and how the gateway tests look at it: the script's promised path,
//! what `file` says, the binary run under the runner of its target, its
//! shipped relay.conf checked, its shell scripts parsed by BusyBox.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::TempDir;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The size goal for a static binary with TLS, on every target.
pub const MAX_BINARY_BYTES: u64 = 3_000_000;

/// Runs a script of the repository from elsewhere (it must not care) and
/// returns its last line of stdout, the path it promises.
pub fn script_output(script: &str, arch: &str) -> PathBuf {
    script_output_of(script, &[arch])
}

/// [`script_output`] with any arguments.
pub fn script_output_of(script: &str, args: &[&str]) -> PathBuf {
    let arch = args.join(" ");
    let out = Command::new(Path::new(REPO).join(script))
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} {arch} failed:\n{stdout}");
    print!("{stdout}");
    let last = stdout.lines().last().expect("no output");
    let path = PathBuf::from(last.trim());
    assert!(
        path.is_absolute(),
        "last line is not an absolute path: {last}"
    );
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

pub fn file_says(path: &Path) -> String {
    let out = Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .expect("file(1) (scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn is_static(file_output: &str) -> bool {
    file_output.contains("statically linked") || file_output.contains("static-pie linked")
}

/// The runner in front of the relay binary under test (e.g. qemu-aarch64-static), if any.
pub fn runner() -> Vec<String> {
    let mut words: Vec<String> = std::env::var("MS500_RELAY_EXE")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    words.pop();
    words
}

/// The architecture under test and the qemu-user emulator that runs its
/// binary on this x86_64 machine (none for x86_64).
pub fn gateway_arch() -> (String, Option<&'static str>) {
    let arch = std::env::var("MS500_GATEWAY_ARCH").unwrap_or_else(|_| "x86_64".into());
    let qemu = match arch.as_str() {
        "x86_64" => None,
        "aarch64" => Some("qemu-aarch64-static"),
        "armv7" => Some("qemu-arm-static"),
        "mipsel" => Some("qemu-mipsel-static"),
        other => panic!("MS500_GATEWAY_ARCH={other}: not a target of scripts/build-static.sh"),
    };
    (arch, qemu)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` to its end; panics with its output when it fails.
pub fn succeeds(command: &mut Command) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    succeeded(&out, &format!("{command:?}"));
    text(&out.stdout)
}

/// Asserts that the command `what` (its output `out`) succeeded.
#[track_caller]
pub fn succeeded(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Builds the `kind` package (deb, ipk) for package architecture `arch`
/// and checks its file name: `ms500-relay_VERSION_ARCH.KIND`.
pub fn built_package(kind: &str, arch: &str) -> PathBuf {
    let package = script_output_of("scripts/package.sh", &[kind, arch]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        package.file_name().unwrap().to_string_lossy(),
        format!("ms500-relay_{version}_{arch}.{kind}")
    );
    package
}

/// Asserts that `list` (`what`) holds each of `items`.
#[track_caller]
pub fn has_all(list: &[String], items: &[&str], what: &str) {
    for item in items {
        assert!(
            list.iter().any(|l| l == item),
            "{item} not in {what}: {list:#?}"
        );
    }
}

/// The packed binary's `--version`, run as the gateway tests run it (under
/// qemu-user for a foreign target); panics unless it names the target.
pub fn runs_and_names(bin: &Path, arch: &str) {
    let kind = file_says(bin);
    assert!(is_static(&kind), "{}: {kind}", bin.display());
    let mut words = runner();
    words.push(bin.to_string_lossy().into_owned());
    let version = succeeds(Command::new(&words[0]).args(&words[1..]).arg("--version"));
    assert!(
        version.starts_with(&format!(
            "ms500-relay {} (target ",
            env!("CARGO_PKG_VERSION")
        )) && version.contains(arch),
        "{arch}: {version}"
    );
}

/// `busybox sh -n`: a gateway without bash parses the script.
pub fn busybox_parses(script: &Path) {
    let parses = Command::new("busybox")
        .args(["sh", "-n"])
        .arg(script)
        .status()
        .expect("busybox (scripts/test.sh installs busybox-static)");
    assert!(
        parses.success(),
        "BusyBox sh cannot parse {}",
        script.display()
    );
}

/// The shipped relay.conf has each of `lines`, and is valid where its
/// `places` exist: checked with those places made under `scratch`, by the
/// packed binary.
pub fn shipped_conf_is_valid(conf: &Path, bin: &Path, places: &[&str], lines: &[&str]) {
    let scratch = TempDir::new("package-places");
    let shipped = std::fs::read_to_string(conf).unwrap();
    has_lines(&shipped, lines, "the shipped relay.conf");
    let local = shipped.replace("= /", &format!("= {}/", scratch.path().display()));
    for dir in places {
        std::fs::create_dir_all(scratch.path().join(dir)).unwrap();
    }
    let copy = scratch.path().join("relay.conf");
    std::fs::write(&copy, local).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut words = runner();
    words.push(bin.to_string_lossy().into_owned());
    succeeds(
        Command::new(&words[0])
            .args(&words[1..])
            .args(["check-config", "-c"])
            .arg(&copy),
    );
}

/// Asserts that `text` (`what`) has each of `lines`, whole.
#[track_caller]
pub fn has_lines(text: &str, lines: &[&str], what: &str) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "{line:?} missing in {what}:\n{text}"
        );
    }
}
