//! The Internet checksum (RFC 1071): full sums, pseudo-headers and incremental update
//! (RFC 1624).
//!
//! Sums are kept as `u32` one's-complement accumulators of big-endian 16-bit words; [`fold`]
//! reduces one to 16 bits and [`finish`] gives the checksum field value.

use std::net::IpAddr;

/// The one's-complement accumulation of `data` as big-endian 16-bit words (an odd last byte
/// is padded with zero). Not folded: pass it to [`fold`] or [`finish`].
pub fn sum(data: &[u8]) -> u32 {
    // Summing 32-bit words is equivalent modulo 0xffff (2^16 = 1 there) and halves the work.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    // At most 3 bytes, placed as the high bytes of a zero-padded word (no memcpy call).
    for (i, &b) in words.remainder().iter().enumerate() {
        acc += u64::from(b) << (24 - 8 * i);
    }
    fold64(acc)
}

fn fold64(acc: u64) -> u32 {
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc as u32
}

/// Folds an accumulation to 16 bits (not complemented).
pub fn fold(acc: u32) -> u16 {
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// Adds two accumulations without losing carries.
pub fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// The checksum field value for data whose accumulated sum (pseudo-header included) is `acc`.
pub fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// The TCP pseudo-header sum for a segment of `tcp_len` bytes. The IPv4 form has a 16-bit
/// length and the IPv6 form a 32-bit one; both sum the same as two 16-bit words.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u32 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => add(sum(&s.octets()), sum(&d.octets())),
        (IpAddr::V6(s), IpAddr::V6(d)) => add(sum(&s.octets()), sum(&d.octets())),
        (IpAddr::V4(s), IpAddr::V6(d)) => add(sum(&s.octets()), sum(&d.octets())),
        (IpAddr::V6(s), IpAddr::V4(d)) => add(sum(&s.octets()), sum(&d.octets())),
    };
    let len = tcp_len as u64;
    fold64(u64::from(addrs) + u64::from(crate::PROTO_TCP) + (len >> 16) + (len & 0xffff))
}

/// RFC 1624 eqn. 3 for a complete checksum: the new field after data whose sum was `old`
/// now sums to `new`: `HC' = ~(~HC + ~m + m')`.
pub fn update(check: u16, old: u32, new: u32) -> u16 {
    !fold(add(
        add(u32::from(!check), u32::from(!fold(old))),
        u32::from(fold(new)),
    ))
}

/// The same for a partial checksum field, which holds a non-complemented sum:
/// `S' = S + ~m + m'`.
pub fn update_partial(field: u16, old: u32, new: u32) -> u16 {
    !update(!field, old, new)
}

/// The accumulation of a big-endian 16-bit value (for length fields).
pub fn word(v: u16) -> u32 {
    u32::from(v)
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
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(fold(sum(&[0xff])), 0xff00);
    }

    #[test]
    fn wide_sum_equals_word_sum() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut acc = 0u32;
        for c in data.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            acc = add(acc, u32::from(w));
        }
        assert_eq!(fold(sum(&data)), fold(acc));
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut data = [0x45u8, 0x00, 0x12, 0x34, 0xff, 0xff, 0x00, 0x01, 0xab, 0xcd];
        let check = finish(sum(&data));
        let old = sum(&data[2..6]);
        data[2..6].copy_from_slice(&[0xde, 0xad, 0x00, 0x00]);
        let inc = update(check, old, sum(&data[2..6]));
        assert_eq!(inc, finish(sum(&data)));
        // And it verifies: data plus checksum sums to all ones.
        assert_eq!(fold(add(sum(&data), u32::from(inc))), 0xffff);
    }

    #[test]
    fn partial_update_tracks_the_plain_sum() {
        let a = [0xc0, 0x00, 0x02, 0x01];
        let b = [0xcb, 0x00, 0x71, 0x09];
        let field = fold(sum(&a));
        assert_eq!(update_partial(field, sum(&a), sum(&b)), fold(sum(&b)));
    }
}
