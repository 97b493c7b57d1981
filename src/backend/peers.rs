//! Whose socket is it: the kernel's socket tables (`/proc/net/tcp`, `tcp6`)
//! name each local socket's owner, and `/etc/passwd` and `/etc/group` the
//! users and groups relay.conf names. Used by the listener (admission), the
//! sessions (who sends a control request), the sockets (`SOCKET_GROUP`),
//! `send` and the checks. Parsing is pure; the readers only open the files.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The time-wait state of `/proc/net/tcp`: no owner any more.
const TIME_WAIT: u8 = 0x06;

/// One socket of the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub uid: u32,
    /// 0 for a socket no process holds any more (time-wait, orphaned):
    /// its uid means nothing then.
    pub inode: u64,
}

/// The sockets of one `/proc/net/tcp` or `tcp6` text; lines that do not
/// parse are skipped.
pub fn parse_table(text: &str) -> Vec<Socket> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Socket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if fields.len() < 10 {
        return None;
    }
    Some(Socket {
        local: parse_addr(fields[1])?,
        remote: parse_addr(fields[2])?,
        state: u8::from_str_radix(fields[3], 16).ok()?,
        uid: fields[7].parse().ok()?,
        inode: fields[9].parse().ok()?,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6); the address
/// is in the kernel's byte order, one 32-bit word at a time.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// The owner of the socket at `peer` connected to our `ours`, found in
/// `sockets`. A socket no process holds (inode 0) is taken only when
/// `unheld` (a connection still in its listener's accept queue has the
/// listener's owner but no inode yet); otherwise it proves nothing: a
/// time-wait entry shows uid 0.
pub fn connection_owner(
    sockets: &[Socket],
    peer: SocketAddr,
    ours: SocketAddr,
    unheld: bool,
) -> Option<u32> {
    sockets
        .iter()
        .find(|s| {
            (unheld || s.inode != 0)
                && s.state != TIME_WAIT
                && same(s.local, peer)
                && same(s.remote, ours)
        })
        .map(|s| s.uid)
}

/// Every TCP socket of this machine's network namespace, IPv4 and IPv6.
pub fn read_sockets() -> Vec<Socket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| parse_table(&text))
        .collect()
}

/// Whether a peer at `peer` is on this machine: loopback, or one of our own
/// addresses (a local process connecting to the LAN address).
pub fn is_local(peer: SocketAddr, ours: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    ip.is_loopback() || ip == ours.ip().to_canonical()
}

/// User names and their uids, from `/etc/passwd` text.
pub fn parse_passwd(text: &str) -> HashMap<String, u32> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            (!name.is_empty()).then(|| (name.to_string(), uid))
        })
        .collect()
}

/// The uids `entries` (user names or uids) name, from `/etc/passwd`; the
/// entries that name nobody, as an error.
pub fn resolve_users(entries: &[String]) -> Result<Vec<u32>, Vec<String>> {
    let users = std::fs::read_to_string("/etc/passwd")
        .map(|text| parse_passwd(&text))
        .unwrap_or_default();
    let mut uids = Vec::new();
    let mut unknown = Vec::new();
    for entry in entries {
        match entry
            .parse::<u32>()
            .ok()
            .or_else(|| users.get(entry).copied())
        {
            Some(uid) => uids.push(uid),
            None => unknown.push(entry.clone()),
        }
    }
    if unknown.is_empty() {
        Ok(uids)
    } else {
        Err(unknown)
    }
}

/// The gid `entry` (a group name or a gid) names, from `/etc/group`
/// (laid out as `/etc/passwd`: name, password, number); None when it names none.
pub fn resolve_group(entry: &str) -> Option<u32> {
    if let Ok(gid) = entry.parse::<u32>() {
        return Some(gid);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    parse_passwd(&text).get(entry).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:17C0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:17C0 01 00000000:00000000 00:00000000 00000000  1001        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:D432 0100007F:17C0 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
   3: 00000000:17C1 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 3333 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:17C0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   1003        0 4444 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:D433 0000000000000000FFFF00000100007F:17C0 01 00000000:00000000 00:00000000 00000000  1004        0 5555 1 0000000000000000 20 4 30 10 -1
";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn kernel_tables_parse_in_host_byte_order() {
        // The tables above are little-endian, as on every gateway we ship to but big-endian MIPS.
        if cfg!(target_endian = "big") {
            return;
        }
        let v4 = parse_table(TCP);
        assert_eq!(v4.len(), 4);
        assert_eq!(v4[0].local, addr("127.0.0.1:6080"));
        assert_eq!(v4[1].remote, addr("127.0.0.1:6080"));
        assert_eq!((v4[1].uid, v4[1].inode, v4[1].state), (1001, 2222, 1));
        let v6 = parse_table(TCP6);
        assert_eq!(v6[0].local, addr("[::1]:6080"));
        assert_eq!(v6[1].local, addr("[::ffff:127.0.0.1]:54323"));
    }

    #[test]
    fn a_connection_is_owned_by_whoever_holds_its_far_end() {
        if cfg!(target_endian = "big") {
            return;
        }
        let mut all = parse_table(TCP);
        all.extend(parse_table(TCP6));
        let ours = addr("127.0.0.1:6080");
        assert_eq!(
            connection_owner(&all, addr("127.0.0.1:54321"), ours, false),
            Some(1001)
        );
        assert_eq!(
            connection_owner(&all, addr("127.0.0.1:54322"), ours, true),
            None,
            "a time-wait socket (uid 0, inode 0) proves nothing"
        );
        assert_eq!(
            connection_owner(
                &all,
                addr("[::ffff:127.0.0.1]:54323"),
                addr("[::ffff:127.0.0.1]:6080"),
                false
            ),
            Some(1004)
        );
        assert_eq!(
            connection_owner(&all, addr("127.0.0.1:1"), ours, true),
            None
        );
    }

    #[test]
    fn users_are_named_by_passwd_or_by_uid() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\n\nbad\n",
        );
        assert_eq!(users.get("alice"), Some(&1001));
        assert_eq!(users.get("root"), Some(&0));
        assert_eq!(users.len(), 2);
        let groups = parse_passwd("root:x:0:\nrelay:x:990:alice,bob\n");
        assert_eq!(
            groups.get("relay"),
            Some(&990),
            "/etc/group reads the same way"
        );
    }

    #[test]
    fn local_peers_are_loopback_or_our_own_address() {
        let ours = addr("10.0.0.2:6080");
        assert!(is_local(addr("127.0.0.5:1"), ours));
        assert!(is_local(addr("[::ffff:127.0.0.1]:1"), ours));
        assert!(is_local(addr("10.0.0.2:40000"), ours));
        assert!(!is_local(addr("10.0.0.3:40000"), ours));
    }
}
