//! Rewrites that leave a packet with correct checksums.
//!
//! Field rewrites update the TCP checksum incrementally (RFC 1624). A packet whose checksum is
//! *partial* (offloaded: the field holds only the folded pseudo-header sum, as Linux leaves it
//! for CHECKSUM_PARTIAL) must be handled in [`Checksum::Partial`] mode, where only
//! pseudo-header changes touch the field. Rewrites that change the segment's length recompute
//! the checksum in full and always leave it complete.

use std::net::IpAddr;

use crate::checksum;
use crate::ip::{Family, IpTcp};
use crate::options::{TcpOptions, NOP};
use crate::tcp;
use crate::{Error, SeqNum};

/// What the TCP checksum field of a packet holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// A complete checksum over pseudo-header and segment.
    Complete,
    /// Only the folded pseudo-header sum (CHECKSUM_PARTIAL; the NIC or the kernel finishes it).
    Partial,
}

fn tcp_csum_at(ip: &IpTcp) -> usize {
    ip.tcp_offset + tcp::CHECKSUM.start
}

fn read16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn write16(p: &mut [u8], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Replaces bytes inside the TCP header (not the pseudo-header) and fixes the checksum.
fn replace_tcp_bytes(p: &mut [u8], ip: &IpTcp, rel: usize, new: &[u8], mode: Checksum) {
    let at = ip.tcp_offset + rel;
    if mode == Checksum::Complete {
        let c = tcp_csum_at(ip);
        let old = p[at..at + new.len()].to_vec();
        let check = checksum::update_bytes(read16(p, c), &old, new);
        write16(p, c, check);
    }
    p[at..at + new.len()].copy_from_slice(new);
}

pub fn set_seq(p: &mut [u8], ip: &IpTcp, seq: SeqNum, mode: Checksum) {
    replace_tcp_bytes(p, ip, tcp::SEQ.start, &seq.0.to_be_bytes(), mode);
}

pub fn set_ack(p: &mut [u8], ip: &IpTcp, ack: SeqNum, mode: Checksum) {
    replace_tcp_bytes(p, ip, tcp::ACK.start, &ack.0.to_be_bytes(), mode);
}

pub fn set_window(p: &mut [u8], ip: &IpTcp, window: u16, mode: Checksum) {
    replace_tcp_bytes(p, ip, tcp::WINDOW.start, &window.to_be_bytes(), mode);
}

pub fn set_ports(p: &mut [u8], ip: &IpTcp, src: u16, dst: u16, mode: Checksum) {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&src.to_be_bytes());
    b[2..].copy_from_slice(&dst.to_be_bytes());
    replace_tcp_bytes(p, ip, tcp::SRC_PORT.start, &b, mode);
}

/// Replaces the source and destination addresses (same family), fixing the IPv4 header checksum
/// and the TCP checksum in either mode (addresses are part of the pseudo-header).
pub fn set_addrs(
    p: &mut [u8],
    ip: &mut IpTcp,
    src: IpAddr,
    dst: IpAddr,
    mode: Checksum,
) -> Result<(), Error> {
    let (s_at, d_at, len) = match ip.family {
        Family::V4 => (12, 16, 4),
        Family::V6 => (8, 24, 16),
    };
    let bytes = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let (sb, db) = (bytes(src), bytes(dst));
    if sb.len() != len || db.len() != len {
        return Err(Error::Version(if len == 4 { 6 } else { 4 }));
    }
    let mut old = p[s_at..s_at + len].to_vec();
    old.extend_from_slice(&p[d_at..d_at + len]);
    let mut new = sb.clone();
    new.extend_from_slice(&db);
    let c = tcp_csum_at(ip);
    let field = read16(p, c);
    let field = match mode {
        Checksum::Complete => checksum::update_bytes(field, &old, &new),
        Checksum::Partial => checksum::update_bytes_partial(field, &old, &new),
    };
    write16(p, c, field);
    p[s_at..s_at + len].copy_from_slice(&sb);
    p[d_at..d_at + len].copy_from_slice(&db);
    if ip.family == Family::V4 {
        let hc = checksum::update_bytes(read16(p, 10), &old, &new);
        write16(p, 10, hc);
    }
    ip.src = src;
    ip.dst = dst;
    Ok(())
}

