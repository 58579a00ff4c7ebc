//! Building segments the daemon emits itself: zero-window ACKs, window updates, keep-alive
//! probes, RSTs, SYNs and SYN-ACKs with options, and data segments, in IPv4 or IPv6, with
//! valid checksums.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::ipv4::{self, Ipv4Packet};
use crate::ipv6::{self, Ipv6Packet};
use crate::options::{self, TcpOption, MAX_LEN};
use crate::seq::SeqNum;
use crate::tcp::{self, Flags, TcpSegment};
use crate::{Error, PROTO_TCP};

/// Hop limit / TTL of built packets unless set otherwise.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

#[derive(Debug, Clone, Copy)]
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// A segment to build. The constructors set the fields each kind needs; the `with_*` methods
/// adjust the rest. [`Segment::emit`] writes it into a caller buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: SeqNum,
    /// Written as is; only meaningful when `flags` has ACK.
    pub ack: SeqNum,
    pub flags: Flags,
    /// The raw window field (already scaled down by the caller).
    pub window: u16,
    pub options: &'a [TcpOption<'a>],
    pub payload: &'a [u8],
    pub hop_limit: u8,
}

impl<'a> Segment<'a> {
    /// A bare segment with the given flags and no options or payload.
    pub fn new(src: SocketAddr, dst: SocketAddr, seq: SeqNum, ack: SeqNum, flags: Flags) -> Self {
        Segment {
            src,
            dst,
            seq,
            ack,
            flags,
            window: 0,
            options: &[],
            payload: &[],
            hop_limit: DEFAULT_HOP_LIMIT,
        }
    }

    /// An ACK advertising a zero window: tells the peer to stop sending.
    pub fn zero_window_ack(src: SocketAddr, dst: SocketAddr, seq: SeqNum, ack: SeqNum) -> Self {
        Self::new(src, dst, seq, ack, Flags::ACK)
    }

    /// An ACK re-opening the window (raw field value).
    pub fn window_update(
        src: SocketAddr,
        dst: SocketAddr,
        seq: SeqNum,
        ack: SeqNum,
        window: u16,
    ) -> Self {
        Self::new(src, dst, seq, ack, Flags::ACK).with_window(window)
    }

    /// A keep-alive probe: an ACK with `seq = snd_una - 1`, which the peer must answer with
    /// an ACK. Add one garbage byte with `with_payload` for peers that ignore empty probes.
    pub fn keepalive(
        src: SocketAddr,
        dst: SocketAddr,
        snd_una: SeqNum,
        ack: SeqNum,
        window: u16,
    ) -> Self {
        Self::new(src, dst, snd_una - 1, ack, Flags::ACK).with_window(window)
    }

    /// A reset with the given sequence number (no ACK flag).
    pub fn rst(src: SocketAddr, dst: SocketAddr, seq: SeqNum) -> Self {
        Self::new(src, dst, seq, SeqNum(0), Flags::RST)
    }

    /// A reset that also acknowledges `ack` (the answer to a segment without ACK).
    pub fn rst_ack(src: SocketAddr, dst: SocketAddr, seq: SeqNum, ack: SeqNum) -> Self {
        Self::new(src, dst, seq, ack, Flags::RST | Flags::ACK)
    }

