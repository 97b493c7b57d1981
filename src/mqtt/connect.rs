//! Dialing one broker: the TCP connection (and the TLS handshake when
//! configured), CONNECT and CONNACK, all within one deadline that a stop
//! cuts short. Called by the publish link thread (`publish_link.rs`) for
//! its connections and by the probe thread (`probe.rs`) for its probes.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::mqtt::brokers::Broker;
use crate::mqtt::codec::{self, Incoming};
use crate::mqtt::wire::Wire;
use crate::ops::log_limit;
use crate::ops::shutdown::Stop;

/// The longest single wait inside an attempt: how soon a stop is noticed.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// Everything needed to open a connection to one broker of the list.
#[derive(Clone)]
pub struct Dialer {
    pub client_id: String,
    pub keepalive: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<Arc<ClientConfig>>,
    /// Last will for this connection: (topic, message).
    pub will: Option<(String, Vec<u8>)>,
    /// Ends an attempt under way (the relay is stopping).
    pub stop: Stop,
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectFailure {
    /// No TCP connection (nobody listens, no route, name unknown, timeout).
    Unreachable(String),
    /// The broker refused the connection (the CONNACK return code).
    Refused(u8),
    /// The TLS handshake failed (certificate, protocol).
    Tls(String),
    /// The broker answered with something that is not a CONNACK, or not
    /// within the attempt's deadline.
    Protocol(String),
    /// The relay is stopping: the attempt was given up.
    Stopped,
}

impl ConnectFailure {
    /// Refused logins and failed handshakes need a human; an absent broker,
    /// or one that says it is unavailable for now (code 3), does not.
    pub(crate) fn needs_human(&self) -> bool {
        match self {
            ConnectFailure::Refused(code) => *code != 3,
            ConnectFailure::Tls(_) => true,
            ConnectFailure::Unreachable(_)
            | ConnectFailure::Protocol(_)
            | ConnectFailure::Stopped => false,
        }
    }

    /// The reason as logged, normalised ([`log_limit::failure_reason`]).
    pub(crate) fn describe(&self) -> String {
        let text = match self {
            ConnectFailure::Unreachable(why) => why.clone(),
            ConnectFailure::Refused(code) => {
                format!("connection refused: {}", codec::refusal(*code))
            }
            ConnectFailure::Tls(why) => format!("TLS: {why}"),
            ConnectFailure::Protocol(why) => why.clone(),
            ConnectFailure::Stopped => "the relay is stopping".into(),
        };
        log_limit::failure_reason(&text)
    }
}

/// One connection attempt's deadline: every wait in it (TCP connect, TLS
/// handshake, CONNACK) takes from the same budget, so a broker that
/// trickles bytes cannot stretch it; waits are cut into [`WAIT_SLICE`]s so
/// a stop is noticed within one.
struct Attempt<'a> {
    until: Instant,
    budget: Duration,
    stop: &'a Stop,
}

impl Attempt<'_> {
    /// How long the next wait may be, or why the attempt is over (`what`
    /// was still awaited).
    fn slice(&self, what: &str) -> Result<Duration, ConnectFailure> {
        if self.stop.is_set() {
            return Err(ConnectFailure::Stopped);
        }
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectFailure::Protocol(format!(
                "no {what} from the broker within {} s",
                self.budget.as_secs()
            )));
        }
        Ok(left.min(WAIT_SLICE))
    }

    /// What is left of the budget, for a wait that cannot be cut (TCP connect).
    fn left(&self) -> Result<Duration, ConnectFailure> {
        self.slice("TCP connection")?;
        Ok(self.until.saturating_duration_since(Instant::now()))
    }
}

