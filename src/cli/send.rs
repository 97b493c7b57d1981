//! `ms500-relay send`: a tiny backend for operators. Connects to the
//! running relay's socket, asks for a status line per command, writes the
//! commands, and prints what comes back (secret fields as `"***"`, through
//! `redact::shown`) until each command has its outcome or `--wait` runs
//! out (PROTOCOL.md §4). Runs on the main thread; nothing else is started.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backend::peers;
use crate::cli::conf;
use crate::config::Config;
use crate::error::Error;
use crate::ops::transport::Stream;
use crate::ops::{logging, sys};
use crate::protocol::command;
use crate::protocol::frame::{Frame, FrameDecoder};
use crate::protocol::redact;
use crate::protocol::reply;

/// What `send` asks of the relay before its commands.
const ASK_FOR_STATUS_LINES: &[u8] = b"{\"ack_mode\":\"all\"}\n";
/// ... or, where relay.conf says `ACK_MODE = camera`, for the camera's word too.
const ASK_FOR_CAMERA_LINES: &[u8] = b"{\"ack_mode\":\"camera\"}\n";

/// The status lines the relay owes for the bytes sent: one per framed value
/// (a command, or bytes that are not JSON), found by framing them as the
/// relay does.
fn expected(input: &[u8], max_message_bytes: usize) -> usize {
    let mut decoder = FrameDecoder::new(max_message_bytes);
    decoder.push(input);
    let mut lines = 0;
    while let Some(frame) = decoder.next_frame() {
        match frame {
            Frame::Value(json) if command::ack_request(&json).is_some() => {}
            Frame::Value(_) | Frame::Invalid(_) => lines += 1,
            Frame::Fatal(_) => {
                // The relay closes the connection after this one.
                lines += 1;
                break;
            }
        }
    }
    if decoder.finish().is_some() {
        // An incomplete value at the end is discarded by the relay, without a line.
        log::warn!("the input ends in an incomplete JSON value: it will not be sent on");
    }
    lines
}

/// `ms500-relay send [-c FILE] [-w SECS] [JSON...]`: [`run`] with relay.conf
/// read and warnings logged to stderr; on failure it also says which
/// relay.conf told it where the relay is (the answer to most "cannot
/// connect" surprises: ./relay.conf is read first).
pub fn main(path: Option<&Path>, commands: &[String], wait: Duration) -> Result<(), Error> {
    let loaded = conf::load(path)?;
    let config = &loaded.config;
    let log = logging::init(log::LevelFilter::Warn, &logging::Destination::Stderr)?;
    let sent = run(config, commands, wait);
    log.finish();
    if sent.is_err() {
        let read = loaded
            .source
            .map_or("no relay.conf found: built-in defaults".into(), |p| {
                format!("configuration from {}", p.display())
            });
        let socket = match &config.socket_path {
            Some(path) => format!("SOCKET_PATH {}", path.display()),
            None => format!(
                "SOCKET_HOST {}, SOCKET_PORT {}",
                config.socket_host, config.socket_port
            ),
        };
        let _ = writeln!(
            std::io::stderr(),
            "ms500-relay: send used {read} ({socket})"
        );
    }
    sent
}

pub fn run(config: &Config, commands: &[String], wait: Duration) -> Result<(), Error> {
    let target = target(config)?;
    let mut input = Vec::new();
    if commands.is_empty() {
        std::io::stdin().read_to_end(&mut input)?;
    } else {
        for c in commands {
            input.extend_from_slice(c.trim().as_bytes());
            input.push(b'\n');
        }
    }
    let want = expected(&input, config.max_message_bytes);
    let stream = connect(&target)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let ask = if config.ack_mode == crate::config::AckMode::Camera {
        ASK_FOR_CAMERA_LINES
    } else {
        ASK_FOR_STATUS_LINES
    };
    let written = (&stream)
        .write_all(ask)
        .and_then(|()| (&stream).write_all(&input));
    let seen = match written {
        Ok(()) => print_replies(&stream, want, wait)?,
        // Closed before it could read anything: refused, as below.
        Err(e) if closed(&e) => Seen {
            closed: true,
            ..Seen::default()
        },
        Err(e) => return Err(e.into()),
    };
    if let Some(wrong) = wrong_answer(&seen, &target) {
        return Err(wrong);
    }
    match seen.shortfall(want, wait) {
        Some(why) => Err(Error::runtime(why)),
        None => Ok(()),
    }
}

