//! The kernel's socket tables, `/proc/<pid>/net/{tcp,tcp6,udp,udp6}`
//! (proc(5); format from `net/ipv4/tcp_ipv4.c: get_tcp4_sock`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// Transport protocol of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// The `st` column: TCP states from `include/net/tcp_states.h`. UDP uses
/// two of them: `Established` when connected, `Close` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    Unknown(u8),
}

impl SocketState {
    fn from_code(code: u8) -> Self {
        match code {
            0x01 => Self::Established,
            0x02 => Self::SynSent,
            0x03 => Self::SynRecv,
            0x04 => Self::FinWait1,
            0x05 => Self::FinWait2,
            0x06 => Self::TimeWait,
            0x07 => Self::Close,
            0x08 => Self::CloseWait,
            0x09 => Self::LastAck,
            0x0A => Self::Listen,
            0x0B => Self::Closing,
            0x0C => Self::NewSynRecv,
            other => Self::Unknown(other),
        }
    }
}

/// One open TCP or UDP socket of a process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SocketInfo {
    /// The socket's inode, as in `/proc/<pid>/fd/N -> socket:[inode]`.
    pub inode: u64,
    pub protocol: Protocol,
    pub local: SocketAddr,
    /// Unspecified (`0.0.0.0:0`) for a listening or unconnected socket.
    pub remote: SocketAddr,
    pub state: SocketState,
    /// Bytes queued to send (TCP: not yet acknowledged by the peer).
    pub tx_queue: u64,
    /// Bytes received and not yet read by the process.
    pub rx_queue: u64,
}

/// Parses one table; malformed lines are skipped.
pub(crate) fn parse_table(text: &str, protocol: Protocol) -> Vec<SocketInfo> {
    text.lines()
        .skip(1)
        .filter_map(|line| parse_line(line, protocol))
        .collect()
}

fn parse_line(line: &str, protocol: Protocol) -> Option<SocketInfo> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (tx, rx) = f.get(4)?.split_once(':')?;
    Some(SocketInfo {
        local: parse_addr(f.get(1)?)?,
        remote: parse_addr(f.get(2)?)?,
        state: SocketState::from_code(u8::from_str_radix(f.get(3)?, 16).ok()?),
        tx_queue: u64::from_str_radix(tx, 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
        protocol,
    })
}

/// `ADDR:PORT` in hex. The kernel prints the address as the 32-bit words of
/// the network-order address, each with `%08X` (so in host byte order), and
/// the port already converted to host order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41873 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2C4 0100007F:1F90 01 0000000A:00000003 00:00000000 00000000     0        0 41990 1 0000000000000000 20 4 30 10 -1
garbage
";

    #[test]
    fn tcp4_lines() {
        let got = parse_table(TCP, Protocol::Tcp);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(got[0].state, SocketState::Listen);
        assert_eq!(got[1].remote, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(got[1].local.port(), 0xA2C4);
        assert_eq!(got[1].state, SocketState::Established);
        assert_eq!((got[1].tx_queue, got[1].rx_queue), (10, 3));
        assert_eq!(got[1].inode, 41990);
    }

    #[test]
    fn tcp6_addresses() {
        // ::1 port 443, and ::ffff:10.1.2.3 port 53
        let text = "header\n   0: 00000000000000000000000001000000:01BB 0000000000000000FFFF000003020A0A:0035 01 00000000:00000000 00:00000000 00000000     0        0 7 1\n";
        let got = parse_table(text, Protocol::Tcp);
        assert_eq!(got[0].local, "[::1]:443".parse().unwrap());
        assert_eq!(got[0].remote, "[::ffff:10.10.2.3]:53".parse().unwrap());
    }
}
