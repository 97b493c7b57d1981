//! Loopback ports: reserved for a broker, read back from a process that
//! bound port 0, and what the kernel says about a connection.

use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use super::{wait_until, WAIT};

/// A loopback port nobody listens on, never handed out twice in this test
/// process. Racy (someone may bind it before its user does): only for the
/// benchmark's relays of older builds, which cannot bind port 0. Brokers use
/// [`ReservedPort`]; the relay binds port 0 (`SOCKET_PORT = 0`) and the
/// tests read the port it got ([`listening_port`]).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A loopback port the OS picked, held for as long as this value lives by a
/// socket bound with SO_REUSEADDR that never listens. The kernel gives a
/// port in use to no other bind(port 0) nor outgoing connection, so no other
/// test or process can take it; mosquitto, which binds its listeners with
/// SO_REUSEADDR too, can still listen on it, and again after a restart.
/// (mosquitto cannot bind port 0 and report the port: `listener 0` means a
/// Unix socket to it.)
pub struct ReservedPort {
    pub port: u16,
    _holder: socket2::Socket,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        use socket2::{Domain, Socket, Type};
        let holder = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        holder.set_reuse_address(true).expect("SO_REUSEADDR");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
        holder.bind(&any.into()).expect("bind a loopback port");
        let port = holder
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("the port the OS picked");
        ReservedPort {
            port,
            _holder: holder,
        }
    }
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The TCP port process `pid` listens on, from its socket descriptors and
/// /proc/PID/net/tcp{,6}; None until it listens.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, rem_address, st (0A = LISTEN), ..., inode (10th).
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit_once(':')?.1;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}

/// Waits up to [`WAIT`] for process `pid` to listen, and returns its port.
pub fn wait_listening_port(pid: u32) -> u16 {
    let mut port = None;
    wait_until(WAIT, || {
        port = listening_port(pid);
        port.is_some()
    });
    port.unwrap_or_else(|| panic!("process {pid} never listened"))
}

/// Whether every byte written on `stream` reached the peer's kernel: its
/// send queue (unacknowledged bytes, from /proc/net/tcp) is empty. The peer
/// process need not have read them, nor even be running (SIGSTOP).
pub fn peer_kernel_has_all(stream: &TcpStream) -> bool {
    let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
        return false;
    };
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address, rem_address, st, tx_queue:rx_queue, ...
        fields.len() > 4
            && port_of(fields[1]) == Some(local.port())
            && port_of(fields[2]) == Some(remote.port())
            && fields[4].split(':').next() == Some("00000000")
    })
}
