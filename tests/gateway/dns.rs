//! A DNS server for a gateway root, written here so that the test needs
//! nothing beyond the BusyBox root and the relay.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A DNS server for the gateway root, on a loopback address of its own and
/// port 53 (resolv.conf cannot name a port): it answers A queries for one
/// name with 127.0.0.1, AAAA queries for it with no address, and anything
/// else with NXDOMAIN, and remembers every name it was asked for. Just
/// enough of RFC 1035 for glibc's stub resolver, written here so that the
/// test needs nothing beyond the BusyBox root and the relay.
pub struct DnsServer {
    pub address: Ipv4Addr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(name: &str) -> DnsServer {
        // A loopback address of this process's own, so that tests run by
        // other users of the machine at the same time do not collide on port 53.
        let pid = std::process::id();
        let (socket, address) = (0..64u32)
            .find_map(|n| {
                let address = Ipv4Addr::new(
                    127,
                    53,
                    ((pid >> 8) as u8).wrapping_add(n as u8),
                    pid as u8 | 1,
                );
                UdpSocket::bind((address, 53)).ok().map(|s| (s, address))
            })
            .expect("bind a loopback address on port 53 (needs root)");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (asked, stop, name) = (asked.clone(), stop.clone(), name.to_string());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some((qname, reply)) = dns_answer(&buf[..n], &name) {
                        asked.lock().unwrap().push(qname);
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
        };
        DnsServer {
            address,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to one query (and the name asked for), or None for what is not one.
fn dns_answer(query: &[u8], name: &str) -> Option<(String, Vec<u8>)> {
    let (qdcount, flags) = (
        u16::from_be_bytes([*query.get(4)?, *query.get(5)?]),
        query.get(2)?,
    );
    if qdcount != 1 || flags & 0x80 != 0 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let qname = labels.join(".");
    let known = qname.eq_ignore_ascii_case(name);
    let with_address = known && qtype == 1;
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // id
    let rd = query[2] & 0x01;
    reply.push(0x80 | 0x04 | rd); // a response, authoritative
    reply.push(0x80 | if known { 0 } else { 3 }); // recursion available; NOERROR or NXDOMAIN
    reply.extend_from_slice(&[0, 1, 0, u8::from(with_address), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if with_address {
        // The name by pointer to the question, A, IN, TTL 60 s, 4 bytes.
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some((format!("{qname} type {qtype}"), reply))
}
