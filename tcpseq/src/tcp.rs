//! A view of a TCP segment: header and payload.
//!
//! [`TcpSegment::new_checked`] verifies that the buffer holds at least 20 bytes and the whole
//! header its data offset claims; after that no accessor panics. The buffer is the segment:
//! its length is the TCP length used in the pseudo-header.

use std::net::IpAddr;

use crate::checksum;
use crate::options::TcpOptions;
use crate::seq::SeqNum;
use crate::Error;

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    pub const OPTIONS_START: usize = 20;
}
pub(crate) use field::*;

/// The fixed header length.
pub const HEADER_LEN: usize = 20;
/// The largest header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// TCP flag bits (the low byte of the flags field; NS is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);
    pub const URG: Flags = Flags(0x20);
    pub const ECE: Flags = Flags(0x40);
    pub const CWR: Flags = Flags(0x80);

    /// Whether all bits of `bits` are set.
    pub fn contains(self, bits: Flags) -> bool {
        self.0 & bits.0 == bits.0
    }
    pub fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    pub fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    pub fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    pub fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    pub fn psh(self) -> bool {
        self.contains(Self::PSH)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A TCP segment view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps without checking: accessors may panic on a short buffer. For buffers built here.
    pub fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wraps untrusted bytes, checking the header length against the buffer.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let s = Self::new_unchecked(buf);
        s.check_len()?;
        Ok(s)
    }

    /// Checks the fixed header and the data offset against the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buf.as_ref();
        crate::error::need("TCP header", HEADER_LEN, b.len())?;
        let len = usize::from(b[DATA_OFFSET] >> 4) * 4;
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::TcpHeaderLen {
                len,
                available: b.len(),
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        be16(self.b(), SRC_PORT.start)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), DST_PORT.start)
    }
    pub fn seq(&self) -> SeqNum {
        SeqNum(be32(self.b(), SEQ.start))
    }
    pub fn ack(&self) -> SeqNum {
        SeqNum(be32(self.b(), ACK.start))
    }
    /// Header length in bytes, from the data offset.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[DATA_OFFSET] >> 4) * 4
    }
    pub fn flags(&self) -> Flags {
        Flags(self.b()[FLAGS])
    }
    /// The raw window field (unscaled).
    pub fn window(&self) -> u16 {
        be16(self.b(), WINDOW.start)
    }
    /// The window in bytes for a peer's window scale shift (capped at 14, RFC 7323).
    pub fn window_bytes(&self, scale: u8) -> u32 {
        u32::from(self.window()) << scale.min(14)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), CHECKSUM.start)
    }
    pub fn urgent(&self) -> u16 {
        be16(self.b(), URGENT.start)
    }
    /// The option bytes (possibly empty).
    pub fn options_bytes(&self) -> &[u8] {
        &self.b()[OPTIONS_START..self.header_len()]
    }
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options_bytes())
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
    /// Bytes of sequence space the segment occupies: payload plus one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        self.payload().len() as u32 + u32::from(f.syn()) + u32::from(f.fin())
    }
    /// The whole segment (header and payload).
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }
    /// Whether the checksum is complete and correct for these addresses.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let b = self.b();
        let acc = checksum::add(checksum::pseudo_header(src, dst, b.len()), checksum::sum(b));
        checksum::fold(acc) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    // Raw setters: they do not touch the checksum. Use `TcpIpPacket` to rewrite a packet
    // with its checksum kept right, or call `fill_checksum` after building.
    pub fn set_src_port(&mut self, v: u16) {
        self.m()[SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.m()[DST_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_seq(&mut self, v: SeqNum) {
        self.m()[SEQ].copy_from_slice(&v.0.to_be_bytes());
    }
    pub fn set_ack(&mut self, v: SeqNum) {
        self.m()[ACK].copy_from_slice(&v.0.to_be_bytes());
    }
    /// Sets the data offset; `len` must be a multiple of 4 between 20 and 60.
    pub fn set_header_len(&mut self, len: usize) {
        debug_assert!(len % 4 == 0 && (HEADER_LEN..=MAX_HEADER_LEN).contains(&len));
        let b = self.m();
        b[DATA_OFFSET] = ((len / 4) as u8) << 4 | (b[DATA_OFFSET] & 0x0f);
    }
    pub fn set_flags(&mut self, f: Flags) {
        self.m()[FLAGS] = f.0;
    }
    pub fn set_window(&mut self, v: u16) {
        self.m()[WINDOW].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.m()[CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_urgent(&mut self, v: u16) {
        self.m()[URGENT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn options_bytes_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.m()[OPTIONS_START..hl]
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.m()[hl..]
    }
    /// Computes and writes a complete checksum for these addresses.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let b = self.b();
        let acc = checksum::add(checksum::pseudo_header(src, dst, b.len()), checksum::sum(b));
        self.set_checksum(checksum::finish(acc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    // A SYN from 192.0.2.1:40000 to 198.51.100.1:443 with MSS 1460, checksum filled below.
    const SYN: [u8; 24] = [
        0x9c, 0x40, 0x01, 0xbb, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0,
        0, 0, 2, 4, 0x05, 0xb4,
    ];

    #[test]
    fn deconstruct() {
        let s = TcpSegment::new_checked(&SYN[..]).unwrap();
        assert_eq!((s.src_port(), s.dst_port()), (40000, 443));
        assert_eq!(s.seq(), SeqNum(0xffff_fff0));
        assert_eq!(s.ack(), SeqNum(0));
        assert_eq!(s.header_len(), 24);
        assert!(s.flags().syn() && !s.flags().ack());
        assert_eq!(s.window(), 64240);
        assert_eq!(s.window_bytes(7), 64240 << 7);
        assert_eq!(s.window_bytes(200), 64240 << 14);
        assert_eq!(s.urgent(), 0);
        assert_eq!(s.options_bytes(), &[2, 4, 0x05, 0xb4]);
        assert!(s.payload().is_empty());
        assert_eq!(s.seq_len(), 1);
    }

    #[test]
    fn construct_and_checksum() {
        let mut b = [0u8; 24];
        let mut s = TcpSegment::new_unchecked(&mut b[..]);
        s.set_src_port(40000);
        s.set_dst_port(443);
        s.set_seq(SeqNum(0xffff_fff0));
        s.set_ack(SeqNum(0));
        s.set_header_len(24);
        s.set_flags(Flags::SYN);
        s.set_window(64240);
        s.set_urgent(0);
        s.options_bytes_mut().copy_from_slice(&[2, 4, 0x05, 0xb4]);
        assert!(s.payload_mut().is_empty());
        let (src, dst) = (
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(198, 51, 100, 1).into(),
        );
        s.fill_checksum(src, dst);
        assert!(s.verify_checksum(src, dst));
        assert!(!s.verify_checksum(dst, dst));
        let c = s.checksum();
        let mut want = SYN;
        want[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(b, want);
    }

    #[test]
    fn truncated_and_impossible_lengths() {
        assert_eq!(
            TcpSegment::new_checked(&SYN[..19]),
            Err(Error::Truncated {
                what: "TCP header",
                need: 20,
                have: 19
            })
        );
        assert_eq!(
            TcpSegment::new_checked(&SYN[..23]),
            Err(Error::TcpHeaderLen {
                len: 24,
                available: 23
            })
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&b[..]),
            Err(Error::TcpHeaderLen {
                len: 16,
                available: 24
            })
        );
    }
}
