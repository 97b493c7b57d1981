//! The packages a Debian or OpenWrt gateway installs (`scripts/package.sh
//! deb|ipk ARCH`), tested as their users meet them:
//!
//! - for every target: each package unpacked as its package manager does
//!   (`dpkg-deb -x`; an .ipk's outer gzipped tar, then its control and data
//!   archives, with BusyBox's tar), its fields, conffiles and files checked,
//!   its binary run (under qemu-user for a foreign target), its scripts
//!   parsed by BusyBox `sh -n`, and the .deb passed through lintian;
//! - the amd64 .deb installed on this machine with `dpkg -i`: the relay run
//!   as its systemd unit says (ExecStart as User=, NOTIFY_SOCKET a socket
//!   the test binds: systemd is not pid 1 here) and through its sysvinit
//!   script, a command delivered each way, a reload, an upgrade that keeps
//!   the edited relay.conf, then `dpkg --purge` leaving nothing behind;
//! - the x86_64 .ipk unpacked into a BusyBox root as opkg does, its procd
//!   script run there by a stand-in for OpenWrt's rc.common, which plays
//!   procd: the command it describes run in the foreground, a command
//!   delivered, `reload` through reload_service, SIGTERM.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::support::notify::NotifySocket;
use super::support::{self, alive, send_signal, topic, wait_until, Broker, Subscriber, TempDir};
use super::{file_says, gateway_arch, is_static, runner, script_output_of, Gateway, REPO};

