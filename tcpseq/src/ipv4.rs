//! A view of an IPv4 packet (header with options, and payload).
//!
//! [`Ipv4Packet::new_checked`] verifies the version, that the header (IHL, options included)
//! fits, and that the total length covers the header and does not exceed the buffer. The
//! buffer may be longer than the total length (trailing bytes are ignored); after the check no
//! accessor panics.

use std::net::Ipv4Addr;

use crate::checksum;
use crate::error::need;
use crate::Error;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}
pub(crate) use field::{CHECKSUM, DST_ADDR, SRC_ADDR, TOTAL_LEN};

/// The header length without options.
pub const HEADER_LEN: usize = 20;

const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn addr(b: &[u8], r: std::ops::Range<usize>) -> Ipv4Addr {
    Ipv4Addr::new(b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3])
}

/// An IPv4 packet view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps without checking: accessors may panic on a short buffer. For buffers built here.
    pub fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wraps untrusted bytes, checking version and lengths against the buffer.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }

    /// Checks version 4, IHL >= 20, and header <= total length <= buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buf.as_ref();
        need("IPv4 header", HEADER_LEN, b.len())?;
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Version(b[field::VER_IHL] >> 4));
        }
        let header = self.header_len();
        if header < HEADER_LEN {
            return Err(Error::Ipv4HeaderLen(header));
        }
        need("IPv4 header with options", header, b.len())?;
        let total = usize::from(self.total_len());
        if total < header {
            return Err(Error::Ipv4TotalLen { total, header });
        }
        need("IPv4 total length", total, b.len())
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.b()[field::DSCP_ECN]
    }
    pub fn total_len(&self) -> u16 {
        be16(self.b(), field::TOTAL_LEN)
    }
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }
    pub fn dont_frag(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & DONT_FRAG != 0
    }
    pub fn more_frags(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & MORE_FRAGS != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.b(), field::FLAGS_FRAG) & 0x1fff) << 3
    }
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }
    pub fn header_checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }
    pub fn src_addr(&self) -> Ipv4Addr {
        addr(self.b(), field::SRC_ADDR)
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        addr(self.b(), field::DST_ADDR)
    }
    /// The header options (possibly empty).
    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }
    /// The payload: from the header's end to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..usize::from(self.total_len())]
    }
    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.b()[..self.header_len()])) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    // Raw setters: they do not touch the header checksum; call `fill_checksum` afterwards,
    // or rewrite through `TcpIpPacket`, which keeps both checksums right.
    /// Sets version 4 and the header length (a multiple of 4 from 20 to 60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        debug_assert!(header_len % 4 == 0 && (20..=60).contains(&header_len));
        self.m()[field::VER_IHL] = 0x40 | (header_len / 4) as u8;
    }
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.m()[field::DSCP_ECN] = v;
    }
    pub fn set_total_len(&mut self, v: u16) {
        self.m()[field::TOTAL_LEN].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ident(&mut self, v: u16) {
        self.m()[field::IDENT].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the flags and fragment offset field: DF as given, not a fragment.
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        let v = if dont_frag { DONT_FRAG } else { 0 };
        self.m()[field::FLAGS_FRAG].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ttl(&mut self, v: u8) {
        self.m()[field::TTL] = v;
    }
    pub fn set_protocol(&mut self, v: u8) {
        self.m()[field::PROTOCOL] = v;
    }
    pub fn set_header_checksum(&mut self, v: u16) {
        self.m()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.m()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.m()[field::DST_ADDR].copy_from_slice(&a.octets());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), usize::from(self.total_len()));
        &mut self.m()[h..t]
    }
    /// Computes and writes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_header_checksum(0);
        let h = self.header_len();
        let c = checksum::finish(checksum::sum(&self.b()[..h]));
        self.set_header_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.0.2.1 -> 198.51.100.1, TCP, 24 bytes (one 4-byte option: NOPs + EOL), 0 payload.
    const PKT: [u8; 24] = [
        0x46, 0x10, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 1,
        1, 1, 1, 0,
    ];

    fn filled() -> [u8; 24] {
        let mut b = PKT;
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn deconstruct() {
        let b = filled();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp_ecn(), 0x10);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum());
        // RFC 1071 arithmetic by hand for this header.
        assert_eq!(p.header_checksum(), 0x3965);
    }

    #[test]
    fn construct() {
        let mut b = [0xffu8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(24);
        p.set_dscp_ecn(0x10);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.set_unfragmented(true);
        p.set_ttl(64);
        p.set_protocol(6);
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 1));
        b[20..].copy_from_slice(&[1, 1, 1, 0]);
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        assert_eq!(b, filled());
    }

    #[test]
    fn lengths_are_checked_against_the_buffer() {
        let b = filled();
        assert!(matches!(
            Ipv4Packet::new_checked(&b[..19]),
            Err(Error::Truncated { need: 20, .. })
        ));
        assert!(matches!(
            Ipv4Packet::new_checked(&b[..22]),
            Err(Error::Truncated { need: 24, .. })
        ));
        let mut v = b;
        v[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]),
            Err(Error::Ipv4HeaderLen(16))
        );
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v[..]), Err(Error::Version(6)));
        let mut v = b;
        v[3] = 0;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]),
            Err(Error::Ipv4TotalLen {
                total: 0,
                header: 24
            })
        );
        let mut v = b;
        v[3] = 25;
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..]),
            Err(Error::Truncated { need: 25, .. })
        ));
        // Trailing bytes beyond the total length are not part of the packet.
        let mut long = b.to_vec();
        long.extend_from_slice(&[9, 9]);
        let p = Ipv4Packet::new_checked(&long[..]).unwrap();
        assert!(p.payload().is_empty());
    }
}
