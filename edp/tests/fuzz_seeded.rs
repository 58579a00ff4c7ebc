//! The fuzz target's checks over a fixed-seed stream of inputs: mutations of valid messages
//! (bit flips, byte changes, truncation, splicing, length-field edits) and random bytes.

use edp::fuzzing::{exercise, seeds};
use std::time::Instant;

const INPUTS: usize = 300_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    if rng.below(8) == 0 {
        let len = rng.below(64);
        out.extend((0..len).map(|_| rng.next() as u8));
        return;
    }
    out.extend_from_slice(&seeds[rng.below(seeds.len())]);
    for _ in 0..=rng.below(3) {
        let len = out.len();
        match rng.below(6) {
            0 if len > 0 => out[rng.below(len)] ^= 1 << rng.below(8),
            1 if len > 0 => out[rng.below(len)] = rng.next() as u8,
            2 => out.truncate(rng.below(len + 1)),
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                out.extend_from_slice(&other[rng.below(other.len())..]);
            }
            // Frame length field: small, exact-ish, or huge.
            4 if len >= 2 => {
                let v = [rng.below(len + 4) as u16, u16::MAX, 513, 0][rng.below(4)];
                out[..2].copy_from_slice(&v.to_be_bytes());
            }
            _ if len > 0 => out.insert(rng.below(len), rng.next() as u8),
            _ => {}
        }
    }
}

#[test]
fn hundreds_of_thousands_of_mutated_inputs_never_panic() {
    let seeds = seeds();
    for seed in &seeds {
        exercise(seed);
    }
    let mut rng = Rng(0x0005_EED0_FED9);
    let mut input = Vec::new();
    let started = Instant::now();
    let mut valid = 0;
    for _ in 0..INPUTS {
        mutate(&mut rng, &seeds, &mut input);
        exercise(&input);
        valid += usize::from(matches!(edp::message::Message::decode(&input), Ok(Some(_))));
    }
    eprintln!(
        "{INPUTS} inputs ({valid} valid frames) in {:?}",
        started.elapsed()
    );
    // The mutations must also reach the paths behind successful parsing.
    assert!(valid > INPUTS / 100, "only {valid} inputs decoded");
}
