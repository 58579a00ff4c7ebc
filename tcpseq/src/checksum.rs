//! The Internet checksum: full computation, pseudo-headers, and incremental update (RFC 1624).

use std::net::IpAddr;

/// The 32-bit one's-complement accumulation of `data` as big-endian 16-bit words.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold64(acc)
}

fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit accumulation to 16 bits (not complemented).
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum of a TCP segment of `tcp_len` bytes between `src` and `dst`.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u32 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(&s.octets()) + sum(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum(&s.octets()) + sum(&d.octets()),
        // Mixed families cannot occur in one packet; sum what there is.
        (s, d) => sum(&addr_bytes(s)) + sum(&addr_bytes(d)),
    };
    // IPv4 uses a 16-bit length, IPv6 a 32-bit one: the same sum for lengths below 2^16, and
    // the 32-bit form is right for both when split into two words.
    let len = tcp_len as u32;
    fold64(u64::from(addrs) + 6 + u64::from(len >> 16) + u64::from(len & 0xffff))
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The checksum field value for data whose accumulated sum is `acc`.
pub fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changed from `old` to `new`.
pub fn update(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// The new checksum after the bytes `old` were replaced by `new` (equal, even lengths,
/// word-aligned within the checksummed data).
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    // The sum of the words' complements is the complement of their sum.
    !fold(u32::from(!check) + u32::from(!fold(sum(old))) + u32::from(fold(sum(new))))
}

/// For a partial checksum (the field holds the folded pseudo-header sum, not complemented),
/// the new field after pseudo-header bytes changed from `old` to `new`.
pub fn update_bytes_partial(field: u16, old: &[u8], new: &[u8]) -> u16 {
    fold(u32::from(field) + u32::from(!fold(sum(old))) + u32::from(fold(sum(new))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
        assert_eq!(
            fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut data = [0x45u8, 0x00, 0x12, 0x34, 0xff, 0xff, 0x00, 0x01, 0xab, 0xcd];
        let check = finish(sum(&data));
        let old = [data[2], data[3], data[4], data[5]];
        data[2..6].copy_from_slice(&[0xde, 0xad, 0x00, 0x00]);
        let inc = update_bytes(check, &old, &data[2..6]);
        assert_eq!(inc, finish(sum(&data)));
        let w = update(check, 0x1234, 0xdead);
        data[2..6].copy_from_slice(&[0xde, 0xad, 0xff, 0xff]);
        assert_eq!(w, finish(sum(&data)));
    }
}