    /// A SYN with initial sequence number `isn` and the given options.
    pub fn syn(
        src: SocketAddr,
        dst: SocketAddr,
        isn: SeqNum,
        window: u16,
        options: &'a [TcpOption<'a>],
    ) -> Self {
        Self::new(src, dst, isn, SeqNum(0), Flags::SYN)
            .with_window(window)
            .with_options(options)
    }

    /// A SYN-ACK answering a SYN whose ISN was `ack - 1`.
    pub fn syn_ack(
        src: SocketAddr,
        dst: SocketAddr,
        isn: SeqNum,
        ack: SeqNum,
        window: u16,
        options: &'a [TcpOption<'a>],
    ) -> Self {
        Self::new(src, dst, isn, ack, Flags::SYN | Flags::ACK)
            .with_window(window)
            .with_options(options)
    }

    /// A data segment (ACK and PSH).
    pub fn data(
        src: SocketAddr,
        dst: SocketAddr,
        seq: SeqNum,
        ack: SeqNum,
        window: u16,
        payload: &'a [u8],
    ) -> Self {
        Self::new(src, dst, seq, ack, Flags::ACK | Flags::PSH)
            .with_window(window)
            .with_payload(payload)
    }

    pub fn with_window(self, window: u16) -> Self {
        Segment { window, ..self }
    }
    pub fn with_options(self, options: &'a [TcpOption<'a>]) -> Self {
        Segment { options, ..self }
    }
    pub fn with_payload(self, payload: &'a [u8]) -> Self {
        Segment { payload, ..self }
    }
    pub fn with_flags(self, flags: Flags) -> Self {
        Segment { flags, ..self }
    }
    pub fn with_hop_limit(self, hop_limit: u8) -> Self {
        Segment { hop_limit, ..self }
    }

    fn addrs(&self) -> Result<Addrs, Error> {
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ok(Addrs::V4(s, d)),
            (IpAddr::V6(s), IpAddr::V6(d)) => Ok(Addrs::V6(s, d)),
            _ => Err(Error::FamilyMismatch("segment with mixed address families")),
        }
    }

    fn ip_header_len(&self) -> Result<usize, Error> {
        Ok(match self.addrs()? {
            Addrs::V4(..) => ipv4::HEADER_LEN,
            Addrs::V6(..) => ipv6::HEADER_LEN,
        })
    }

    /// Bytes the packet takes.
    pub fn wire_len(&self) -> Result<usize, Error> {
        let mut scratch = [0u8; MAX_LEN];
        let opts = options::encode(self.options, &mut scratch)?;
        Ok(self.ip_header_len()? + tcp::HEADER_LEN + opts + self.payload.len())
    }

    /// Writes the packet to the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut opts = [0u8; MAX_LEN];
        let opts_len = options::encode(self.options, &mut opts)?;
        let addrs = self.addrs()?;
        let ip_len = self.ip_header_len()?;
        let tcp_len = tcp::HEADER_LEN + opts_len + self.payload.len();
        let total = ip_len + tcp_len;
        let length_field = match addrs {
            Addrs::V4(..) => total,
            Addrs::V6(..) => tcp_len,
        };
        let length_field = u16::try_from(length_field).map_err(|_| Error::TooLong {
            len: total,
            max: usize::from(u16::MAX),
        })?;
        let have = buf.len();
        let buf = buf
            .get_mut(..total)
            .ok_or(Error::BufferTooSmall { need: total, have })?;
        let (ip_buf, tcp_buf) = buf.split_at_mut(ip_len);

        let mut t = TcpSegment::new_unchecked(&mut *tcp_buf);
        t.set_src_port(self.src.port());
        t.set_dst_port(self.dst.port());
        t.set_seq(self.seq);
        t.set_ack(self.ack);
        t.set_header_len(tcp::HEADER_LEN + opts_len);
        t.set_flags(self.flags);
        t.set_window(self.window);
        t.set_urgent(0);
        t.options_bytes_mut().copy_from_slice(&opts[..opts_len]);
        t.payload_mut().copy_from_slice(self.payload);
        t.fill_checksum(self.src.ip(), self.dst.ip());

        match addrs {
            Addrs::V4(s, d) => {
                let mut ip = Ipv4Packet::new_unchecked(ip_buf);
                ip.set_version_and_header_len(ipv4::HEADER_LEN);
                ip.set_dscp_ecn(0);
                ip.set_total_len(length_field);
                ip.set_ident(0);
                ip.set_unfragmented(true);
                ip.set_ttl(self.hop_limit);
                ip.set_protocol(PROTO_TCP);
                ip.set_src_addr(s);
                ip.set_dst_addr(d);
                ip.fill_checksum();
            }
            Addrs::V6(s, d) => {
                let mut ip = Ipv6Packet::new_unchecked(ip_buf);
                ip.set_version_tc_flow(0, 0);
                ip.set_payload_len(length_field);
                ip.set_next_header(PROTO_TCP);
                ip.set_hop_limit(self.hop_limit);
                ip.set_src_addr(s);
                ip.set_dst_addr(d);
            }
        }
        Ok(total)
    }

    /// The packet in a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0u8; self.wire_len()?];
        self.emit(&mut v)?;
        Ok(v)
    }
}