/// Writes a complete TCP checksum (e.g. for a packet that arrived with a partial one).
pub fn complete_checksum(p: &mut [u8], ip: &IpTcp) {
    let c = tcp_csum_at(ip);
    write16(p, c, 0);
    let seg = &p[ip.tcp_offset..ip.end()];
    let acc = checksum::pseudo_header(ip.src, ip.dst, ip.tcp_len) + checksum::sum(seg);
    write16(p, c, checksum::finish(acc));
}

/// Whether the TCP checksum verifies.
pub fn checksum_ok(p: &[u8], ip: &IpTcp) -> bool {
    let seg = &p[ip.tcp_offset..ip.end()];
    let acc = checksum::pseudo_header(ip.src, ip.dst, ip.tcp_len) + checksum::sum(seg);
    checksum::fold(acc) == 0xffff
}

/// Whether the IPv4 header checksum verifies (always true for IPv6, which has none).
pub fn ip_checksum_ok(p: &[u8], ip: &IpTcp) -> bool {
    ip.family == Family::V6 || checksum::fold(checksum::sum(&p[..ip.tcp_offset])) == 0xffff
}

/// Appends `option` (kind, length and data, as on the wire) to the TCP options, padding with
/// NOPs to a 4-byte boundary. Options after an EOL are dropped (they were never in effect).
/// The packet grows; IP lengths and all checksums are rewritten and the TCP checksum is left
/// complete. Returns the new layout.
pub fn add_option(p: &mut Vec<u8>, ip: &IpTcp, option: &[u8]) -> Result<IpTcp, Error> {
    let hdr_start = ip.tcp_offset;
    let opts_start = hdr_start + tcp::OPTIONS;
    let opts_end = hdr_start + ip.tcp_header_len;
    let mut used = 0;
    for item in TcpOptions::new(&p[opts_start..opts_end]) {
        let (at, opt) = item?;
        if opt == crate::TcpOption::Eol {
            break;
        }
        used = at
            + p[opts_start + at..].first().map_or(1, |&k| {
                if k == NOP {
                    1
                } else {
                    usize::from(p[opts_start + at + 1])
                }
            });
    }
    let mut opts = p[opts_start..opts_start + used].to_vec();
    opts.extend_from_slice(option);
    while opts.len() % 4 != 0 {
        opts.push(NOP);
    }
    if opts.len() > 40 {
        return Err(Error::OptionSpace {
            need: opts.len() - 40,
        });
    }
    let old_hl = ip.tcp_header_len;
    let new_hl = 20 + opts.len();
    let grow = new_hl as isize - old_hl as isize;
    let new_tcp_len = (ip.tcp_len as isize + grow) as usize;
    p.truncate(ip.end());
    p.splice(opts_start..opts_end, opts);
    p[hdr_start + tcp::OFFSET_BYTE] = ((new_hl / 4) as u8) << 4 | (p[hdr_start + 12] & 0x0f);
    let out = IpTcp {
        tcp_len: new_tcp_len,
        tcp_header_len: new_hl,
        ..*ip
    };
    set_ip_length(p, &out)?;
    complete_checksum(p, &out);
    Ok(out)
}

/// Writes the IP length fields (and the IPv4 header checksum) for the layout `ip`.
fn set_ip_length(p: &mut [u8], ip: &IpTcp) -> Result<(), Error> {
    match ip.family {
        Family::V4 => {
            let total = ip.end();
            let total16 = u16::try_from(total).map_err(|_| Error::TooLong(65535))?;
            write16(p, 2, total16);
            write16(p, 10, 0);
            let hc = checksum::finish(checksum::sum(&p[..ip.tcp_offset]));
            write16(p, 10, hc);
        }
        Family::V6 => {
            let payload = u16::try_from(ip.end() - 40).map_err(|_| Error::TooLong(65535 + 40))?;
            write16(p, 4, payload);
        }
    }
    Ok(())
}
