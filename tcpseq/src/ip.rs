//! Locating the TCP segment inside an IPv4 or IPv6 packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::tcp::TcpView;
use crate::Error;

const PROTO_TCP: u8 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Where things are in an IP packet carrying TCP. Offsets index the buffer it was parsed from;
/// every range was checked against that buffer's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpTcp {
    pub family: Family,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Offset of the TCP header (= total length of IP headers, extension headers included).
    pub tcp_offset: usize,
    /// TCP header plus payload, as the IP header's length fields say (never beyond the buffer).
    pub tcp_len: usize,
    /// TCP header length from the data offset field.
    pub tcp_header_len: usize,
}

impl IpTcp {
    /// The TCP segment's bytes.
    pub fn tcp<'a>(&self, packet: &'a [u8]) -> TcpView<&'a [u8]> {
        TcpView::new_unchecked(&packet[self.tcp_offset..self.tcp_offset + self.tcp_len])
    }

    /// The packet's end according to its IP header.
    pub fn end(&self) -> usize {
        self.tcp_offset + self.tcp_len
    }

    pub fn payload_len(&self) -> usize {
        self.tcp_len - self.tcp_header_len
    }
}

fn need(what: &'static str, need: usize, have: usize) -> Result<(), Error> {
    if have < need {
        Err(Error::Truncated { what, need, have })
    } else {
        Ok(())
    }
}

/// Parses an IPv4 or IPv6 packet that carries a TCP segment.
pub fn parse(p: &[u8]) -> Result<IpTcp, Error> {
    need("IP version", 1, p.len())?;
    let ip = match p[0] >> 4 {
        4 => parse_v4(p)?,
        6 => parse_v6(p)?,
        v => return Err(Error::Version(v)),
    };
    need("TCP header", 20, ip.tcp_len)?;
    let off = p[ip.tcp_offset + 12] >> 4;
    let tcp_header_len = usize::from(off) * 4;
    if tcp_header_len < 20 || tcp_header_len > ip.tcp_len {
        return Err(Error::TcpHeaderLen(tcp_header_len));
    }
    Ok(IpTcp {
        tcp_header_len,
        ..ip
    })
}

fn parse_v4(p: &[u8]) -> Result<IpTcp, Error> {
    need("IPv4 header", 20, p.len())?;
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Error::Ipv4HeaderLen(ihl));
    }
    need("IPv4 options", ihl, p.len())?;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    // GSO super-packets may carry a total length of 0 beyond 64 KiB; take the buffer then.
    let total = if total == 0 { p.len() } else { total };
    need("IPv4 total length", total, p.len())?;
    if total < ihl {
        return Err(Error::Ipv4HeaderLen(ihl));
    }
    let frag = u16::from_be_bytes([p[6], p[7]]);
    let offset = frag & 0x1fff;
    if offset != 0 || frag & 0x2000 != 0 {
        return Err(Error::Fragment(offset * 8));
    }
    if p[9] != PROTO_TCP {
        return Err(Error::NotTcp(p[9]));
    }
    let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]));
    Ok(IpTcp {
        family: Family::V4,
        src: addr(12),
        dst: addr(16),
        tcp_offset: ihl,
        tcp_len: total - ihl,
        tcp_header_len: 0,
    })
}

fn parse_v6(p: &[u8]) -> Result<IpTcp, Error> {
    need("IPv6 header", 40, p.len())?;
    let payload = usize::from(u16::from_be_bytes([p[4], p[5]]));
    // Payload length 0 means a jumbogram (or GSO beyond 64 KiB): the buffer is the packet.
    let end = if payload == 0 { p.len() } else { 40 + payload };
    need("IPv6 payload length", end, p.len())?;
    let mut next = p[6];
    let mut at = 40;
    loop {
        match next {
            PROTO_TCP => break,
            // Hop-by-hop, routing, destination options: length in 8-octet units after the
            // first 8.
            0 | 43 | 60 => {
                need("IPv6 extension header", at + 8, end)?;
                let len = (usize::from(p[at + 1]) + 1) * 8;
                need("IPv6 extension header", at + len, end)?;
                next = p[at];
                at += len;
            }
            44 => {
                need("IPv6 fragment header", at + 8, end)?;
                let frag = u16::from_be_bytes([p[at + 2], p[at + 3]]);
                return Err(Error::Fragment((frag >> 3) * 8));
            }
            59 => return Err(Error::NotTcp(59)),
            // ESP, AH, mobility, HIP, shim6 and anything unknown: stop here.
            50 | 51 | 135 | 139 | 140 | 253 | 254 => return Err(Error::UnsupportedExtension(next)),
            other => return Err(Error::NotTcp(other)),
        }
    }
    let addr = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&p[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    Ok(IpTcp {
        family: Family::V6,
        src: addr(8),
        dst: addr(24),
        tcp_offset: at,
        tcp_len: end - at,
        tcp_header_len: 0,
    })
}
