//! The rackd SYN option: an RFC 6994 experimental option (kind 253, ExID "rk") carrying a
//! version and the sender's connection token. Ten bytes, so it fits next to the 20 bytes of
//! options a Linux SYN carries.
//!
//! ```text
//! kind=253 | len=10 | ExID 0x72 0x6b | version | flags | token (u32, big-endian)
//! ```

/// Experimental option kind (RFC 6994 shared kind).
pub const KIND: u8 = 253;
/// "rk".
pub const EXID: u16 = 0x726b;
pub const VERSION: u8 = 1;
const LEN: usize = 10;

pub fn encode(token: u32) -> [u8; LEN] {
    let mut o = [0u8; LEN];
    o[0] = KIND;
    o[1] = LEN as u8;
    o[2..4].copy_from_slice(&EXID.to_be_bytes());
    o[4] = VERSION;
    o[5] = 0;
    o[6..10].copy_from_slice(&token.to_be_bytes());
    o
}

/// The token of a rackd option, given the option's kind, ExID and the data after the ExID.
/// Later versions are understood as long as they keep the token where version 1 has it.
pub fn decode(kind: u8, exid: u16, data: &[u8]) -> Option<u32> {
    if kind != KIND || exid != EXID {
        return None;
    }
    match data {
        [version, _flags, t0, t1, t2, t3, ..] if *version >= 1 => {
            Some(u32::from_be_bytes([*t0, *t1, *t2, *t3]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let o = encode(0xdead_beef);
        assert_eq!(
            decode(o[0], u16::from_be_bytes([o[2], o[3]]), &o[4..]),
            Some(0xdead_beef)
        );
        assert_eq!(decode(254, EXID, &o[4..]), None);
        assert_eq!(decode(KIND, 0x1234, &o[4..]), None);
        assert_eq!(decode(KIND, EXID, &o[4..8]), None, "too short");
        assert_eq!(decode(KIND, EXID, &[0, 0, 1, 2, 3, 4]), None, "version 0");
        let mut future = o[4..].to_vec();
        future[0] = 7;
        future.extend_from_slice(&[9, 9]);
        assert_eq!(decode(KIND, EXID, &future), Some(0xdead_beef));
    }
}