/// Where the relay is: its Unix socket, or its TCP listener.
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The running relay's socket, as relay.conf says where it is, once it is
/// sure the relay answers there (for `held` and `cancel`).
pub(super) fn connect_to_relay(config: &Config) -> Result<(Stream, String), Error> {
    let target = target(config)?;
    Ok((connect(&target)?, target.to_string()))
}

/// Connects and makes sure it is the relay that answers, before anything is written.
fn connect(target: &Target) -> Result<Stream, Error> {
    match target {
        Target::Tcp(addr) => {
            let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))
                .map_err(|e| cannot_connect(target, e))?;
            relay_owns(&stream, *addr)?;
            let stream = Stream::Tcp(stream);
            stream.set_nodelay();
            Ok(stream)
        }
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|e| cannot_connect(target, e))?;
            relay_holds(&stream, path)?;
            Ok(Stream::Unix(stream))
        }
    }
}

/// The Unix socket must be root's or our own user's, both its file and
/// the process that listens on it (the kernel says which: `SO_PEERCRED`):
/// while the relay is down another user could put a socket there.
fn relay_holds(stream: &UnixStream, path: &Path) -> Result<(), Error> {
    let me = sys::euid();
    let file = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| !m.file_type().is_symlink())
        .map(|m| m.uid());
    let holder = sys::peer_credentials(stream).ok().map(|peer| peer.uid);
    let at = path.display();
    match (file, holder) {
        (Some(uid), _) | (_, Some(uid)) if uid != 0 && uid != me => Err(Error::runtime(format!(
            "the socket {at} belongs to user {uid}, not root or user {me}: \
                 not the relay, nothing sent"
        ))),
        (Some(_), Some(_)) => Ok(()),
        _ => Err(Error::runtime(format!(
            "cannot tell who owns the socket {at} (a symlink, or gone): nothing sent"
        ))),
    }
}

/// On this machine, the socket that accepted us must be root's or our own
/// user's: while the relay is down another local user could listen on its
/// port and take the commands (a Wi-Fi password) and answer `ok` to them.
/// Nothing is written before this holds.
fn relay_owns(stream: &TcpStream, addr: SocketAddr) -> Result<(), Error> {
    let ours = stream.local_addr()?;
    if !peers::is_local(addr, ours) {
        return Ok(());
    }
    let me = sys::euid();
    match peers::connection_owner(&peers::read_sockets(), addr, ours, true) {
        Some(uid) if uid == 0 || uid == me => Ok(()),
        Some(uid) => Err(Error::runtime(format!(
            "the listener at {addr} belongs to user {uid}, not root or user {me}: \
             not the relay, nothing sent"
        ))),
        None => Err(Error::runtime(format!(
            "cannot tell who owns the listener at {addr} (/proc/net/tcp): nothing sent"
        ))),
    }
}

/// Why no connection: nothing listens there, or something else went wrong.
fn cannot_connect(target: &Target, e: std::io::Error) -> Error {
    let keys = match target {
        Target::Tcp(_) => "SOCKET_HOST and SOCKET_PORT differ",
        Target::Unix(_) => "SOCKET_PATH differs",
    };
    match e.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::NotFound => Error::runtime(format!(
            "cannot connect to the relay: nothing listens at {target} (it is not running, or \
             its {keys} from this relay.conf's)"
        )),
        ErrorKind::PermissionDenied => Error::runtime(format!(
            "cannot connect to the relay at {target}: permission denied (its SOCKET_MODE and \
             SOCKET_GROUP do not admit this user)"
        )),
        _ => Error::runtime_because(format!("cannot connect to the relay at {target}"), e),
    }
}

/// The connection was closed (or reset) by the other end.
fn closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

/// What the answer says when it is not the relay's: the connection closed
/// without a single line (the relay refused this peer), or only lines that
/// are not JSON (something else listens there).
fn wrong_answer(seen: &Seen, addr: &Target) -> Option<Error> {
    if seen.status_lines > 0 || seen.replies > 0 || !seen.held.is_empty() {
        return None;
    }
    if seen.not_json > 0 {
        return Some(Error::runtime(format!(
            "what answers at {addr} is not the relay: it sent {} lines that are not JSON",
            seen.not_json
        )));
    }
    seen.closed.then(|| {
        Error::runtime(format!(
            "the relay at {addr} closed the connection without a word: it refused this \
             peer (not in SOCKET_ALLOW, MAX_CONNECTIONS reached, or shutting down; its log \
             says which)"
        ))
    })
}

