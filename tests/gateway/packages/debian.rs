//! The Debian package (`scripts/package.sh deb ARCH`): unpacked as dpkg
//! does and passed through lintian for every target; the amd64 one
//! installed on this machine with `dpkg -i`, its relay run as its systemd
//! unit says and through its sysvinit script, upgraded keeping the edited
//! relay.conf, and purged leaving nothing behind.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{field, listing, mode};
use crate::artifacts::{
    built_package, busybox_parses, has_all, runs_and_names, script_output_of,
    shipped_conf_is_valid, succeeded, succeeds, text, REPO,
};
use crate::root::deliver;
use crate::support::notify::NotifySocket;
use crate::support::{
    alive, require, running_as_root, send_signal, wait_listening_port, wait_until, Broker,
    Subscriber, TempDir, COMMANDS, WAIT,
};

pub(super) fn the_deb_unpacks_and_passes_lintian(arch: &str, debarch: &str) {
    let deb = built_package("deb", debarch);
    let version = env!("CARGO_PKG_VERSION");
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
    let files = [
        "usr/bin/ms500-relay",
        "etc/ms500-relay/relay.conf",
        "etc/init.d/ms500-relay",
        "lib/systemd/system/ms500-relay.service",
        "usr/share/man/man8/ms500-relay.8.gz",
        "usr/share/doc/ms500-relay/copyright",
        "usr/share/doc/ms500-relay/changelog.gz",
        "usr/share/lintian/overrides/ms500-relay",
    ];
    has_all(&listing(root.path()), &files, "the unpacked package");
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
        &[],
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
    succeeded(&dpkg(args), &format!("dpkg {args:?}"));
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

#[test]
#[ignore = "needs root: installs the Debian package on this machine; scripts/test.sh runs it"]
fn the_debian_package_installs_serves_as_its_unit_says_and_purges_without_a_trace() {
    require(running_as_root(), "root, to install a package with dpkg");
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
    let installed = [
        "/usr/bin/ms500-relay",
        "/etc/rc2.d/S01ms500-relay",
        "/var/lib/dpkg/info/ms500-relay.postrm",
    ];
    has_all(&traces(), &installed, "what dpkg -i left");
    installed_as_debian_wants();
    // Stops what postinst may have started (invoke-rc.d, when no policy
    // forbids it here): the test starts the relay itself.
    succeeds(&mut as_service_user(&format!(
        "/usr/bin/ms500-relay stop -c {CONF}"
    )));

    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, COMMANDS);
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
    deliver(port, "cam-deb", 1, sub, || {
        "the relay run as its unit says".into()
    });

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
    let port = wait_listening_port(pid);
    deliver(port, "cam-deb", 2, sub, || {
        "the relay the init script started".into()
    });
    assert_eq!(init("status").status.code(), Some(0));
    let reloaded = init("reload");
    assert!(reloaded.status.success(), "init reload: {reloaded:?}");
    let log = Path::new("/var/log/ms500-relay/relay.log");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("SIGHUP: log file reopened")),
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let stopped = init("stop");
    assert!(stopped.status.success(), "init stop: {stopped:?}");
    assert!(wait_until(WAIT, || !alive(pid)));
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
