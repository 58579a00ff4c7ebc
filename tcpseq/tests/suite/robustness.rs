//! A fixed-seed run over a million random and mutated inputs through the same entry point as
//! the cargo-fuzz target: parsing, every accessor and every rewrite must neither panic nor
//! index out of bounds, and a repaired packet must verify.

use tcpseq::fuzzing::{exercise, PARAMS};
use tcpseq::TcpIpPacket;

use crate::common::*;

/// xorshift64: fixed seed, no dependency, fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for v6 in [false, true] {
        v.push(linux_syn(v6, u32::MAX));
        v.push(sack_data(v6, 1, 2, b"payload bytes"));
    }
    v.push(with_ipv4_options(&sack_data(false, 3, 4, b"o"), 2));
    v.push(with_ipv6_dest_opts(&linux_syn(true, 5), 2));
    v
}

#[test]
fn a_million_random_and_mutated_inputs_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut input = Vec::with_capacity(2048);
    let mut parsed = 0u32;
    for i in 0..1_000_000u32 {
        input.clear();
        input.extend((0..PARAMS).map(|_| rng.next() as u8));
        if i % 4 == 0 {
            let len = rng.below(128);
            let start = input.len();
            input.extend((0..len).map(|_| rng.next() as u8));
            // Often make it look like IP so the deeper layers are reached.
            if let Some(b) = input.get_mut(start) {
                *b = [0x45, 0x60, *b][rng.below(3)];
            }
        } else {
            let start = input.len();
            input.extend_from_slice(&seeds[rng.below(seeds.len())]);
            for _ in 0..1 + rng.below(4) {
                let at = start + rng.below(input.len() - start);
                input[at] = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            match rng.below(8) {
                0 => input.truncate(start + rng.below(input.len() - start + 1)),
                1 => input.extend((0..rng.below(48)).map(|_| rng.next() as u8)),
                _ => {}
            }
        }
        parsed += u32::from(TcpIpPacket::new_checked(&input[PARAMS..]).is_ok());
        exercise(&input);
    }
    assert!(
        parsed > 200_000,
        "too few inputs reached the rewrites: {parsed}"
    );
}

/// The committed fuzz seed corpus is the seeds above with zeroed parameters; this keeps it in
/// step with them (set `TCPSEQ_WRITE_SEEDS=1` to rewrite it).
#[test]
fn fuzz_seed_corpus_matches_the_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_rewrite");
    for (i, seed) in seeds().iter().enumerate() {
        let mut want = vec![0u8; PARAMS];
        want.extend_from_slice(seed);
        let path = dir.join(format!("seed-{i:02}"));
        if std::env::var_os("TCPSEQ_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with TCPSEQ_WRITE_SEEDS=1)", path.display()));
        assert_eq!(have, want, "{} is stale", path.display());
        exercise(&have);
    }
}
