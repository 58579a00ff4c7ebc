//! Zero-copy views of IPv4/IPv6 + TCP packets and exact rewriting with correct checksums.
//!
//! The daemon receives L3 packets from NFQUEUE, starting at the IPv4 or IPv6 header, and
//! rewrites them in place. This crate does the byte work and nothing else: no I/O, no clocks.
//!
//! # The view contract
//!
//! Every view ([`Ipv4Packet`], [`Ipv6Packet`], [`TcpSegment`], [`TcpIpPacket`]) is a thin
//! wrapper over a buffer `T: AsRef<[u8]>` (and `AsMut<[u8]>` for rewriting). `new_checked`
//! validates every length the accessors rely on against the buffer; after it succeeds no
//! accessor or rewrite panics, whatever the bytes say. `new_unchecked` skips the validation and
//! is only for buffers this process built itself. Lengths in headers are never trusted beyond
//! the buffer: a header claiming more bytes than exist is an [`Error`].
//!
//! # Checksums
//!
//! Each rewrite on [`TcpIpPacket`] leaves the TCP checksum (and the IPv4 header checksum)
//! correct, by RFC 1624 incremental update where the change is local. A packet handed over by
//! the kernel with `CHECKSUM_PARTIAL` (NFQUEUE's `NFQA_SKB_CSUMNOTREADY`, typical for GSO
//! super-packets) carries only the folded pseudo-header sum in its TCP checksum field; such a
//! packet is viewed in [`Checksum::Partial`] mode, where only pseudo-header changes (addresses,
//! TCP length) touch the field, and [`TcpIpPacket::complete_partial`] turns it into one with a
//! complete checksum.
//!
//! # Example
//!
//! ```
//! use tcpseq::{Checksum, SeqAdjust, SeqNum, Segment, TcpIpPacket, TcpOption};
//!
//! // A SYN as NFQUEUE would deliver it.
//! let (client, server) = ("192.0.2.1:40000".parse()?, "198.51.100.1:443".parse()?);
//! let mut buf = Segment::syn(client, server, SeqNum(1), 64240, &[TcpOption::Mss(1460)])
//!     .to_vec()?;
//!
//! let mut pkt = TcpIpPacket::new_checked(&mut buf[..])?.with_checksum_mode(Checksum::Complete);
//! pkt.adjust_seq(&SeqAdjust::between(SeqNum(1), SeqNum(1000)));
//! pkt.clamp_mss(1400)?;
//! assert_eq!(pkt.tcp().seq(), SeqNum(1000));
//! assert!(pkt.checksums_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod build;
pub mod checksum;
mod edit;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod ipv4;
pub mod ipv6;
pub mod options;
mod packet;
pub mod seq;
pub mod seqadj;
pub mod tcp;

pub use build::Segment;
pub use error::Error;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use options::{SackBlocks, TcpOption, TcpOptions};
pub use packet::{parse_ip_tcp, Checksum, Family, IpPacket, TcpIpPacket};
pub use seq::SeqNum;
pub use seqadj::SeqAdjust;
pub use tcp::{Flags, TcpSegment};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
