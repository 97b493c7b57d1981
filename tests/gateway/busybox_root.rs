//! The relay as a gateway without a package manager runs it: a root that
//! holds nothing but BusyBox and the static binary, where the README's
//! crontab line keeps the relay running (started, left alone, replaced when
//! killed or hung), where the broker's name resolves through a DNS server
//! (for each target's binary, under qemu-user), and where INSTALL.md's
//! commands work as written.

use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use crate::artifacts::{file_says, gateway_arch, is_static, script_output, REPO};
use crate::dns::DnsServer;
use crate::root::{cron_command, deliver, walk, Gateway, Stderr};
use crate::support::{
    age, alive, send_signal, topic, wait_listening_port, wait_until, Broker, Subscriber, COMMANDS,
};

#[test]
#[ignore = "slow: static release build and a chroot; scripts/test.sh runs it as root"]
fn a_busybox_only_gateway_keeps_the_relay_running_from_cron() {
    let bin = script_output("scripts/build-static.sh", "x86_64");
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, COMMANDS);
    let gw = Gateway::with_relay(&bin, broker.port);
    gw.require_chroot();
    let out = gw.run(&["/bin/busybox", "--install", "-s"]);
    assert!(out.status.success(), "{out:?}");

    // Nothing but BusyBox and the relay: no bash, no shared library, no loader.
    for entry in walk(gw.root.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name != "bash" && !name.contains(".so"),
            "{}",
            entry.display()
        );
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        if meta.is_file() {
            let kind = file_says(&entry);
            assert!(
                !kind.contains("ELF") || is_static(&kind),
                "{} is dynamically linked: {kind}",
                entry.display()
            );
        }
    }

    // (a) Not running (and /run/ms500-relay missing, as after a reboot): the cron line starts it.
    let first = gw.cron();
    assert!(
        first.status.success(),
        "{}\n{}",
        gw.watchdog_log(),
        gw.relay_log()
    );
    assert!(
        gw.watchdog_log().contains("started"),
        "{}",
        gw.watchdog_log()
    );
    let p1 = gw.relay_pid().expect("a pid in PID_FILE");
    assert!(alive(p1));
    assert!(
        gw.relay_log()
            .contains("connected to broker mqtt-broker.gateway:"),
        "the broker's host name from /etc/hosts: {}",
        gw.relay_log()
    );
    deliver(gw.relay_port(), "cam-gw", 1, &sub, || gw.relay_log());

    // (b) Healthy: the next minute changes nothing and says nothing.
    let said = gw.watchdog_log();
    let second = gw.cron();
    assert!(second.status.success());
    assert_eq!(
        gw.watchdog_log(),
        said,
        "a healthy relay must be left alone quietly"
    );
    assert_eq!(gw.relay_pid(), Some(p1));

    // `status` inside the gateway reads the status file and says it is fine.
    let status = gw.run(&[
        "/usr/local/bin/ms500-relay",
        "status",
        "-c",
        "/etc/ms500-relay/relay.conf",
    ]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(&format!("pid {p1}")) && shown.contains("FRESH"),
        "{shown}"
    );
    assert!(shown.contains("connected"), "{shown}");

    // (c) Killed: the next minute starts a new one.
    send_signal(p1, "KILL");
    assert!(wait_until(Duration::from_secs(5), || !alive(p1)));
    let third = gw.cron();
    assert!(third.status.success(), "{third:?}\n{}", gw.watchdog_log());
    let p2 = gw.relay_pid().expect("a pid in PID_FILE");
    assert_ne!(p2, p1);
    assert!(alive(p2));
    deliver(gw.relay_port(), "cam-gw", 2, &sub, || gw.relay_log());

    // (d) Hung (SIGSTOP): its status file goes stale, the next minute replaces it.
    send_signal(p2, "STOP");
    assert!(wait_until(Duration::from_secs(10), || status_age(&gw)
        .is_some_and(|a| a > Duration::from_millis(3500))));
    let fourth = gw.cron();
    assert!(fourth.status.success(), "{fourth:?}\n{}", gw.watchdog_log());
    assert!(gw.watchdog_log().contains("hung"), "{}", gw.watchdog_log());
    let p3 = gw.relay_pid().expect("a pid in PID_FILE");
    assert_ne!(p3, p2);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(p2)),
        "the hung relay is still there"
    );
    deliver(gw.relay_port(), "cam-gw", 3, &sub, || gw.relay_log());
}

/// How long ago the relay in `gw` last wrote its status file.
fn status_age(gw: &Gateway) -> Option<Duration> {
    age(&gw.path("/run/ms500-relay/status.json"))
}