/// Where to connect: SOCKET_PATH when set, else SOCKET_HOST (a wildcard
/// bind mapped to loopback) and SOCKET_PORT.
fn target(config: &Config) -> Result<Target, Error> {
    if let Some(path) = &config.socket_path {
        return Ok(Target::Unix(path.clone()));
    }
    let host = match config.socket_host.as_str() {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "::1",
        h => h,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, config.socket_port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(Target::Tcp)
        .ok_or_else(|| Error::runtime(format!("cannot resolve SOCKET_HOST {host:?}")))
}

#[derive(Debug, Default)]
struct Seen {
    /// Outcomes: `ok` and `error` lines (each command gets one).
    status_lines: usize,
    /// Of those, `error` lines: refused ones, and expired ones.
    refused: usize,
    expired: usize,
    /// Commands the relay said it holds for an offline camera whose
    /// outcome has not come yet (type, unit, id as their lines show them).
    held: Vec<LineKey>,
    /// Commands published whose camera is to confirm them (`ACK_MODE =
    /// camera`: their `ok` named the camera), not confirmed yet.
    confirming: Vec<LineKey>,
    /// SCS/UDS the broker took: each may get a device reply.
    replies_due: usize,
    replies: usize,
    /// Of `replies`: lines that are not JSON at all.
    not_json: usize,
    /// The other end closed the connection.
    closed: bool,
}

impl Seen {
    /// Counts one line: a status line or a device reply.
    fn note(&mut self, line: &[u8]) {
        match status_line(line) {
            Some(StatusLine {
                status: Status::Held,
                key,
                ..
            }) => self.held.push(key),
            Some(StatusLine {
                status: Status::Resent,
                ..
            }) => {}
            Some(status) => self.outcome(status),
            // `send` asks for status lines, so every device reply comes
            // wrapped; a line of neither shape settles nothing.
            None if reply::wrapped_unit(line).is_some() => self.replies += 1,
            None => {
                if serde_json::from_slice::<Value>(line).is_err() {
                    self.not_json += 1;
                } else {
                    log::debug!("a line that is neither a status line nor a reply");
                }
            }
        }
    }

    /// An `ok`, `delivered` or `error` line: the outcome of a command (held
    /// or not), or, for an `ok` naming a camera, the start of its wait for
    /// the camera's word.
    fn outcome(&mut self, status: StatusLine) {
        if let Some(at) = self.held.iter().position(|k| *k == status.key) {
            self.held.swap_remove(at);
        }
        let was_confirming = match self.confirming.iter().position(|k| *k == status.key) {
            Some(at) => {
                self.confirming.swap_remove(at);
                true
            }
            None => false,
        };
        if status.status == Status::Ok && status.wants_reply() {
            self.replies_due += 1;
        }
        if status.status == Status::Ok && status.camera {
            self.confirming.push(status.key);
            return;
        }
        if status.status == Status::Delivered && !was_confirming {
            // A `delivered` without its `ok` (a line lost): settles it all the same.
            log::debug!("a delivered line without an ok before it");
        }
        self.status_lines += 1;
        match status.status {
            Status::Error if status.expired => self.expired += 1,
            Status::Error => self.refused += 1,
            _ => {}
        }
    }

    fn complete(&self, want: usize) -> bool {
        self.status_lines >= want && self.replies >= self.replies_due
    }

    /// Why not every one of `want` commands was published within `wait`,
    /// naming refused, expired and still held ones; None when all were.
    fn shortfall(&self, want: usize, wait: Duration) -> Option<String> {
        let mut why = Vec::new();
        if self.refused > 0 {
            why.push(format!("{} of {want} commands were refused", self.refused));
        }
        if self.expired > 0 {
            why.push(format!(
                "{} of {want} commands expired, never published",
                self.expired
            ));
        }
        let open = want.saturating_sub(self.status_lines);
        let held = self.held.len().min(open);
        if held > 0 {
            why.push(format!(
                "{held} of {want} commands still held in the relay for cameras that are \
                 offline, not published within {:.1} s (each is published when its camera's \
                 heartbeat returns, or expires)",
                wait.as_secs_f64()
            ));
        }
        let confirming = self.confirming.len().min(open - held);
        if confirming > 0 {
            why.push(format!(
                "{confirming} of {want} commands published but not confirmed by their camera \
                 within {:.1} s (the relay keeps each until the camera's heartbeats show it \
                 had it, and publishes it again if it may have missed it)",
                wait.as_secs_f64()
            ));
        }
        if open > held + confirming {
            why.push(format!(
                "{} of {want} commands not confirmed within {:.1} s (queued in the relay for a broker that is away, or not read yet)",
                open - held,
                wait.as_secs_f64()
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// What tells a command's lines apart: its `type`, `unit` and `id`, as the
/// relay writes them (a `held` line and the outcome after it carry the same).
type LineKey = (Option<String>, Option<String>, Option<String>);

/// One status line, read.
struct StatusLine {
    status: Status,
    key: LineKey,
    /// An `error` whose reason is the command's lifetime.
    expired: bool,
    /// It names its camera (`ACK_MODE = camera`): an `ok` is then not the last word.
    camera: bool,
}

impl StatusLine {
    /// An SCS or UDS: the broker took it, a device reply may follow.
    fn wants_reply(&self) -> bool {
        self.key
            .0
            .as_deref()
            .and_then(command::CommandType::parse)
            .is_some_and(|k| k.wants_reply())
    }
}

/// What a status line says of its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Error,
    Held,
    /// `ACK_MODE = camera`: its camera had it.
    Delivered,
    /// `ACK_MODE = camera`: it goes to its camera again.
    Resent,
}

/// A status line: an object with `status` ("ok", "error", "held",
/// "delivered" or "resent"), `type` and `unit`, and nothing but `id`,
/// `error`, `camera` and `reason` besides.
/// A device reply is `{"reply":…,"unit":…}` (`reply.rs`).
fn status_line(line: &[u8]) -> Option<StatusLine> {
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    let known = ["status", "type", "unit", "id", "error", "camera", "reason"];
    if !v.keys().all(|k| known.contains(&k.as_str())) || !v.contains_key("unit") {
        return None;
    }
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let key = (
        text("type"),
        text("unit"),
        v.get("id").map(Value::to_string),
    );
    v.get("type")?;
    let status = match v.get("status")?.as_str()? {
        "ok" => Status::Ok,
        "error" => Status::Error,
        "held" => Status::Held,
        "delivered" => Status::Delivered,
        "resent" => Status::Resent,
        _ => return None,
    };
    let expired = text("error").is_some_and(|e| e.starts_with("expired after "));
    Some(StatusLine {
        status,
        key,
        expired,
        camera: v.contains_key("camera"),
    })
}

/// Prints each line as it comes, until everything expected came, the relay
/// closed the connection, or `wait` ran out.
fn print_replies(stream: &Stream, want: usize, wait: Duration) -> Result<Seen, Error> {
    let deadline = Instant::now() + wait;
    let mut reader = BufReader::new(stream);
    let stdout = std::io::stdout();
    let mut line = Vec::new();
    let mut seen = Seen::default();
    while !seen.complete(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        reader.get_ref().set_read_timeout(Some(left))?;
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                seen.closed = true;
                break;
            }
            Ok(_) if line.ends_with(b"\n") => {
                seen.note(line.trim_ascii_end());
                print_line(&stdout, &line)?;
                line.clear();
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("relay connection ended: {e}");
                seen.closed = closed(&e);
                break;
            }
        }
    }
    if !line.is_empty() {
        print_line(&stdout, &line)?;
    }
    Ok(seen)
}

/// One line from the relay as printed: secret values masked.
fn printed(line: &[u8]) -> String {
    let mut text = redact::shown(line.trim_ascii_end()).into_owned();
    text.push('\n');
    text
}

fn print_line(stdout: &std::io::Stdout, line: &[u8]) -> Result<(), Error> {
    let mut out = stdout.lock();
    out.write_all(printed(line).as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_lines_follow_the_relays_framing() {
        let input = b"{\"type\":\"IMG\",\"unit\":\"u\"}\n{\"type\":\"SCS\",\"unit\":\"u\"} not json\n{\"type\":\"UDS\",\"unit\":\"u\",\"settings\":{}}";
        assert_eq!(expected(input, 65536), 4);
        assert_eq!(expected(b"   \n", 65536), 0);
        assert_eq!(
            expected(
                b"{\"ack_mode\":\"none\"} {\"type\":\"IMG\",\"unit\":\"u\"}",
                65536
            ),
            1,
            "a request for status lines is not a command"
        );
    }

    #[test]
    fn printed_lines_never_show_a_secret() {
        let ok = br#"{"status":"ok","type":"SCS","unit":"u","id":7}"#;
        assert_eq!(
            printed(&[ok.as_slice(), b"\n"].concat()),
            format!("{}\n", String::from_utf8_lossy(ok)),
            "a line without secrets is printed as it came"
        );
        let reply =
            br#"{"wifi":{"ssid":"site","wifi_password":"R3ply","psk":"Psk1"},"api_key":"K3y"}"#;
        let shown = printed(reply);
        for secret in ["R3ply", "Psk1", "K3y"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains(r#""ssid":"site""#), "{shown}");
        let id = br#"{"status":"error","type":"IMG","unit":"u","id":{"token":"T0k"},"error":"x"}"#;
        assert!(!printed(id).contains("T0k"));
        assert_eq!(
            printed(b"password=hunter2\r\n"),
            "<16 bytes, not JSON: not shown>\n"
        );
    }

    #[test]
    fn status_lines_and_replies_are_told_apart() {
        let mut seen = Seen::default();
        seen.note(br#"{"status":"ok","type":"IMG","unit":"u"}"#);
        seen.note(br#"{"status":"ok","type":"SCS","unit":"u","id":7}"#);
        seen.note(br#"{"status":"error","type":null,"unit":null,"error":"invalid JSON"}"#);
        seen.note(br#"{"reply":{"type":"SCS","unit":"u","status":"ok","fps":5},"unit":"u"}"#);
        seen.note(
            br#"{"reply":{"status":"error","type":"IMG","unit":"u","error":"x"},"unit":"u"}"#,
        );
        seen.note(b"not json at all");
        assert_eq!((seen.status_lines, seen.refused, seen.replies), (3, 1, 2));
        assert_eq!(seen.replies_due, 1);
        assert!(seen.complete(3));
        assert!(!seen.complete(4));
    }

    #[test]
    fn a_held_command_is_settled_only_by_its_outcome() {
        let wait = Duration::from_secs(3);
        let mut seen = Seen::default();
        seen.note(br#"{"status":"ok","type":"IMG","unit":"u","id":1}"#);
        seen.note(br#"{"status":"held","type":"FMW","unit":"u","id":8,"camera":"a0b1"}"#);
        assert!(!seen.complete(2), "held is not published");
        let why = seen.shortfall(2, wait).expect("not all published");
        assert!(
            why.starts_with("1 of 2 commands still held in the relay for cameras that are offline"),
            "{why}"
        );
        assert!(!why.contains("not confirmed"), "{why}");
        seen.note(br#"{"status":"ok","type":"FMW","unit":"u","id":8}"#);
        assert!(seen.complete(2), "released and published");
        assert_eq!(seen.shortfall(2, wait), None);
    }

    #[test]
    fn in_camera_mode_an_ok_naming_the_camera_waits_for_delivered() {
        let wait = Duration::from_secs(3);
        let mut seen = Seen::default();
        seen.note(br#"{"status":"held","type":"FMW","unit":"u","id":8,"camera":"c"}"#);
        seen.note(br#"{"status":"ok","type":"FMW","unit":"u","id":8,"camera":"c"}"#);
        seen.note(br#"{"status":"ok","type":"IMG","unit":"v","id":9}"#);
        assert!(
            !seen.complete(2),
            "published, not yet confirmed by the camera"
        );
        let why = seen.shortfall(2, wait).expect("one not confirmed");
        assert!(
            why.starts_with("1 of 2 commands published but not confirmed by their camera"),
            "{why}"
        );
        seen.note(br#"{"status":"resent","type":"FMW","unit":"u","id":8,"camera":"c","reason":"reconnect"}"#);
        assert!(!seen.complete(2), "resent settles nothing");
        seen.note(br#"{"status":"delivered","type":"FMW","unit":"u","id":8,"camera":"c"}"#);
        assert!(seen.complete(2));
        assert_eq!(seen.shortfall(2, wait), None);
    }

    #[test]
    fn an_expired_held_command_is_named_and_fails() {
        let mut seen = Seen::default();
        seen.note(br#"{"status":"held","type":"FMW","unit":"u","id":"a","camera":"c"}"#);
        seen.note(br#"{"status":"error","type":"FMW","unit":"u","id":"a","error":"expired after 61 s waiting for camera \"c\" to come online (COMMAND_TTLS FMW 60 s)"}"#);
        seen.note(br#"{"status":"error","type":"AIM","unit":"u","error":"missing field \"md5\""}"#);
        assert!(seen.complete(2));
        assert_eq!(
            seen.shortfall(2, Duration::from_secs(3)).as_deref(),
            Some("1 of 2 commands were refused; 1 of 2 commands expired, never published")
        );
        let unconfirmed = Seen::default().shortfall(1, Duration::from_secs(1));
        assert!(unconfirmed
            .is_some_and(|w| w.starts_with("1 of 1 commands not confirmed within 1.0 s")));
    }
}
