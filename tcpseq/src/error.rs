/// Why bytes are not a packet this crate can handle, or why a rewrite or build cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before a header or length field says it should.
    #[error("packet too short: {what} needs {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// The IP version nibble is neither 4 nor 6.
    #[error("IP version {0} is neither 4 nor 6")]
    Version(u8),
    /// The IPv4 IHL field is below the 20-byte minimum.
    #[error("IPv4 header length {0} bytes is below 20")]
    Ipv4HeaderLen(usize),
    /// The IPv4 total length is smaller than the IPv4 header.
    #[error("IPv4 total length {total} is smaller than the header ({header} bytes)")]
    Ipv4TotalLen { total: usize, header: usize },
    /// A fragment: the TCP segment is not all here.
    #[error("fragment (offset {offset}, more fragments: {more}) cannot be handled")]
    Fragment { offset: u16, more: bool },
    /// The packet does not carry TCP (the value is the protocol / next header).
    #[error("not TCP: protocol {0}")]
    NotTcp(u8),
    /// An IPv6 extension header this crate does not walk (ESP, AH, mobility, HIP, ...).
    #[error("IPv6 extension header {0} is not supported")]
    UnsupportedExtension(u8),
    /// The TCP data offset is below 20 bytes or beyond the segment.
    #[error("TCP header length {len} bytes is invalid (segment has {available})")]
    TcpHeaderLen { len: usize, available: usize },
    /// A TCP option's length byte is impossible for its kind or runs past the options.
    #[error("TCP option kind {kind} at header offset {at} has invalid length {len}")]
    OptionLength { kind: u8, at: usize, len: usize },
    /// The options would not fit into the 40 bytes TCP allows.
    #[error("TCP options need {need} bytes, only 40 fit")]
    OptionSpace { need: usize },
    /// The packet has no option of this kind.
    #[error("no TCP option of kind {0}")]
    NoOption(u8),
    /// An address of the other family than the packet's.
    #[error("address family does not match the packet's ({0})")]
    FamilyMismatch(&'static str),
    /// The caller's buffer is too small for the result.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// The result would not fit the IP length field.
    #[error("packet of {len} bytes exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
}

pub(crate) fn need(what: &'static str, need: usize, have: usize) -> Result<(), Error> {
    if have < need {
        Err(Error::Truncated { what, need, have })
    } else {
        Ok(())
    }
}
