//! Flow keys and translations, and their encoding as set keys and map values.
//!
//! A key is the concatenation `saddr . sport . daddr . dport`; a translation value is
//! `saddr . daddr . sport . dport`. Each field of a concatenation occupies whole 32-bit
//! registers, so a 2-byte port is followed by 2 zero bytes, as the kernel leaves them when it
//! loads a port into a register.

use std::net::{IpAddr, SocketAddr};

use crate::error::Error;

/// The 4-tuple of one direction of a TCP flow, as packets carry it at the hook that looks it
/// up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

impl FlowKey {
    /// A key from source to destination.
    pub fn new(src: SocketAddr, dst: SocketAddr) -> Self {
        Self { src, dst }
    }

    /// The other direction of the same flow.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
        }
    }

    pub(crate) fn family(&self) -> Result<Family, Error> {
        family_of(self.src, self.dst)
    }

    /// Set key bytes: `saddr . sport . daddr . dport`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        push_addr(&mut out, self.src.ip());
        push_port(&mut out, self.src.port());
        push_addr(&mut out, self.dst.ip());
        push_port(&mut out, self.dst.port());
        out
    }
}

/// What the addresses and ports of a flow's packets become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// New source address and port.
    pub src: SocketAddr,
    /// New destination address and port.
    pub dst: SocketAddr,
}

impl Translation {
    /// Map value bytes: `saddr . daddr . sport . dport`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        push_addr(&mut out, self.src.ip());
        push_addr(&mut out, self.dst.ip());
        push_port(&mut out, self.src.port());
        push_port(&mut out, self.dst.port());
        out
    }
}

/// Which way the packets of a flow travel, which decides the chain that translates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Arriving packets (chain `pre`, before conntrack).
    In,
    /// Leaving packets (chain `out`, after conntrack).
    Out,
}

/// Address family of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

pub(crate) fn family_of(src: SocketAddr, dst: SocketAddr) -> Result<Family, Error> {
    match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => Ok(Family::V4),
        (SocketAddr::V6(_), SocketAddr::V6(_)) => Ok(Family::V6),
        _ => Err(Error::MixedFamilies { src, dst }),
    }
}

fn push_addr(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

fn push_port(out: &mut Vec<u8>, port: u16) {
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_key_layout_matches_register_loads() {
        let k = FlowKey::new(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:515".parse().unwrap(),
        );
        assert_eq!(
            k.encode(),
            [192, 0, 2, 1, 0, 1, 0, 0, 192, 0, 2, 2, 2, 3, 0, 0]
        );
    }

    #[test]
    fn v6_translation_layout() {
        let t = Translation {
            src: "[2001:db8::1]:80".parse().unwrap(),
            dst: "[2001:db8::2]:443".parse().unwrap(),
        };
        let b = t.encode();
        assert_eq!(b.len(), 40);
        assert_eq!(&b[32..], &[0, 80, 0, 0, 1, 187, 0, 0]);
        assert_eq!(b[15], 1);
        assert_eq!(b[31], 2);
    }

    #[test]
    fn mixed_families_are_refused() {
        let k = FlowKey::new(
            "192.0.2.1:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
        );
        assert!(matches!(k.family(), Err(Error::MixedFamilies { .. })));
    }
}
