//! A view of an IPv6 packet, and the walk over its extension headers to the upper layer.
//!
//! [`Ipv6Packet::new_checked`] verifies the version and that the payload length does not
//! exceed the buffer. Extension headers are walked by [`Ipv6Packet::upper_layer`], which checks
//! each header's length before reading past it.

use std::net::Ipv6Addr;

use crate::error::need;
use crate::Error;

mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}
pub(crate) use field::{DST_ADDR, PAYLOAD_LEN, SRC_ADDR};

/// The fixed header length.
pub const HEADER_LEN: usize = 40;

/// Extension header numbers.
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
    pub const EXPERIMENTAL: [u8; 2] = [253, 254];
}

/// An IPv6 packet view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps without checking: accessors may panic on a short buffer. For buffers built here.
    pub fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wraps untrusted bytes, checking version and payload length against the buffer.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }

    /// Checks version 6 and 40 + payload length <= buffer. A payload length of 0 (a jumbogram)
    /// leaves an empty payload, which the upper-layer walk then reports as truncated.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buf.as_ref();
        need("IPv6 header", HEADER_LEN, b.len())?;
        if self.version() != 6 {
            return Err(Error::Version(self.version()));
        }
        need(
            "IPv6 payload length",
            HEADER_LEN + usize::from(self.payload_len()),
            b.len(),
        )
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }
    pub fn traffic_class(&self) -> u8 {
        (self.b()[0] << 4) | (self.b()[1] >> 4)
    }
    pub fn flow_label(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }
    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[SRC_ADDR]);
        Ipv6Addr::from(a)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[DST_ADDR]);
        Ipv6Addr::from(a)
    }
    /// The payload (extension headers included) up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walks hop-by-hop, routing and destination-options headers (and an atomic fragment
    /// header, RFC 6946) to the upper-layer protocol. Returns `(protocol, offset)`, the offset
    /// counted from the start of the packet. A real fragment, ESP, AH and the other extension
    /// headers are errors: their upper layer cannot be rewritten here.
    pub fn upper_layer(&self) -> Result<(u8, usize), Error> {
        let end = HEADER_LEN + usize::from(self.payload_len());
        let b = &self.b()[..end];
        let mut next = self.next_header();
        let mut at = HEADER_LEN;
        // Every extension header is at least 8 bytes, so the walk ends within the buffer.
        loop {
            match next {
                ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS => {
                    need("IPv6 extension header", at + 8, end)?;
                    let len = (usize::from(b[at + 1]) + 1) * 8;
                    need("IPv6 extension header", at + len, end)?;
                    next = b[at];
                    at += len;
                }
                ext::FRAGMENT => {
                    need("IPv6 fragment header", at + 8, end)?;
                    let v = u16::from_be_bytes([b[at + 2], b[at + 3]]);
                    let (offset, more) = (v & 0xfff8, v & 1 != 0);
                    if offset != 0 || more {
                        return Err(Error::Fragment { offset, more });
                    }
                    next = b[at];
                    at += 8;
                }
                ext::ESP | ext::AH | ext::MOBILITY | ext::HIP | ext::SHIM6 => {
                    return Err(Error::UnsupportedExtension(next))
                }
                n if ext::EXPERIMENTAL.contains(&n) => {
                    return Err(Error::UnsupportedExtension(next))
                }
                proto => return Ok((proto, at)),
            }
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Sets version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = 6u32 << 28 | u32::from(traffic_class) << 20 | (flow_label & 0xf_ffff);
        self.m()[field::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_payload_len(&mut self, v: u16) {
        self.m()[PAYLOAD_LEN].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_next_header(&mut self, v: u8) {
        self.m()[field::NEXT_HEADER] = v;
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.m()[field::HOP_LIMIT] = v;
    }
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.m()[SRC_ADDR].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.m()[DST_ADDR].copy_from_slice(&a.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_version_tc_flow(0xb8, 0xabcde);
        p.set_payload_len(payload.len() as u16);
        p.set_next_header(next);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8::2".parse().unwrap());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn deconstruct() {
        let b = header(6, &[0; 20]);
        assert_eq!(b[..4], [0x6b, 0x8a, 0xbc, 0xde]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0xabcde);
        assert_eq!(p.payload_len(), 20);
        assert_eq!(p.next_header(), 6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 20);
        assert_eq!(p.upper_layer(), Ok((6, 40)));
    }

    #[test]
    fn extension_headers_are_walked() {
        // Hop-by-hop (8) -> routing (16) -> atomic fragment (8) -> dest-opts (8) -> TCP.
        let mut ext = vec![ext::ROUTING, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[ext::FRAGMENT, 1, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0; 8]);
        ext.extend_from_slice(&[ext::DEST_OPTS, 0, 0, 0, 0, 0, 0, 1]);
        ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0; 20]);
        let b = header(ext::HOP_BY_HOP, &ext);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer(), Ok((6, 40 + 40)));
    }

    #[test]
    fn unsupported_and_broken_extensions_are_errors() {
        for e in [ext::ESP, ext::AH, ext::MOBILITY, ext::HIP, ext::SHIM6, 253] {
            let b = header(e, &[0; 24]);
            let p = Ipv6Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.upper_layer(), Err(Error::UnsupportedExtension(e)));
        }
        // A non-first fragment and a first fragment with more to come.
        for (v, offset, more) in [([0x00, 0x10], 16, false), ([0x00, 0x01], 0, true)] {
            let b = header(ext::FRAGMENT, &[6, 0, v[0], v[1], 0, 0, 0, 1]);
            let p = Ipv6Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.upper_layer(), Err(Error::Fragment { offset, more }));
        }
        // A destination-options header claiming more bytes than the payload has.
        let b = header(ext::DEST_OPTS, &[6, 1, 0, 0, 0, 0, 0, 0]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert!(matches!(
            p.upper_layer(),
            Err(Error::Truncated { need: 56, .. })
        ));
        let b = header(ext::DEST_OPTS, &[6, 0, 0]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert!(matches!(
            p.upper_layer(),
            Err(Error::Truncated { need: 48, .. })
        ));
    }

    #[test]
    fn lengths_are_checked_against_the_buffer() {
        let b = header(6, &[0; 20]);
        assert!(matches!(
            Ipv6Packet::new_checked(&b[..39]),
            Err(Error::Truncated { need: 40, .. })
        ));
        assert!(matches!(
            Ipv6Packet::new_checked(&b[..59]),
            Err(Error::Truncated { need: 60, .. })
        ));
        let mut v = b.clone();
        v[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&v[..]), Err(Error::Version(4)));
    }
}