/// The Debian architecture and the OpenWrt architectures of a target.
fn package_arches(arch: &str) -> (&'static str, &'static [&'static str]) {
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` to its end; panics with its output when it fails.
fn succeeds(command: &mut Command) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The packed binary's `--version`, run as the gateway tests run it (under
/// qemu-user for a foreign target); panics unless it names the target.
fn runs_and_names(bin: &Path, arch: &str) {
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
fn busybox_parses(script: &Path) {
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

/// The value of `field` in a control file's text.
fn field<'a>(control: &'a str, field: &str) -> Option<&'a str> {
    control
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// Every file and directory under `root`, as paths relative to it, sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut all: Vec<String> = super::walk(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    all.sort();
    all
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// The shipped relay.conf is valid where its places exist: checked with
/// those places made under `scratch`, by the packed binary.
fn shipped_conf_is_valid(conf: &Path, bin: &Path, places: &[&str]) {
    let scratch = TempDir::new("package-places");
    let shipped = std::fs::read_to_string(conf).unwrap();
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

#[test]
#[ignore = "slow: builds the packages; scripts/test.sh runs it for each target"]
fn each_package_unpacks_as_its_manager_does_and_its_binary_runs() {
    let (arch, _) = gateway_arch();
    let (debarch, openwrt) = package_arches(&arch);
    the_deb_unpacks_and_passes_lintian(&arch, debarch);
    for owrt in openwrt {
        the_ipk_unpacks_as_opkg_does(&arch, owrt);
    }
}

fn the_deb_unpacks_and_passes_lintian(arch: &str, debarch: &str) {
    let deb = script_output_of("scripts/package.sh", &["deb", debarch]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("ms500-relay_{version}_{debarch}.deb")
    );
    let info = succeeds(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for (name, want) in [
        ("Package", "ms500-relay"),
        ("Version", version),
        ("Architecture", debarch),
        ("Depends", "adduser"),
    ] {
        assert_eq!(
            field(&info.replace("\n ", "\n"), name),
            Some(want),
            "{info}"
        );
    }
    let conffiles = succeeds(
        Command::new("dpkg-deb")
            .args(["--info"])
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(
        conffiles,
        "/etc/ms500-relay/relay.conf\n/etc/init.d/ms500-relay\n"
    );
    the_deb_unpacks_as_dpkg_does(&deb, arch);
    passes_lintian(&deb);
}

/// As dpkg unpacks it: the files, their modes, the binary runs, the
/// scripts parse, the shipped relay.conf is valid.
fn the_deb_unpacks_as_dpkg_does(deb: &Path, arch: &str) {
    let root = TempDir::new("deb-root");
    succeeds(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    let files = listing(root.path());
    for path in [
        "usr/bin/ms500-relay",
        "etc/ms500-relay/relay.conf",
        "etc/init.d/ms500-relay",
        "lib/systemd/system/ms500-relay.service",
        "usr/share/man/man8/ms500-relay.8.gz",
        "usr/share/doc/ms500-relay/copyright",
        "usr/share/doc/ms500-relay/changelog.gz",
        "usr/share/lintian/overrides/ms500-relay",
    ] {
        assert!(
            files.iter().any(|f| f == path),
            "{path} missing: {files:#?}"
        );
    }
    let r = root.path();
    assert_eq!(mode(&r.join("etc/ms500-relay/relay.conf")), 0o640);
    assert_eq!(mode(&r.join("usr/bin/ms500-relay")), 0o755);
    runs_and_names(&r.join("usr/bin/ms500-relay"), arch);
    busybox_parses(&r.join("etc/init.d/ms500-relay"));
    let control = TempDir::new("deb-control");
    succeeds(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(control.path()),
    );
    for script in ["postinst", "prerm", "postrm"] {
        busybox_parses(&control.path().join(script));
    }
    shipped_conf_is_valid(
        &r.join("etc/ms500-relay/relay.conf"),
        &r.join("usr/bin/ms500-relay"),
        &["run/ms500-relay", "var/lib/ms500-relay"],
    );
}

/// lintian: no error and no warning but those overridden with a reason.
fn passes_lintian(deb: &Path) {
    let lint = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .arg(deb)
        .output()
        .expect("lintian (scripts/test.sh installs it)");
    let said = text(&lint.stdout);
    assert!(
        lint.status.success()
            && !said
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian on {}:\n{said}{}",
        deb.display(),
        text(&lint.stderr)
    );
}

/// As opkg reads an .ipk: the outer gzipped tar holds these three members;
/// control.tar.gz and data.tar.gz go to `control/` and `data/`.
fn unpack_ipk(ipk: &Path) -> TempDir {
    let dir = TempDir::new("ipk");
    let d = dir.path();
    let members = succeeds(Command::new("busybox").args(["tar", "tzf"]).arg(ipk));
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    );
    succeeds(
        Command::new("busybox")
            .args(["tar", "xzf"])
            .arg(ipk)
            .current_dir(d),
    );
    assert_eq!(
        std::fs::read_to_string(d.join("debian-binary")).unwrap(),
        "2.0\n"
    );
    for (archive, into) in [("control.tar.gz", "control"), ("data.tar.gz", "data")] {
        std::fs::create_dir(d.join(into)).unwrap();
        succeeds(
            Command::new("busybox")
                .args(["tar", "xzf"])
                .arg(d.join(archive))
                .arg("-C")
                .arg(d.join(into)),
        );
    }
    dir
}

fn the_ipk_unpacks_as_opkg_does(arch: &str, owrt: &str) {
    let ipk = script_output_of("scripts/package.sh", &["ipk", owrt]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        ipk.file_name().unwrap().to_string_lossy(),
        format!("ms500-relay_{version}_{owrt}.ipk")
    );
    let dir = unpack_ipk(&ipk);
    let d = dir.path();
    let control = std::fs::read_to_string(d.join("control/control")).unwrap();
    for (name, want) in [
        ("Package", "ms500-relay"),
        ("Version", version),
        ("Architecture", owrt),
    ] {
        assert_eq!(field(&control, name), Some(want), "{control}");
    }
    assert!(field(&control, "Installed-Size").is_some_and(|s| s.parse::<u64>().is_ok()));
    assert_eq!(
        std::fs::read_to_string(d.join("control/conffiles")).unwrap(),
        "/etc/ms500-relay/relay.conf\n"
    );
    for script in ["postinst", "prerm"] {
        busybox_parses(&d.join("control").join(script));
    }
    let data = d.join("data");
    assert_eq!(
        listing(&data),
        [
            "etc",
            "etc/init.d",
            "etc/init.d/ms500-relay",
            "etc/ms500-relay",
            "etc/ms500-relay/relay.conf",
            "usr",
            "usr/bin",
            "usr/bin/ms500-relay"
        ]
    );
    assert_eq!(mode(&data.join("etc/init.d/ms500-relay")), 0o755);
    assert_eq!(mode(&data.join("etc/ms500-relay/relay.conf")), 0o600);
    runs_and_names(&data.join("usr/bin/ms500-relay"), arch);
    let init = data.join("etc/init.d/ms500-relay");
    busybox_parses(&init);
    let script = std::fs::read_to_string(&init).unwrap();
    for line in [
        "#!/bin/sh /etc/rc.common",
        "USE_PROCD=1",
        "BIN=/usr/bin/ms500-relay",
        "    procd_set_param respawn 3600 5 5",
        "reload_service() {",
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "{line:?} missing:\n{script}"
        );
    }
    shipped_conf_is_valid(
        &data.join("etc/ms500-relay/relay.conf"),
        &data.join("usr/bin/ms500-relay"),
        &["etc/ms500-relay"],
    );
}

/// Holds a lock on this machine while a test installs the package, so two
/// clones testing at once do not install and purge it under each other.
fn machine_wide_turn() -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/ms500-relay-package-test.lock")
        .expect("open the package test's lock file");
    file.lock().expect("lock the package test's lock file");
    file
}

/// Runs dpkg, waiting its turn while another dpkg or apt holds its lock.
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("run dpkg");
        let locked = text(&out.stderr).contains("lock");
        if out.status.success() || !locked || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn dpkg_ok(args: &[&str]) {
    let out = dpkg(args);
    assert!(
        out.status.success(),
        "dpkg {args:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Whatever on this machine bears the package's name: paths under the
/// system's directories with a part named `ms500-relay`, `ms500-relay.…`
/// or a boot link to it (`S01ms500-relay`), the user and the group. Not
/// man-db's cache of formatted pages (man-db's, cleaned by its own cron
/// job), nor other relays' files (`ms500-relay-…`), which tests of other
/// clones may be making meanwhile.
fn traces() -> Vec<String> {
    let found = Command::new("find")
        .args(["/etc", "/lib", "/usr", "/var", "/run", "/opt", "/srv"])
        .args([
            "-path",
            "/var/cache/man",
            "-prune",
            "-o",
            "-path",
            "*ms500-relay*",
            "-print",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("find");
    let ours = |part: &str| {
        let part = part.trim_start_matches(|c: char| c == 'S' || c == 'K' || c.is_ascii_digit());
        part == SERVICE_USER || part.starts_with("ms500-relay.")
    };
    let mut all: Vec<String> = text(&found.stdout)
        .lines()
        .filter(|path| path.split('/').any(ours))
        .map(str::to_string)
        .collect();
    for db in ["passwd", "group"] {
        let entry = Command::new("getent")
            .args([db, SERVICE_USER])
            .output()
            .unwrap();
        if entry.status.success() {
            all.push(format!("{db}: {}", text(&entry.stdout).trim()));
        }
    }
    all.sort();
    all
}

const SERVICE_USER: &str = "ms500-relay";
const UNIT: &str = "/lib/systemd/system/ms500-relay.service";
const CONF: &str = "/etc/ms500-relay/relay.conf";

/// The installed unit's value of `key` (its last assignment).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("{key}= missing in the unit"))
        .to_string()
}

/// `command` run as the service user, as systemd's User= and Group= run it.
fn as_service_user(words: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid",
            SERVICE_USER,
            "--regid",
            SERVICE_USER,
            "--init-groups",
            "--",
        ])
        .args(words.split_whitespace());
    command
}

fn uid_of(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1).map(str::to_string)
}

fn id_of(user: &str) -> String {
    succeeds(Command::new("id").args(["-u", user]))
        .trim()
        .to_string()
}

/// Sends one IMG command to the relay on `port`, as a backend does, and
/// waits for it on the broker.
fn deliver(port: u16, id: u32, sub: &Subscriber, what: &str) {
    let mut backend = std::net::TcpStream::connect(("127.0.0.1", port)).expect("relay listens");
    let command = format!(r#"{{"type":"IMG","unit":"cam-deb","id":{id}}}"#);
    backend.write_all(command.as_bytes()).unwrap();
    let got = sub.recv(Duration::from_secs(10));
    assert_eq!(
        got.as_ref()
            .map(|m| (m.topic.as_str(), m.payload.as_slice())),
        Some((topic("cam-deb").as_str(), command.as_bytes())),
        "{what}: command {id} did not arrive"
    );
}

#[test]
#[ignore = "needs root: installs the Debian package on this machine; scripts/test.sh runs it"]
fn the_debian_package_installs_serves_as_its_unit_says_and_purges_without_a_trace() {
    support::require(
        support::running_as_root(),
        "root, to install a package with dpkg",
    );
    let deb = script_output_of("scripts/package.sh", &["deb", "amd64"]);
    let deb_s = deb.to_string_lossy().into_owned();
    let _turn = machine_wide_turn();
    // A run that failed half-way may have left it installed.
    let _ = dpkg(&["--purge", "ms500-relay"]);
    let before = traces();
    assert!(
        !before
            .iter()
            .any(|t| t.starts_with("passwd:") || t.starts_with("group:")),
        "the service user exists before the package is installed: {before:?}"
    );

    dpkg_ok(&["-i", &deb_s]);
    let installed = traces();
    for trace in [
        "/usr/bin/ms500-relay",
        "/etc/rc2.d/S01ms500-relay",
        "/var/lib/dpkg/info/ms500-relay.postrm",
    ] {
        assert!(
            installed.iter().any(|t| t == trace),
            "{trace} not seen: {installed:#?}"
        );
    }
    installed_as_debian_wants();
    // Stops what postinst may have started (invoke-rc.d, when no policy
    // forbids it here): the test starts the relay itself.
    succeeds(&mut as_service_user(&format!(
        "/usr/bin/ms500-relay stop -c {CONF}"
    )));

    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    // What an operator edits: where the broker is; the backend port is
    // left to the system, since other tests may run here.
    let conf = std::fs::read_to_string(CONF).unwrap();
    let edited = conf
        .replace(
            "\nMQTT_PORT = 1883\n",
            &format!("\nMQTT_PORT = {}\n", broker.port),
        )
        .replace("\nSOCKET_PORT = 6080\n", "\nSOCKET_PORT = 0\n");
    assert_ne!(
        edited, conf,
        "relay.conf has no MQTT_PORT or SOCKET_PORT line to edit"
    );
    std::fs::write(CONF, &edited).unwrap();

    run_as_the_unit_says(&sub);
    run_through_the_init_script(&sub);
    upgrade_keeps_the_edited_conffile(&deb, &edited);

    dpkg_ok(&["--purge", "ms500-relay"]);
    assert_eq!(traces(), before, "dpkg --purge left these behind");
}

/// What dpkg -i left: the user and group, relay.conf 0640 in the user's
/// group, the spool's directory the user's, the unit verified by systemd.
fn installed_as_debian_wants() {
    use std::os::unix::fs::MetadataExt;
    let passwd = succeeds(Command::new("getent").args(["passwd", SERVICE_USER]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/ms500-relay", "{passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{passwd}");
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "not a system user: {passwd}"
    );
    let gid = succeeds(Command::new("getent").args(["group", SERVICE_USER]));
    let gid: u32 = gid.trim().split(':').nth(2).unwrap().parse().unwrap();
    let uid: u32 = fields[2].parse().unwrap();

    let conf = std::fs::metadata(CONF).unwrap();
    assert_eq!(
        (conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (0, gid, 0o640)
    );
    let state = std::fs::metadata("/var/lib/ms500-relay").unwrap();
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o750));
    let recorded =
        succeeds(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", "ms500-relay"]));
    assert!(
        recorded.contains(CONF) && recorded.contains("/etc/init.d/ms500-relay"),
        "{recorded}"
    );

    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze (scripts/test.sh installs systemd)");
    assert!(
        verify.status.success() && !text(&verify.stderr).contains("ms500-relay.service"),
        "systemd-analyze verify:\n{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    // README says which exposure level `systemd-analyze security` gives the unit.
    let security =
        succeeds(Command::new("systemd-analyze").args(["security", "--offline=true", UNIT]));
    let level = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for ms500-relay.service: ")
                .nth(1)
        })
        .and_then(|l| l.split_whitespace().next())
        .expect("an overall exposure level")
        .to_string();
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure level **{level}**")),
        "README does not state the unit's exposure level {level}:\n{security}"
    );
}

/// As systemd runs the unit (which it cannot here, not being pid 1): the
/// RuntimeDirectory= made, ExecStart= as User=, with NOTIFY_SOCKET; READY=1,
/// a command delivered, ExecReload= with MAINPID, SIGTERM.
fn run_as_the_unit_says(sub: &Subscriber) {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert_eq!(unit_value(&unit, "User"), SERVICE_USER);
    assert_eq!(unit_value(&unit, "Type"), "notify");
    let runtime = Path::new("/run").join(unit_value(&unit, "RuntimeDirectory"));
    succeeds(
        Command::new("install")
            .args(["-d", "-m", "0755", "-o", SERVICE_USER, "-g", SERVICE_USER])
            .arg(&runtime),
    );
    let notify = NotifySocket::at_path();
    // systemd's socket takes datagrams from every user.
    std::fs::set_permissions(
        &notify.name,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut relay = as_service_user(&unit_value(&unit, "ExecStart"))
        .env("NOTIFY_SOCKET", &notify.name)
        .env("WATCHDOG_USEC", "30000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the relay as the unit says");
    let stderr = relay.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    });
    let ready = notify.expect_next("READY=1 from the installed relay");
    let port: u16 = ready
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {ready:?}"));
    assert_eq!(uid_of(relay.id()), Some(id_of(SERVICE_USER)));
    deliver(port, 1, sub, "the relay run as its unit says");

    let reload = as_service_user(&unit_value(&unit, "ExecReload"))
        .env("NOTIFY_SOCKET", &notify.name)
        .env("MAINPID", relay.id().to_string())
        .output()
        .unwrap();
    assert!(reload.status.success(), "ExecReload: {reload:?}");
    let said: Vec<String> = (0..3).map(|_| notify.expect_next("the reload")).collect();
    assert!(
        said[0].starts_with("RELOADING=1\n")
            && said[1].starts_with("RELOADING=1\n")
            && said[2] == "READY=1\nSTATUS=relay.conf reloaded",
        "{said:?}"
    );

    send_signal(relay.id(), "TERM");
    assert!(notify.expect_next("STOPPING=1").starts_with("STOPPING=1\n"));
    let status = relay.wait().unwrap();
    let log = log.join().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(" INFO  stopped"), "{log}");
    // systemd removes the RuntimeDirectory= when the unit stops.
    std::fs::remove_dir_all(&runtime).unwrap();
}

/// The sysvinit path: `/etc/init.d/ms500-relay start` runs the relay as the
/// service user; status, reload and stop do what they say.
fn run_through_the_init_script(sub: &Subscriber) {
    let init = |action: &str| {
        Command::new("/etc/init.d/ms500-relay")
            .arg(action)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let started = init("start");
    assert!(started.status.success(), "init start: {started:?}");
    let pid: u32 = std::fs::read_to_string("/run/ms500-relay/relay.pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(uid_of(pid), Some(id_of(SERVICE_USER)));
    deliver(
        super::support::wait_listening_port(pid),
        2,
        sub,
        "the relay the init script started",
    );
    assert_eq!(init("status").status.code(), Some(0));
    let reloaded = init("reload");
    assert!(reloaded.status.success(), "init reload: {reloaded:?}");
    let log = Path::new("/var/log/ms500-relay/relay.log");
    assert!(
        wait_until(support::WAIT, || std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("SIGHUP: log file reopened")),
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let stopped = init("stop");
    assert!(stopped.status.success(), "init stop: {stopped:?}");
    assert!(wait_until(support::WAIT, || !alive(pid)));
    assert_eq!(init("status").status.code(), Some(3), "LSB: not running");
}

/// An upgrade (the same package one version up) keeps relay.conf as the
/// operator edited it, its mode and group, and asks nothing.
fn upgrade_keeps_the_edited_conffile(deb: &Path, edited: &str) {
    let dir = TempDir::new("deb-upgrade");
    let tree = dir.path().join("tree");
    succeeds(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    std::fs::write(
        &control,
        text.replace(
            &format!("Version: {version}\n"),
            &format!("Version: {version}+1\n"),
        ),
    )
    .unwrap();
    let newer = dir.path().join("newer.deb");
    succeeds(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&tree)
            .arg(&newer),
    );
    dpkg_ok(&["-i", &newer.to_string_lossy()]);
    succeeds(&mut as_service_user(&format!(
        "/usr/bin/ms500-relay stop -c {CONF}"
    )));
    assert_eq!(std::fs::read_to_string(CONF).unwrap(), edited);
    assert!(!Path::new("/etc/ms500-relay/relay.conf.dpkg-dist").exists());
    assert!(!Path::new("/etc/ms500-relay/relay.conf.dpkg-new").exists());
    installed_as_debian_wants();
}

/// A stand-in for OpenWrt's /etc/rc.common with procd, which a BusyBox
/// root lacks: it runs the init script's start_service, records the
/// instance it describes (one `procd_set_param` a line), then runs that
/// command in the foreground, as procd would run it under its supervision
/// (the test plays procd: it holds the process, its output, its signals).
/// reload and stop run the script's own reload_service and stop_service.
const RC_COMMON: &str = r#"#!/bin/sh
initscript=$1
action=$2
mkdir -p /tmp/procd
procd_open_instance() { : >/tmp/procd/instance; }
procd_set_param() { echo "$*" >>/tmp/procd/instance; }
procd_close_instance() { :; }
. "$initscript"
case $action in
    start)
        start_service
        set -- $(sed -n 's/^command //p' /tmp/procd/instance)
        exec "$@"
        ;;
    reload) reload_service ;;
    *) echo "rc.common stand-in: $action is not played here" >&2; exit 1 ;;
esac
"#;

/// A bare BusyBox root shaped like OpenWrt (with the rc.common stand-in)
/// where `ipk` was installed as opkg installs it, and relay.conf edited to
/// reach the broker on `broker_port`.
fn openwrt_root_with(ipk: &Path, broker_port: u16) -> Gateway {
    let root = TempDir::new("openwrt-root");
    let r = root.path();
    // A bare BusyBox system shaped like OpenWrt's: /var is a link to the
    // tmpfs /tmp (sticky, open to all), so the run-time files go there.
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "tmp",
        "dev",
        "root",
        "usr/lib/opkg/info",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::set_permissions(
        r.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    std::os::unix::fs::symlink("/tmp", r.join("var")).unwrap();
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(r.join("etc/rc.common"), RC_COMMON).unwrap();
    let null = Command::new("mknod")
        .args(["-m", "666"])
        .arg(r.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(null.success());
    std::fs::copy(ipk, r.join("tmp/ms500-relay.ipk")).unwrap();
    let gw = Gateway { root };
    let probe = gw.run(&["/bin/busybox", "--install", "-s"]);
    support::require(probe.status.success(), "chroot is not permitted here");
    // As opkg installs it: the outer archive, the data into /, the control
    // files into opkg's info directory under the package's name.
    let unpack = "set -e
        cd /tmp && tar xzf ms500-relay.ipk
        tar xzf data.tar.gz -C /
        mkdir control && tar xzf control.tar.gz -C control
        for f in control conffiles postinst prerm; do cp control/$f /usr/lib/opkg/info/ms500-relay.$f; done
        tar tzf data.tar.gz | sed -n 's|^\\./\\(.*[^/]\\)$|/\\1|p' >/usr/lib/opkg/info/ms500-relay.list
        /usr/lib/opkg/info/ms500-relay.postinst configure
        sed -i -e 's/^MQTT_PORT = .*/MQTT_PORT = BROKER_PORT/' -e 's/^SOCKET_PORT = .*/SOCKET_PORT = 0/' /etc/ms500-relay/relay.conf";
    let out = gw.run(&[
        "/bin/sh",
        "-c",
        &unpack.replace("BROKER_PORT", &broker_port.to_string()),
    ]);
    assert!(out.status.success(), "installing as opkg does: {out:?}");
    let listed = std::fs::read_to_string(gw.path("/usr/lib/opkg/info/ms500-relay.list")).unwrap();
    assert!(
        listed.lines().any(|l| l == "/usr/bin/ms500-relay"),
        "{listed}"
    );
    gw
}

#[test]
#[ignore = "slow: builds the package and runs it in a chroot; scripts/test.sh runs it as root"]
fn the_openwrt_package_runs_under_its_procd_script_in_a_busybox_root() {
    let ipk = script_output_of("scripts/package.sh", &["ipk", "x86_64"]);
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, "/service/ms500/+/socket");
    let gw = openwrt_root_with(&ipk, broker.port);

    // procd: `/etc/init.d/ms500-relay start`, the command it describes in the foreground.
    let mut relay = Command::new("chroot")
        .arg(gw.root.path())
        .args(["/etc/init.d/ms500-relay", "start"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chroot");
    let stderr = relay.stderr.take().unwrap();
    let (lines, logged) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let mut seen = String::new();
    let mut log_has = |needle: &str| {
        let logged_it = wait_until(support::WAIT, || {
            while let Ok(line) = logged.try_recv() {
                seen.push_str(&line);
                seen.push('\n');
            }
            seen.contains(needle)
        });
        assert!(logged_it, "never logged {needle:?}:\n{seen}");
    };
    log_has(" listening on ");
    let instance = std::fs::read_to_string(gw.path("/tmp/procd/instance")).unwrap();
    for param in [
        "command /usr/bin/ms500-relay run -c /etc/ms500-relay/relay.conf",
        "respawn 3600 5 5",
        "file /etc/ms500-relay/relay.conf",
        "stdout 1",
        "stderr 1",
        "term_timeout 10",
        "reload_signal HUP",
    ] {
        assert!(
            instance.lines().any(|l| l == param),
            "{param:?} missing:\n{instance}"
        );
    }
    deliver(
        super::support::wait_listening_port(relay.id()),
        3,
        &sub,
        "the relay procd runs",
    );
    assert!(
        gw.path("/tmp/run/ms500-relay/status.json").is_file(),
        "STATUS_FILE on the tmpfs"
    );

    let reload = gw.run(&["/etc/init.d/ms500-relay", "reload"]);
    assert!(reload.status.success(), "reload: {reload:?}");
    log_has("SIGHUP: log file reopened");

    // procd stops an instance with SIGTERM (term_timeout before SIGKILL).
    send_signal(relay.id(), "TERM");
    let status = relay.wait().unwrap();
    log_has(" INFO  stopped");
    assert_eq!(status.code(), Some(0));
}
