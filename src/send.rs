//! `ms500-relay send`: a tiny backend for operators. Connects to the running
//! relay's socket, writes each command (arguments, or stdin copied as is),
//! then prints every line that comes back for a few seconds. Runs on the
//! main thread; nothing else is started.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Error;

pub fn run(config: &Config, commands: &[String], wait: Duration) -> Result<(), Error> {
    let addr = target(config)?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| Error::Runtime(format!("cannot connect to the relay at {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    if commands.is_empty() {
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input)?;
        stream.write_all(&input)?;
    } else {
        let mut out = Vec::new();
        for c in commands {
            out.extend_from_slice(c.trim().as_bytes());
            out.push(b'\n');
        }
        stream.write_all(&out)?;
    }
    stream.flush()?;
    print_replies(stream, wait)
}

/// The address to connect to: SOCKET_HOST, with a wildcard bind mapped to loopback.
fn target(config: &Config) -> Result<SocketAddr, Error> {
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
        .ok_or_else(|| Error::Runtime(format!("cannot resolve SOCKET_HOST {host:?}")))
}

fn print_replies(stream: TcpStream, wait: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + wait;
    let mut reader = BufReader::new(stream);
    let stdout = std::io::stdout();
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        reader.get_ref().set_read_timeout(Some(left))?;
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                flush_line(&stdout, &mut line)?;
                return Ok(());
            }
            Ok(_) => {
                if line.ends_with(b"\n") {
                    flush_line(&stdout, &mut line)?;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                flush_line(&stdout, &mut line)?;
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                flush_line(&stdout, &mut line)?;
                log::debug!("relay connection ended: {e}");
                return Ok(());
            }
        }
    }
}

fn flush_line(stdout: &std::io::Stdout, line: &mut Vec<u8>) -> Result<(), Error> {
    if !line.is_empty() {
        let mut out = stdout.lock();
        out.write_all(line)?;
        if !line.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
        out.flush()?;
        line.clear();
    }
    Ok(())
}
