//! Zero-copy views of IPv4/IPv6 + TCP packets and exact rewriting with correct checksums.
//!
//! Everything here works on byte slices handed over by the kernel (NFQUEUE gives L3 packets
//! starting at the IP header); nothing does I/O. Parsing untrusted bytes returns an error,
//! never panics, and accessors of a parsed view never index out of bounds.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod ip;
pub mod options;
pub mod rewrite;
pub mod seq;
pub mod tcp;

pub use ip::{parse, Family, IpTcp};
pub use options::{TcpOption, TcpOptions};
pub use seq::SeqNum;
pub use tcp::{Flags, TcpView};

/// Why bytes are not a packet this crate can handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("packet too short: {what} needs {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("IP version {0} is neither 4 nor 6")]
    Version(u8),
    #[error("IPv4 header length {0} bytes is invalid")]
    Ipv4HeaderLen(usize),
    #[error("not TCP: next header {0}")]
    NotTcp(u8),
    #[error("IPv6 extension header {0} is not supported")]
    UnsupportedExtension(u8),
    #[error("fragment (offset {0}) cannot be handled")]
    Fragment(u16),
    #[error("TCP data offset {0} bytes is invalid")]
    TcpHeaderLen(usize),
    #[error("TCP option kind {kind} at offset {at} has invalid length {len}")]
    OptionLength { kind: u8, at: usize, len: usize },
    #[error("no room for {need} more option bytes (TCP options are limited to 40)")]
    OptionSpace { need: usize },
    #[error("packet would exceed {0} bytes")]
    TooLong(usize),
}
