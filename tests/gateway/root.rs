//! A gateway's root file system in a scratch directory, holding BusyBox
//! (static) and what a test puts there, nothing else: no bash, no shared
//! library. Commands run in it with chroot and cron's bare environment.

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::artifacts::{file_says, is_static, REPO};
use crate::support::{
    require, send_signal, topic, wait_listening_port, wait_until, Subscriber, TempDir,
};

/// A gateway root; the relay its PID_FILE names is killed on drop.
pub struct Gateway {
    pub root: TempDir,
}

impl Gateway {
    /// A bare BusyBox system: the static BusyBox in /bin, /dev/null, and
    /// `dirs`.
    pub fn busybox(tag: &str, dirs: &[&str]) -> Gateway {
        let root = TempDir::new(tag);
        let r = root.path();
        for dir in dirs.iter().chain(&["bin", "dev"]) {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            is_static(&file_says(busybox)),
            "/bin/busybox is not the static BusyBox (scripts/test.sh installs busybox-static)"
        );
        std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
        let null = Command::new("mknod")
            .args(["-m", "666"])
            .arg(r.join("dev/null"))
            .args(["c", "1", "3"])
            .status()
            .expect("mknod");
        assert!(
            null.success(),
            "cannot create /dev/null in the gateway root"
        );
        Gateway { root }
    }

    /// A BusyBox root with the relay binary `relay_bin` installed as the
    /// README says, and a relay.conf reaching the broker on `broker_port`
    /// by a name /etc/hosts gives.
    pub fn with_relay(relay_bin: &Path, broker_port: u16) -> Gateway {
        let gw = Gateway::busybox(
            "gateway-root",
            &[
                "sbin",
                "usr/bin",
                "usr/sbin",
                "usr/local/bin",
                "etc/ms500-relay",
                "var/lib/ms500-relay",
                "var/log",
                "run",
                "tmp",
            ],
        );
        std::fs::copy(relay_bin, gw.path("/usr/local/bin/ms500-relay")).unwrap();
        gw.write(
            "/etc/hosts",
            "127.0.0.1 localhost\n127.0.0.1 mqtt-broker.gateway\n",
        );
        gw.write(
            "/etc/ms500-relay/relay.conf",
            &format!(
                "MQTT_BROKER = mqtt-broker.gateway\nMQTT_PORT = {broker_port}\n\
                 SOCKET_PORT = 0\n\
                 PID_FILE = /run/ms500-relay/relay.pid\n\
                 STATUS_FILE = /run/ms500-relay/status.json\n\
                 SPOOL_FILE = /var/lib/ms500-relay/spool.bin\n\
                 STATUS_INTERVAL = 1\nSHUTDOWN_GRACE = 1\n"
            ),
        );
        gw
    }

    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.path().join(inside.trim_start_matches('/'))
    }

    /// Writes `text` to file `inside` the root.
    pub fn write(&self, inside: &str, text: &str) {
        std::fs::write(self.path(inside), text).unwrap();
    }

    /// Fails the test unless chroot is permitted here.
    #[track_caller]
    pub fn require_chroot(&self) {
        let probe = self.run(&["/bin/busybox", "true"]);
        require(
            probe.status.success(),
            &format!(
                "chroot is not permitted here ({})",
                String::from_utf8_lossy(&probe.stderr).trim()
            ),
        );
    }

    /// BusyBox's applets as links in the root (`busybox --install -s`), as
    /// its installer leaves them; fails the test where chroot is refused.
    #[track_caller]
    pub fn install_busybox(&self) {
        let out = self.run(&["/bin/busybox", "--install", "-s"]);
        require(
            out.status.success(),
            &format!(
                "chroot is not permitted here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
    }

    /// Runs `argv` inside the root with cron's bare environment.
    pub fn run(&self, argv: &[&str]) -> Output {
        Command::new("chroot")
            .arg(self.root.path())
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", "/")
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null())
            .output()
            .expect("run chroot")
    }

    /// Starts `argv` inside the root with only `env`, in the background; its
    /// stderr comes line by line through [`Stderr`].
    pub fn spawn(&self, argv: &[&str], env: &[(&str, &str)]) -> (Child, Stderr) {
        let mut child = Command::new("chroot")
            .arg(self.root.path())
            .args(argv)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chroot");
        let stderr = child.stderr.take().expect("piped stderr");
        let (lines, logged) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines.send(line);
            }
        });
        let stderr = Stderr {
            lines: logged,
            seen: String::new(),
        };
        (child, stderr)
    }

    /// What cron does every minute: the README's command through /bin/sh.
    pub fn cron(&self) -> Output {
        self.run(&["/bin/sh", "-c", &cron_command()])
    }

    /// The port the relay got (it binds port 0).
    pub fn relay_port(&self) -> u16 {
        wait_listening_port(self.relay_pid().expect("a pid in PID_FILE"))
    }

    pub fn relay_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path("/run/ms500-relay/relay.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn watchdog_log(&self) -> String {
        std::fs::read_to_string(self.path("/var/log/ms500-relay-watchdog.log")).unwrap_or_default()
    }

    pub fn relay_log(&self) -> String {
        std::fs::read_to_string(self.path("/run/ms500-relay/ms500-relay.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(pid) = self.relay_pid() {
            send_signal(pid, "CONT");
            send_signal(pid, "KILL");
        }
    }
}

/// The standard error of a process [`Gateway::spawn`] started.
pub struct Stderr {
    lines: Receiver<String>,
    /// Every line read so far.
    pub seen: String,
}

impl Stderr {
    /// Reads lines until one holds `needle` (or `timeout`); whether one did.
    pub fn shows(&mut self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push_str(&line);
                self.seen.push('\n');
            }
            self.seen.contains(needle)
        })
    }
}

/// The command of the crontab line in README's "Install on a gateway"
/// section: what cron hands to `/bin/sh -c` every minute.
pub fn cron_command() -> String {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Install on a gateway"))
        .expect("README has an \"Install on a gateway\" section");
    let line = section
        .lines()
        .find(|l| l.starts_with("* * * * * "))
        .expect("a crontab line in that section");
    line["* * * * * ".len()..].trim().to_string()
}

/// Every path under `dir`, symlinks not followed.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        out.push(path.clone());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
    }
    out
}

/// Sends IMG `id` for `unit` to the relay on `port`, as a backend does, and
/// waits for it on the broker (`sub`); `context` says more when it fails.
pub fn deliver(port: u16, unit: &str, id: u32, sub: &Subscriber, context: impl Fn() -> String) {
    let command = format!(r#"{{"type":"IMG","unit":"{unit}","id":{id}}}"#);
    let mut backend = TcpStream::connect(("127.0.0.1", port)).expect("relay listens");
    backend.write_all(command.as_bytes()).unwrap();
    let got = sub.recv(Duration::from_secs(10));
    assert_eq!(
        got.as_ref()
            .map(|m| (m.topic.as_str(), m.payload.as_slice())),
        Some((topic(unit).as_str(), command.as_bytes())),
        "command {id} did not arrive; {}",
        context()
    );
}