/// The relay of MS500_GATEWAY_ARCH, run in a BusyBox-only root (under the
/// static qemu-user copied into that root for a foreign architecture: the
/// kernel here does not run foreign binaries by itself), finds the broker by
/// a name that only the root's DNS server knows: /etc/hosts lacks it, and
/// /etc/resolv.conf names a server the test runs on a loopback address.
#[test]
#[ignore = "slow: static release build and a chroot; scripts/test.sh runs it as root for each target"]
fn a_busybox_root_finds_the_broker_through_its_dns_server() {
    let (arch, qemu) = gateway_arch();
    let bin = script_output("scripts/build-static.sh", &arch);
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, COMMANDS);
    let gw = Gateway::with_relay(&bin, broker.port);
    gw.require_chroot();
    let dns = DnsServer::start("mqtt-broker.gateway");
    gw.write("/etc/hosts", "127.0.0.1 localhost\n");
    gw.write(
        "/etc/resolv.conf",
        &format!("nameserver {}\noptions timeout:2 attempts:3\n", dns.address),
    );
    let (mut relay, mut stderr) = start_in_root(&gw, qemu);
    let connected = stderr.shows(
        "connected to broker mqtt-broker.gateway:",
        Duration::from_secs(30),
    );
    let seen = &stderr.seen;
    let asked = dns.asked();
    if connected {
        // The relay works there, not only connects: a command goes through.
        let mut backend =
            std::net::TcpStream::connect(("127.0.0.1", wait_listening_port(relay.id())))
                .expect("relay listens");
        backend
            .write_all(br#"{"type":"IMG","unit":"cam-dns","id":7}"#)
            .unwrap();
    }
    let got = sub.recv(Duration::from_secs(10));
    let _ = relay.kill();
    let _ = relay.wait();
    // Gone already: the gateway need not stop it again.
    let _ = std::fs::remove_file(gw.path("/run/ms500-relay/relay.pid"));
    assert!(
        connected,
        "{arch}: the relay did not reach the broker by name; DNS was asked {asked:?}; its log:\n{seen}"
    );
    assert!(
        asked.iter().any(|q| q == "mqtt-broker.gateway type 1"),
        "{arch}: the name was not resolved through the DNS server: {asked:?}"
    );
    assert_eq!(
        got.as_ref()
            .map(|m| (m.topic.as_str(), m.payload.as_slice())),
        Some((
            topic("cam-dns").as_str(),
            &br#"{"type":"IMG","unit":"cam-dns","id":7}"#[..]
        )),
        "{arch}: the command did not arrive"
    );
}

/// Starts the relay inside the gateway root (under `qemu`, copied into the
/// root, for a foreign architecture) with its log on stderr.
fn start_in_root(gw: &Gateway, qemu: Option<&str>) -> (Child, Stderr) {
    std::fs::create_dir_all(gw.path("/run/ms500-relay")).unwrap();
    let mut argv = Vec::new();
    if let Some(qemu) = qemu {
        let host = Path::new("/usr/bin").join(qemu);
        std::fs::copy(&host, gw.path(&format!("/usr/bin/{qemu}")))
            .unwrap_or_else(|e| panic!("copy {} (qemu-user-static): {e}", host.display()));
        argv.push(format!("/usr/bin/{qemu}"));
    }
    argv.extend(
        [
            "/usr/local/bin/ms500-relay",
            "-c",
            "/etc/ms500-relay/relay.conf",
        ]
        .map(String::from),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let env = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        ("RUST_LOG", "info"),
    ];
    gw.spawn(&argv, &env)
}

/// The shell commands of INSTALL.md, in order, as an operator types them on
/// the gateway: every ```sh block, without the lines run elsewhere (`scp`,
/// `ssh`), the editor, and `send` (it needs a broker the gateway has).
fn install_md_commands(install_md: &str) -> String {
    let mut script = String::new();
    let mut in_sh = false;
    for line in install_md.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let skipped = ["scp ", "ssh ", "vi ", "/usr/local/bin/ms500-relay send"];
        if in_sh && !skipped.iter().any(|s| line.starts_with(s)) {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

#[test]
#[ignore = "slow: builds the package and runs it in a chroot; scripts/test.sh runs it as root"]
fn install_md_works_as_written_in_a_busybox_root() {
    let arch = "x86_64";
    let tarball = script_output("scripts/package.sh", arch);
    // A bare BusyBox system: what its installer leaves, nothing of ours.
    let gw = Gateway::busybox(
        "install-root",
        &[
            "sbin", "usr/bin", "usr/sbin", "etc", "var/log", "run", "tmp", "root",
        ],
    );
    gw.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    let name = tarball.file_name().unwrap().to_string_lossy();
    std::fs::copy(&tarball, gw.path(&format!("/tmp/{name}"))).unwrap();
    gw.install_busybox();

    let install_md =
        std::fs::read_to_string(Path::new(REPO).join("scripts/gateway/INSTALL.md")).unwrap();
    assert!(install_md.contains("::shutdown:/etc/init.d/ms500-relay stop"));
    let script = format!("set -e\n{}", install_md_commands(&install_md));
    assert!(script.contains("check-config") && script.contains("/etc/init.d/ms500-relay start"));
    let out = gw.run(&["/bin/sh", "-c", &script]);
    assert!(
        out.status.success(),
        "INSTALL.md as written fails on BusyBox:\n{script}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = gw.relay_pid().expect("the init script started the relay");
    assert!(alive(pid));
    let crontab = std::fs::read_to_string(gw.path("/var/spool/cron/crontabs/root")).unwrap();
    assert!(crontab.contains(&cron_command()), "{crontab}");
    let stop = gw.run(&["/etc/init.d/ms500-relay", "stop"]);
    assert!(stop.status.success(), "{stop:?}");
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
    let status = gw.run(&["/etc/init.d/ms500-relay", "status"]);
    assert_eq!(status.status.code(), Some(1), "stopped: {status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("STOPPED"));
}
