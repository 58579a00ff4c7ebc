//! The data-integrity stream shared by the `rk-stream` program and the harness: deterministic
//! pseudo-random bytes from a seed, and the one-line JSON result the program prints.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An endless stream of pseudo-random bytes determined by a seed (splitmix64, little-endian
/// words). The bytes do not depend on how the stream is cut into buffers.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            state: seed,
            word: [0; 8],
            used: 8,
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut filled = 0;
        while filled < buf.len() {
            if self.used == self.word.len() {
                self.word = self.next_word().to_le_bytes();
                self.used = 0;
            }
            let n = (self.word.len() - self.used).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&self.word[self.used..self.used + n]);
            self.used += n;
            filled += n;
        }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Feeds the first `len` bytes of the stream for `seed` to `sink`, in chunks; stops at the
/// first error `sink` returns.
pub fn generate<E>(
    seed: u64,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        pattern.fill(&mut buf[..n]);
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The SHA-256 (hex) of the first `len` bytes of the stream for `seed`: what a receiver of an
/// intact transfer reports.
pub fn digest_of(seed: u64, len: u64) -> String {
    let mut hasher = Sha256::new();
    let done: Result<(), std::convert::Infallible> = generate(seed, len, |chunk| {
        hasher.update(chunk);
        Ok(())
    });
    match done {
        Ok(()) => hex(&hasher.finalize()),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What one end of an `rk-stream` transfer saw; printed by the program as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Bytes the kernel accepted from this end.
    pub bytes_sent: u64,
    /// Bytes this end read before end of stream or an error.
    pub bytes_received: u64,
    /// SHA-256 (hex) of the bytes sent.
    pub digest_sent: String,
    /// SHA-256 (hex) of the bytes received.
    pub digest_received: String,
    /// Time from connection to the end of both directions, in milliseconds.
    pub elapsed_ms: u64,
    /// The first error this end saw (`"read: ..."`, `"write: ..."`, `"connect: ..."`), if any.
    pub error: Option<String>,
}

impl StreamReport {
    /// Parses the program's result line.
    pub fn parse(line: &str) -> Result<StreamReport, serde_json::Error> {
        serde_json::from_str(line.trim())
    }

    /// The result line.
    pub fn to_line(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_independent_of_buffer_sizes() {
        let mut whole = vec![0u8; 1000];
        Pattern::new(7).fill(&mut whole);
        let mut pieces = Vec::new();
        let mut p = Pattern::new(7);
        for size in [1, 3, 8, 13, 100, 875] {
            let mut buf = vec![0u8; size];
            p.fill(&mut buf);
            pieces.extend_from_slice(&buf);
        }
        assert_eq!(whole, pieces);
    }

    #[test]
    fn seeds_give_different_streams() {
        assert_ne!(digest_of(1, 4096), digest_of(2, 4096));
        assert_eq!(digest_of(1, 4096), digest_of(1, 4096));
    }

    #[test]
    fn digest_of_matches_sha256_of_the_bytes() {
        let mut bytes = vec![0u8; 100_000];
        Pattern::new(3).fill(&mut bytes);
        assert_eq!(digest_of(3, 100_000), hex(&Sha256::digest(&bytes)));
        // SHA-256 of nothing, the well-known value.
        assert_eq!(
            digest_of(3, 0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn report_line_round_trips() {
        let report = StreamReport {
            bytes_sent: 5,
            bytes_received: 6,
            digest_sent: "ab".into(),
            digest_received: "cd".into(),
            elapsed_ms: 7,
            error: Some("read: Connection timed out (os error 110)".into()),
        };
        assert_eq!(StreamReport::parse(&report.to_line()).unwrap(), report);
        assert!(StreamReport::parse("not json").is_err());
    }
}
