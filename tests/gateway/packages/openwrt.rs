//! The OpenWrt package (`scripts/package.sh ipk ARCH`): each .ipk unpacked
//! as opkg does (an outer gzipped tar, then its control and data archives,
//! with BusyBox's tar) for every target; the x86_64 one installed into a
//! BusyBox root as opkg does, its procd script run there by a stand-in for
//! OpenWrt's rc.common, which plays procd: the command it describes run in
//! the foreground, a command delivered, `reload` through reload_service,
//! SIGTERM.

use std::path::Path;
use std::process::Command;

use super::{field, listing, mode};
use crate::artifacts::{
    built_package, busybox_parses, has_lines, runs_and_names, script_output_of,
    shipped_conf_is_valid, succeeds,
};
use crate::root::{deliver, Gateway};
use crate::support::{
    chmod, send_signal, wait_listening_port, Broker, Subscriber, TempDir, COMMANDS, WAIT,
};

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

pub(super) fn the_ipk_unpacks_as_opkg_does(arch: &str, owrt: &str) {
    let ipk = built_package("ipk", owrt);
    let version = env!("CARGO_PKG_VERSION");
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
    let lines = [
        "#!/bin/sh /etc/rc.common",
        "USE_PROCD=1",
        "BIN=/usr/bin/ms500-relay",
        "    procd_set_param respawn 3600 5 5",
        "reload_service() {",
    ];
    has_lines(&script, &lines, "the procd script");
    shipped_conf_is_valid(
        &data.join("etc/ms500-relay/relay.conf"),
        &data.join("usr/bin/ms500-relay"),
        &["etc/ms500-relay"],
        &[],
    );
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
    // A bare BusyBox system shaped like OpenWrt's: /var is a link to the
    // tmpfs /tmp (sticky, open to all), so the run-time files go there.
    let gw = Gateway::busybox(
        "openwrt-root",
        &[
            "sbin",
            "usr/bin",
            "usr/sbin",
            "etc",
            "tmp",
            "root",
            "usr/lib/opkg/info",
        ],
    );
    chmod(&gw.path("/tmp"), 0o1777);
    std::os::unix::fs::symlink("/tmp", gw.path("/var")).unwrap();
    gw.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    gw.write("/etc/hosts", "127.0.0.1 localhost\n");
    gw.write("/etc/rc.common", RC_COMMON);
    std::fs::copy(ipk, gw.path("/tmp/ms500-relay.ipk")).unwrap();
    gw.install_busybox();
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
    let sub = Subscriber::new(broker.port, COMMANDS);
    let gw = openwrt_root_with(&ipk, broker.port);

    // procd: `/etc/init.d/ms500-relay start`, the command it describes in the foreground.
    let start = ["/etc/init.d/ms500-relay", "start"];
    let (mut relay, mut stderr) = gw.spawn(&start, &[("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]);
    let mut log_has = |needle: &str| {
        let logged_it = stderr.shows(needle, WAIT);
        assert!(logged_it, "never logged {needle:?}:\n{}", stderr.seen);
    };
    log_has(" listening on ");
    let instance = std::fs::read_to_string(gw.path("/tmp/procd/instance")).unwrap();
    let params = [
        "command /usr/bin/ms500-relay run -c /etc/ms500-relay/relay.conf",
        "respawn 3600 5 5",
        "file /etc/ms500-relay/relay.conf",
        "stdout 1",
        "stderr 1",
        "term_timeout 10",
        "reload_signal HUP",
    ];
    has_lines(&instance, &params, "the instance procd was given");
    let port = wait_listening_port(relay.id());
    deliver(port, "cam-deb", 3, &sub, || "the relay procd runs".into());
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