/// One step of the TLS handshake: what rustls has to send, then one read
/// (rustls's `complete_io` reads until a record is whole, so a peer
/// trickling bytes would keep it from ever returning).
fn handshake_step(session: &mut ClientConnection, socket: &TcpStream) -> io::Result<()> {
    let mut io = socket;
    while session.wants_write() {
        session.write_tls(&mut io)?;
    }
    if !session.wants_read() {
        return Ok(());
    }
    if session.read_tls(&mut io)? == 0 {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "the broker closed the connection during the TLS handshake",
        ));
    }
    session
        .process_new_packets()
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
    Ok(())
}

/// A read or handshake step that ran out of its slice: the attempt goes on.
fn waited(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

impl Dialer {
    /// TCP (and TLS) connection, CONNECT, CONNACK; all within `timeout`.
    pub fn connect(
        &self,
        broker: &Broker,
        client_id: &str,
        will: bool,
        timeout: Duration,
    ) -> Result<Wire, ConnectFailure> {
        let attempt = Attempt {
            until: Instant::now() + timeout,
            budget: timeout,
            stop: &self.stop,
        };
        let wire = self.open(broker, &attempt)?;
        wire.write_all(&self.hello(client_id, will)?)
            .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
        await_connack(&wire, &attempt)?;
        Ok(wire)
    }

    /// The byte stream to `broker`: TCP, and the TLS handshake when configured.
    fn open(&self, broker: &Broker, attempt: &Attempt) -> Result<Wire, ConnectFailure> {
        let unreachable = |e: io::Error| ConnectFailure::Unreachable(e.to_string());
        let socket = tcp_connect(broker, attempt)?;
        let Some(config) = &self.tls else {
            return Wire::plain(socket).map_err(unreachable);
        };
        let name = ServerName::try_from(broker.host.clone()).map_err(|e| {
            ConnectFailure::Tls(format!("{:?} is not a server name: {e}", broker.host))
        })?;
        let mut session = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| ConnectFailure::Tls(e.to_string()))?;
        while session.is_handshaking() {
            let wait = attempt.slice("TLS handshake")?;
            socket.set_read_timeout(Some(wait)).map_err(unreachable)?;
            socket.set_write_timeout(Some(wait)).map_err(unreachable)?;
            match handshake_step(&mut session, &socket) {
                Ok(()) => {}
                Err(e) if waited(&e) => {}
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    return Err(ConnectFailure::Tls(e.to_string()))
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
        // The last flight (the client's Finished) goes out now.
        let mut io = &socket;
        while session.wants_write() {
            session.write_tls(&mut io).map_err(unreachable)?;
        }
        Wire::tls(socket, session).map_err(unreachable)
    }
    /// The CONNECT packet, with the last will when `will` (probes go without).
    fn hello(&self, client_id: &str, will: bool) -> Result<Vec<u8>, ConnectFailure> {
        let mut hello = Vec::with_capacity(128);
        codec::connect(
            &mut hello,
            &codec::Connect {
                client_id,
                keepalive_secs: u16::try_from(self.keepalive.as_secs()).unwrap_or(u16::MAX),
                username: self.username.as_deref(),
                password: self.password.as_deref(),
                will: self
                    .will
                    .as_ref()
                    .filter(|_| will)
                    .map(|(t, m)| (t.as_str(), m.as_slice())),
            },
        )
        .map_err(|e| ConnectFailure::Protocol(e.to_string()))?;
        Ok(hello)
    }
}

/// Reads until the broker's CONNACK, within the attempt's deadline: Ok
/// when it accepts the connection.
fn await_connack(wire: &Wire, attempt: &Attempt) -> Result<(), ConnectFailure> {
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    loop {
        let wait = attempt.slice("CONNACK")?;
        wire.set_read_timeout(Some(wait))
            .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
        let n = match wire.read(&mut buf) {
            Ok(n) => n,
            Err(e) if waited(&e) => continue,
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                return Err(ConnectFailure::Tls(e.to_string()))
            }
            Err(e) => return Err(ConnectFailure::Unreachable(e.to_string())),
        };
        if n == 0 {
            return Err(ConnectFailure::Unreachable(
                "the broker closed the connection before CONNACK".into(),
            ));
        }
        got.extend_from_slice(&buf[..n]);
        return match codec::decode(&got) {
            Ok(None) => continue,
            Ok(Some((Incoming::ConnAck { code: 0, .. }, _))) => Ok(()),
            Ok(Some((Incoming::ConnAck { code, .. }, _))) => Err(ConnectFailure::Refused(code)),
            Ok(Some((other, _))) => Err(ConnectFailure::Protocol(format!(
                "expected CONNACK, got {other:?}"
            ))),
            Err(e) => Err(ConnectFailure::Protocol(e.to_string())),
        };
    }
}

fn tcp_connect(broker: &Broker, attempt: &Attempt) -> Result<TcpStream, ConnectFailure> {
    let unreachable = |e: io::Error| ConnectFailure::Unreachable(e.to_string());
    let addrs: Vec<SocketAddr> = (broker.host.as_str(), broker.port)
        .to_socket_addrs()
        .map_err(unreachable)?
        .collect();
    let mut last = io::Error::new(ErrorKind::NotFound, "the host name has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, attempt.left()?) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_tls_failure_reads_the_same_at_every_attempt() {
        let at = |t: u64| {
            let e = io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "invalid peer certificate: certificate expired: verification time {t} (UNIX), \
                     but certificate is not valid after 1795900000 ({} seconds ago)",
                    t - 1795900000
                ),
            );
            ConnectFailure::Tls(e.to_string())
        };
        assert_eq!(at(1795950000).describe(), at(1795950030).describe());
        assert_eq!(
            at(1795950000).describe(),
            "TLS: invalid peer certificate: certificate expired"
        );
        assert!(at(1795950000).needs_human());
        let plain = ConnectFailure::Tls("invalid peer certificate: UnknownIssuer".into());
        assert_eq!(
            plain.describe(),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
        let absent = ConnectFailure::Unreachable("Connection refused (os error 111)".into());
        assert_eq!(absent.describe(), "Connection refused (os error 111)");
        assert!(!absent.needs_human());
    }

    fn dialer() -> Dialer {
        Dialer {
            client_id: "gw-pub".into(),
            keepalive: Duration::from_secs(60),
            username: None,
            password: None,
            tls: None,
            will: Some(("relay/state".into(), b"{\"state\":\"offline\"}".to_vec())),
            stop: Stop::new(),
        }
    }

    /// A one-connection broker on a port the OS picked: reads the CONNECT,
    /// answers `answer` (nothing: closes), and hands back what it read.
    fn fake_broker(answer: &'static [u8]) -> (Broker, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let broker = Broker {
            host: "127.0.0.1".into(),
            port,
        };
        let thread = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("the dialer connects");
            let mut got = vec![0u8; 1024];
            let n = std::io::Read::read(&mut socket, &mut got).expect("the CONNECT");
            got.truncate(n);
            std::io::Write::write_all(&mut socket, answer).expect("the answer");
            got
        });
        (broker, thread)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_connack_of_zero_is_a_connection_with_the_will() {
        let (broker, seen) = fake_broker(&[0x20, 0x02, 0x00, 0x00]);
        let wire = dialer().connect(&broker, "gw-pub", true, Duration::from_secs(5));
        assert!(wire.is_ok(), "{:?}", wire.err());
        let connect = seen.join().unwrap();
        assert_eq!(connect[0], 0x10, "CONNECT first");
        assert!(contains(&connect, b"gw-pub"));
        assert!(contains(&connect, b"relay/state"), "the will goes along");
    }

    #[test]
    fn a_probe_goes_without_the_will() {
        let (broker, seen) = fake_broker(&[0x20, 0x02, 0x00, 0x00]);
        let wire = dialer().connect(&broker, "gw-pub-probe", false, Duration::from_secs(5));
        assert!(wire.is_ok(), "{:?}", wire.err());
        let connect = seen.join().unwrap();
        assert!(contains(&connect, b"gw-pub-probe"));
        assert!(!contains(&connect, b"relay/state"));
    }

    #[test]
    fn a_refusal_names_its_code_and_a_bad_login_needs_a_human() {
        let (broker, seen) = fake_broker(&[0x20, 0x02, 0x00, 0x05]);
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("refused");
        seen.join().unwrap();
        assert!(matches!(failure, ConnectFailure::Refused(5)), "{failure:?}");
        assert!(failure.needs_human());
        assert!(
            !ConnectFailure::Refused(3).needs_human(),
            "server unavailable passes"
        );
    }

    #[test]
    fn a_broker_that_closes_or_answers_otherwise_is_no_connection() {
        let (broker, seen) = fake_broker(&[]);
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("closed");
        seen.join().unwrap();
        assert_eq!(
            failure.describe(),
            "the broker closed the connection before CONNACK"
        );
        let (broker, seen) = fake_broker(&[0xD0, 0x00]);
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("not a CONNACK");
        seen.join().unwrap();
        assert!(
            matches!(failure, ConnectFailure::Protocol(_)),
            "{failure:?}"
        );
        assert!(!failure.needs_human());
    }

    /// A broker that answers a CONNECT with the start of a CONNACK, then
    /// one more byte every 100 ms, for as long as the dialer listens.
    fn trickling_broker() -> Broker {
        trickling(&[0x20, 0x7F])
    }

    /// A broker that answers the first bytes it reads with `start`, then
    /// one more byte every 100 ms, for as long as the dialer listens.
    fn trickling(start: &'static [u8]) -> Broker {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        std::thread::spawn(move || {
            let Ok((mut socket, _)) = listener.accept() else {
                return;
            };
            let _ = std::io::Read::read(&mut socket, &mut [0u8; 1024]);
            let _ = std::io::Write::write_all(&mut socket, start);
            while std::io::Write::write_all(&mut socket, &[0]).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Broker {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn a_trickling_broker_gets_the_whole_attempt_and_no_more() {
        let started = Instant::now();
        let failure = dialer()
            .connect(&trickling_broker(), "gw-pub", true, Duration::from_secs(1))
            .err()
            .expect("no whole CONNACK");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1600), "took {took:?}");
        assert_eq!(
            failure.describe(),
            log_limit::failure_reason("no CONNACK from the broker within 1 s")
        );
    }

    #[test]
    fn a_tls_handshake_trickled_byte_by_byte_gets_the_whole_attempt_and_no_more() {
        let roots = rustls::RootCertStore::empty();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let dialer = Dialer {
            tls: Some(Arc::new(tls)),
            ..dialer()
        };
        // The header of a 16 KiB handshake record, then its body trickled.
        let mut broker = trickling(&[0x16, 0x03, 0x03, 0x40, 0x00]);
        broker.host = "localhost".into();
        let started = Instant::now();
        let failure = dialer
            .connect(&broker, "gw-pub", true, Duration::from_secs(1))
            .err()
            .expect("no handshake");
        assert!(
            started.elapsed() < Duration::from_millis(1600),
            "{failure:?}"
        );
        assert_eq!(
            failure.describe(),
            log_limit::failure_reason("no TLS handshake from the broker within 1 s")
        );
    }

    #[test]
    fn a_stop_ends_an_attempt_under_way() {
        let dialer = dialer();
        let stop = dialer.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stop.trigger();
        });
        let started = Instant::now();
        let failure = dialer
            .connect(&trickling_broker(), "gw-pub", true, Duration::from_secs(30))
            .err()
            .expect("stopped");
        assert!(matches!(failure, ConnectFailure::Stopped), "{failure:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn nobody_listening_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let broker = Broker {
            host: "127.0.0.1".into(),
            port,
        };
        let failure = dialer()
            .connect(&broker, "gw-pub", true, Duration::from_secs(5))
            .err()
            .expect("nobody listens");
        assert!(
            matches!(failure, ConnectFailure::Unreachable(_)),
            "{failure:?}"
        );
    }
}
