//! An IPv4 or IPv6 packet carrying TCP, parsed once into a layout that the rewrites use.

use std::net::{IpAddr, SocketAddr};

use crate::checksum;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::Ipv6Packet;
use crate::options::TcpOptions;
use crate::tcp::{self, TcpSegment};
use crate::{Error, PROTO_TCP};

/// IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// What the TCP checksum field of a packet holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// A complete checksum over pseudo-header and segment.
    #[default]
    Complete,
    /// Only the folded, non-complemented pseudo-header sum: the kernel marked the packet
    /// `CHECKSUM_PARTIAL` and the NIC (or the kernel's software fallback) finishes it.
    Partial,
}

/// An IPv4 or IPv6 packet view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPacket<T: AsRef<[u8]>> {
    V4(Ipv4Packet<T>),
    V6(Ipv6Packet<T>),
}

impl<T: AsRef<[u8]>> IpPacket<T> {
    /// Dispatches on the version nibble and checks the lengths of that family.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        match buf.as_ref().first().map(|b| b >> 4) {
            Some(4) => Ok(IpPacket::V4(Ipv4Packet::new_checked(buf)?)),
            Some(6) => Ok(IpPacket::V6(Ipv6Packet::new_checked(buf)?)),
            Some(v) => Err(Error::Version(v)),
            None => Err(Error::Truncated {
                what: "IP version",
                need: 1,
                have: 0,
            }),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            IpPacket::V4(_) => Family::V4,
            IpPacket::V6(_) => Family::V6,
        }
    }
    pub fn src_addr(&self) -> IpAddr {
        match self {
            IpPacket::V4(p) => p.src_addr().into(),
            IpPacket::V6(p) => p.src_addr().into(),
        }
    }
    pub fn dst_addr(&self) -> IpAddr {
        match self {
            IpPacket::V4(p) => p.dst_addr().into(),
            IpPacket::V6(p) => p.dst_addr().into(),
        }
    }

    /// The upper-layer protocol and its offset: after IPv4 options, or after the IPv6
    /// extension headers. Fragments are errors.
    pub fn upper_layer(&self) -> Result<(u8, usize), Error> {
        match self {
            IpPacket::V4(p) => {
                if p.more_frags() || p.frag_offset() != 0 {
                    return Err(Error::Fragment {
                        offset: p.frag_offset(),
                        more: p.more_frags(),
                    });
                }
                Ok((p.protocol(), p.header_len()))
            }
            IpPacket::V6(p) => p.upper_layer(),
        }
    }

    /// Where the packet ends according to its length field.
    pub fn end(&self) -> usize {
        match self {
            IpPacket::V4(p) => usize::from(p.total_len()),
            IpPacket::V6(p) => crate::ipv6::HEADER_LEN + usize::from(p.payload_len()),
        }
    }
}

/// An IPv4 or IPv6 packet with a TCP segment, as NFQUEUE delivers it: the view the daemon
/// reads and rewrites.
///
/// `new_checked` validates the IP header(s), the TCP header and every length; the packet is
/// `buf[..len()]` (a longer buffer gives room for inserting options). Rewrites are in
/// the `AsMut` impl; each keeps the checksums right for the packet's [`Checksum`] mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpIpPacket<T: AsRef<[u8]>> {
    pub(crate) buf: T,
    pub(crate) family: Family,
    pub(crate) tcp_offset: usize,
    pub(crate) end: usize,
    pub(crate) mode: Checksum,
}

/// Parses bytes starting at an IPv4 or IPv6 header that carry a TCP segment.
pub fn parse_ip_tcp(bytes: &[u8]) -> Result<TcpIpPacket<&[u8]>, Error> {
    TcpIpPacket::new_checked(bytes)
}

