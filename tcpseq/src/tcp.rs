//! A view of a TCP segment (header + payload) over bytes whose header length was checked.

use crate::options::TcpOptions;
use crate::seq::SeqNum;

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const OPTIONS: usize = 20;
}
pub(crate) use field::{ACK, CHECKSUM, DST_PORT, OPTIONS, SEQ, SRC_PORT, WINDOW};
pub(crate) const OFFSET_BYTE: usize = field::OFFSET;

/// TCP flag bits (the low byte of the flags field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn has(self, bits: u8) -> bool {
        self.0 & bits == bits
    }
    pub fn syn(self) -> bool {
        self.has(Self::SYN)
    }
    pub fn ack(self) -> bool {
        self.has(Self::ACK)
    }
    pub fn fin(self) -> bool {
        self.has(Self::FIN)
    }
    pub fn rst(self) -> bool {
        self.has(Self::RST)
    }
}

/// Header accessors over a buffer starting at the TCP header. Created by [`crate::parse`]
/// (checked) or [`TcpView::new_checked`].
#[derive(Debug, Clone, Copy)]
pub struct TcpView<T: AsRef<[u8]>> {
    buf: T,
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn be32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

impl<T: AsRef<[u8]>> TcpView<T> {
    /// Checks that the buffer holds the header its data offset claims.
    pub fn new_checked(buf: T) -> Result<Self, crate::Error> {
        let b = buf.as_ref();
        if b.len() < 20 {
            return Err(crate::Error::Truncated {
                what: "TCP header",
                need: 20,
                have: b.len(),
            });
        }
        let hl = usize::from(b[field::OFFSET] >> 4) * 4;
        if hl < 20 || hl > b.len() {
            return Err(crate::Error::TcpHeaderLen(hl));
        }
        Ok(Self { buf })
    }

    pub(crate) fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        be16(self.b(), SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), DST_PORT)
    }
    pub fn seq(&self) -> SeqNum {
        SeqNum(be32(self.b(), SEQ))
    }
    pub fn ack(&self) -> SeqNum {
        SeqNum(be32(self.b(), ACK))
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::OFFSET] >> 4) * 4
    }
    pub fn flags(&self) -> Flags {
        Flags(self.b()[field::FLAGS])
    }
    pub fn window(&self) -> u16 {
        be16(self.b(), WINDOW)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), CHECKSUM)
    }
    /// The option bytes (possibly empty).
    pub fn options_bytes(&self) -> &[u8] {
        &self.b()[OPTIONS..self.header_len()]
    }
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options_bytes())
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
    /// Sequence space the segment occupies: payload plus one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        self.payload().len() as u32 + u32::from(f.syn()) + u32::from(f.fin())
    }
}
