//! Hand-made IPv4/TCP packets, well-formed or not, for hostile-input tests.
//!
//! Unlike tcpseq's builders, nothing here refuses a bad field: option bytes are copied as given,
//! the data offset and the fragment fields can lie. Checksums are computed over whatever the
//! packet holds, so a packet is dropped by a kernel only for the defect a test put in it.

use std::net::Ipv4Addr;

/// TCP flag bits.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The options of a Linux SYN before rackd's: MSS 1460, SACK permitted, timestamps, NOP,
/// window scale 7 (20 bytes). `tsval` goes into the timestamp option.
pub fn linux_syn_options(tsval: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
    o
}

/// One IPv4 packet carrying a TCP segment. Fields a test does not set get ordinary values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// TCP option bytes, copied verbatim and padded with EOL to a multiple of 4.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// IPv4 option bytes, padded with EOL to a multiple of 4.
    pub ip_options: Vec<u8>,
    /// TCP data offset in 32-bit words; `None`: the true header length.
    pub data_offset: Option<u8>,
    pub ip_id: u16,
    pub ttl: u8,
}

impl Segment {
    /// A plain SYN without options.
    pub fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> Segment {
        Segment {
            src,
            dst,
            sport,
            dport,
            seq,
            ack: 0,
            flags: flags::SYN,
            window: 64_240,
            options: Vec::new(),
            payload: Vec::new(),
            ip_options: Vec::new(),
            data_offset: None,
            ip_id: 1,
            ttl: 64,
        }
    }

    pub fn with_options(mut self, options: Vec<u8>) -> Segment {
        self.options = options;
        self
    }

    /// The whole packet with valid IPv4 and TCP checksums (over whatever the fields say).
    pub fn to_bytes(&self) -> Vec<u8> {
        let ip_opts = padded(&self.ip_options);
        let tcp_opts = padded(&self.options);
        let ihl = 20 + ip_opts.len();
        let tcp_len = 20 + tcp_opts.len();
        let total = ihl + tcp_len + self.payload.len();
        let mut p = Vec::with_capacity(total);
        // IPv4 header.
        p.push(0x40 | (ihl / 4) as u8);
        p.push(0);
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&self.ip_id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0]); // don't fragment
        p.extend_from_slice(&[self.ttl, 6, 0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&ip_opts);
        // TCP header.
        let offset = self.data_offset.unwrap_or((tcp_len / 4) as u8);
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ack.to_be_bytes());
        p.extend_from_slice(&[offset << 4, self.flags]);
        p.extend_from_slice(&self.window.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        p.extend_from_slice(&tcp_opts);
        p.extend_from_slice(&self.payload);
        let ip_sum = checksum(&[&p[..ihl]]);
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let tcp_sum = tcp_checksum(self.src, self.dst, &p[ihl..]);
        p[ihl + 16..ihl + 18].copy_from_slice(&tcp_sum.to_be_bytes());
        p
    }
}

/// Splits a packet made by [`Segment::to_bytes`] (IPv4 header without options) into IPv4
/// fragments whose payloads start at the given byte offsets into the IP payload (multiples of
/// 8; the first must be 0). `last_more` keeps the more-fragments bit on the last piece, so the
/// datagram never completes.
pub fn fragment(packet: &[u8], cuts: &[usize], last_more: bool) -> Vec<Vec<u8>> {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let (header, payload) = packet.split_at(ihl);
    let mut ends: Vec<usize> = cuts.iter().skip(1).copied().collect();
    ends.push(payload.len());
    cuts.iter()
        .zip(ends)
        .enumerate()
        .map(|(i, (&start, end))| {
            let more = i + 1 < cuts.len() || last_more;
            let mut f = header.to_vec();
            f.extend_from_slice(&payload[start..end]);
            let total = f.len() as u16;
            f[2..4].copy_from_slice(&total.to_be_bytes());
            let field = (start / 8) as u16 | if more { 0x2000 } else { 0 };
            f[6..8].copy_from_slice(&field.to_be_bytes());
            f[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(&[&f[..ihl]]);
            f[10..12].copy_from_slice(&sum.to_be_bytes());
            f
        })
        .collect()
}

fn padded(options: &[u8]) -> Vec<u8> {
    let mut v = options.to_vec();
    v.resize(options.len().div_ceil(4) * 4, 0);
    v
}

fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let len = (segment.len() as u16).to_be_bytes();
    let pseudo = [0, 6, len[0], len[1]];
    checksum(&[&src.octets(), &dst.octets(), &pseudo, segment])
}

/// The Internet checksum over the concatenation of `parts` (each of even length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// splitmix64: reproducible pseudo-random numbers for ports, sequence numbers and tokens.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo)) as u32
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Segment {
        Segment::syn(
            Ipv4Addr::new(192, 0, 2, 2),
            40000,
            Ipv4Addr::new(198, 51, 100, 2),
            5001,
            77,
        )
        .with_options(linux_syn_options(9))
    }

    #[test]
    fn checksums_verify() {
        let p = sample().to_bytes();
        assert_eq!(p.len(), 20 + 40);
        assert_eq!(checksum(&[&p[..20]]), 0);
        assert_eq!(tcp_checksum(sample().src, sample().dst, &p[20..]), 0);
        assert_eq!(p[32] >> 4, 10, "data offset counts the options");
    }

    #[test]
    fn lying_data_offset_and_ip_options_are_kept() {
        let mut s = sample();
        s.data_offset = Some(15);
        s.ip_options = vec![1, 1, 1];
        let p = s.to_bytes();
        assert_eq!(p[0], 0x46);
        assert_eq!(p[24 + 12] >> 4, 15);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
    }

    #[test]
    fn fragments_reassemble_to_the_original_payload() {
        let p = sample().to_bytes();
        let frags = fragment(&p, &[0, 8, 24], false);
        assert_eq!(frags.len(), 3);
        let mut payload = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(checksum(&[&f[..20]]), 0);
            let field = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(field & 0x2000 != 0, i < 2, "more-fragments bit");
            assert_eq!(usize::from(field & 0x1fff) * 8, payload.len());
            payload.extend_from_slice(&f[20..]);
        }
        assert_eq!(payload, p[20..]);
    }
}