impl<T: AsRef<[u8]>> TcpIpPacket<T> {
    /// Parses and validates; the checksum mode is [`Checksum::Complete`].
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let ip = IpPacket::new_checked(buf.as_ref())?;
        let (proto, tcp_offset) = ip.upper_layer()?;
        if proto != PROTO_TCP {
            return Err(Error::NotTcp(proto));
        }
        let family = ip.family();
        let end = ip.end();
        // Both views checked that `tcp_offset <= end <= buf.len()`.
        TcpSegment::new_checked(&buf.as_ref()[tcp_offset..end])?;
        Ok(Self {
            buf,
            family,
            tcp_offset,
            end,
            mode: Checksum::Complete,
        })
    }

    /// Declares what the TCP checksum field holds (from NFQUEUE's `NFQA_SKB_CSUMNOTREADY`).
    pub fn with_checksum_mode(mut self, mode: Checksum) -> Self {
        self.mode = mode;
        self
    }

    pub fn checksum_mode(&self) -> Checksum {
        self.mode
    }
    pub fn family(&self) -> Family {
        self.family
    }
    /// The IP header view.
    pub fn ip(&self) -> IpPacket<&[u8]> {
        let b = &self.buf.as_ref()[..self.end];
        match self.family {
            Family::V4 => IpPacket::V4(Ipv4Packet::new_unchecked(b)),
            Family::V6 => IpPacket::V6(Ipv6Packet::new_unchecked(b)),
        }
    }
    /// The TCP segment view (header and payload).
    pub fn tcp(&self) -> TcpSegment<&[u8]> {
        TcpSegment::new_unchecked(&self.buf.as_ref()[self.tcp_offset..self.end])
    }
    /// The TCP options, borrowing from the packet (unlike `tcp().options()`, usable inline).
    pub fn tcp_options(&self) -> TcpOptions<'_> {
        let hl = self.tcp().header_len();
        let start = self.tcp_offset + tcp::OPTIONS_START;
        TcpOptions::new(&self.buf.as_ref()[start..self.tcp_offset + hl])
    }
    /// The TCP payload, borrowing from the packet.
    pub fn tcp_payload(&self) -> &[u8] {
        let hl = self.tcp().header_len();
        &self.buf.as_ref()[self.tcp_offset + hl..self.end]
    }
    pub fn src_addr(&self) -> IpAddr {
        self.ip().src_addr()
    }
    pub fn dst_addr(&self) -> IpAddr {
        self.ip().dst_addr()
    }
    /// Source address and port.
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(self.src_addr(), self.tcp().src_port())
    }
    /// Destination address and port.
    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(self.dst_addr(), self.tcp().dst_port())
    }
    /// Offset of the TCP header: the length of all IP headers.
    pub fn tcp_offset(&self) -> usize {
        self.tcp_offset
    }
    /// TCP header plus payload.
    pub fn tcp_len(&self) -> usize {
        self.end - self.tcp_offset
    }
    /// The packet's length according to its IP header.
    pub fn len(&self) -> usize {
        self.end
    }
    /// Never true: a parsed packet has at least its headers.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }
    /// The packet's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf.as_ref()[..self.end]
    }
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// The pseudo-header sum for the current addresses and TCP length.
    pub(crate) fn pseudo_sum(&self) -> u32 {
        checksum::pseudo_header(self.src_addr(), self.dst_addr(), self.tcp_len())
    }

    /// Whether the checksums are right for the packet's mode: in `Complete` mode the TCP
    /// checksum verifies; in `Partial` mode the field holds the pseudo-header sum. The IPv4
    /// header checksum must verify in both.
    pub fn checksums_ok(&self) -> bool {
        let ip_ok = match self.ip() {
            IpPacket::V4(p) => p.verify_checksum(),
            IpPacket::V6(_) => true,
        };
        let tcp_ok = match self.mode {
            Checksum::Complete => self.tcp().verify_checksum(self.src_addr(), self.dst_addr()),
            Checksum::Partial => {
                // 0x0000 and 0xffff are the same one's-complement number.
                let want = checksum::fold(self.pseudo_sum());
                let have = self.tcp().checksum();
                have == want || (have | want == 0xffff && have & want == 0)
            }
        };
        ip_ok && tcp_ok
    }
}

/// Offset of the TCP checksum within the packet.
pub(crate) fn tcp_checksum_at(tcp_offset: usize) -> usize {
    tcp_offset + tcp::CHECKSUM.start
}
