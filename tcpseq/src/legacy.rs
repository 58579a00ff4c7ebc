//! The crate's first API: `parse` into a layout, then free functions on the buffer. rackd
//! still calls it; it is a thin layer over [`TcpIpPacket`] and goes away once rackd uses that
//! type directly.

use std::net::IpAddr;
use std::ops::Deref;

use crate::options::{TcpOption, TcpOptions};
use crate::packet::{Family, TcpIpPacket};
use crate::tcp::TcpSegment;
use crate::Error;

/// Where things are in an IP packet carrying TCP; every range was checked against the buffer
/// it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpTcp {
    pub family: Family,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Offset of the TCP header (all IP headers included).
    pub tcp_offset: usize,
    /// TCP header plus payload, as the IP length field says.
    pub tcp_len: usize,
    /// TCP header length from the data offset.
    pub tcp_header_len: usize,
}

/// Parses an IPv4 or IPv6 packet that carries a TCP segment.
pub fn parse(p: &[u8]) -> Result<IpTcp, Error> {
    TcpIpPacket::new_checked(p).map(|pkt| IpTcp::of(&pkt))
}

impl IpTcp {
    fn of<T: AsRef<[u8]>>(pkt: &TcpIpPacket<T>) -> Self {
        IpTcp {
            family: pkt.family(),
            src: pkt.src_addr(),
            dst: pkt.dst_addr(),
            tcp_offset: pkt.tcp_offset(),
            tcp_len: pkt.tcp_len(),
            tcp_header_len: pkt.tcp().header_len(),
        }
    }

    /// The TCP segment of `packet`, the buffer this layout was parsed from.
    pub fn tcp<'a>(&self, packet: &'a [u8]) -> TcpView<'a> {
        TcpView(TcpSegment::new_unchecked(
            &packet[self.tcp_offset..self.end()],
        ))
    }

    /// The packet's end according to its IP header.
    pub fn end(&self) -> usize {
        self.tcp_offset + self.tcp_len
    }

    pub fn payload_len(&self) -> usize {
        self.tcp_len - self.tcp_header_len
    }
}

/// A TCP segment whose `options()` also yields each option's offset in the options area.
#[derive(Debug, Clone, Copy)]
pub struct TcpView<'a>(TcpSegment<&'a [u8]>);

impl<'a> Deref for TcpView<'a> {
    type Target = TcpSegment<&'a [u8]>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> TcpView<'a> {
    pub fn options(&self) -> impl Iterator<Item = Result<(usize, TcpOption<'a>), Error>> {
        let bytes: &'a [u8] = self.0.into_inner();
        let hl = self.0.header_len();
        let mut it = TcpOptions::new(&bytes[crate::tcp::OPTIONS_START..hl]);
        std::iter::from_fn(move || it.next_at())
    }
}

/// Free-function rewrites over a parsed layout.
pub mod rewrite {
    use super::IpTcp;
    use crate::options::TcpOptions;
    use crate::packet::TcpIpPacket;
    use crate::Error;

    /// Appends `option` (kind, length and data as on the wire) to the TCP options; the packet
    /// in `p` grows and is cut to its new length. Returns the new layout.
    ///
    /// The TCP checksum is recomputed from scratch, whatever the field held before: the caller
    /// does not say whether the kernel left it partial, and the kernel forgets the partial
    /// state once a verdict carries a new payload.
    ///
    pub fn add_option(p: &mut Vec<u8>, ip: &IpTcp, option: &[u8]) -> Result<IpTcp, Error> {
        let opt = match TcpOptions::new(option).next() {
            Some(Ok(o)) if o.wire_len() == option.len() => o,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Error::OptionLength {
                    kind: option.first().copied().unwrap_or(0),
                    at: 0,
                    len: option.len(),
                })
            }
        };
        // Check before taking the buffer, so that an error leaves `p` as it was.
        TcpIpPacket::new_checked(&p[..])?;
        p.truncate(ip.end());
        let mut pkt = TcpIpPacket::new_checked(std::mem::take(p))?;
        let r = pkt.insert_option_growing(&opt);
        if r.is_ok() {
            pkt.complete_partial();
        }
        let out = IpTcp::of(&pkt);
        *p = pkt.into_inner();
        r.map(|()| out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Segment, SeqNum};

    #[test]
    fn parse_tcp_and_add_option_work_as_before() {
        let syn = Segment::syn(
            "192.0.2.1:40000".parse().unwrap(),
            "198.51.100.1:443".parse().unwrap(),
            SeqNum(1),
            1000,
            &[TcpOption::Mss(1460)],
        )
        .to_vec()
        .unwrap();
        let ip = parse(&syn).unwrap();
        assert_eq!((ip.tcp_offset, ip.tcp_len, ip.tcp_header_len), (20, 24, 24));
        let t = ip.tcp(&syn);
        assert!(t.flags().syn());
        assert_eq!(t.options().next(), Some(Ok((0, TcpOption::Mss(1460)))));
        let mut p = syn.clone();
        let exp = [253, 6, 0x72, 0x6b, 1, 2];
        let out = rewrite::add_option(&mut p, &ip, &exp).unwrap();
        assert_eq!(out.tcp_header_len, 32);
        assert_eq!(p.len(), out.end());
        assert!(TcpIpPacket::new_checked(&p[..]).unwrap().checksums_ok());
        // A SYN from a local socket: the kernel left only the pseudo-header sum in the field.
        let mut partial = syn.clone();
        let pseudo = crate::checksum::pseudo_header(ip.src, ip.dst, ip.tcp_len);
        partial[36..38].copy_from_slice(&crate::checksum::fold(pseudo).to_be_bytes());
        rewrite::add_option(&mut partial, &ip, &exp).unwrap();
        assert!(TcpIpPacket::new_checked(&partial[..])
            .unwrap()
            .checksums_ok());
        assert_eq!(partial, p);
        assert_eq!(
            rewrite::add_option(&mut vec![0x45], &out, &exp).map(|_| ()),
            Err(Error::Truncated {
                what: "IPv4 header",
                need: 20,
                have: 1
            })
        );
        assert_eq!(
            rewrite::add_option(&mut p, &out, &[253, 9, 1]),
            Err(Error::OptionLength {
                kind: 253,
                at: 20,
                len: 9
            })
        );
    }
}
