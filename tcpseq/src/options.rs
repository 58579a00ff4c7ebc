//! TCP options: a parsing iterator that reports malformed lengths instead of guessing.

use crate::Error;

pub const EOL: u8 = 0;
pub const NOP: u8 = 1;
pub const MSS: u8 = 2;
pub const WINDOW_SCALE: u8 = 3;
pub const SACK_PERMITTED: u8 = 4;
pub const SACK: u8 = 5;
pub const TIMESTAMPS: u8 = 8;
/// RFC 6994 shared experimental option kinds.
pub const EXPERIMENTAL: [u8; 2] = [253, 254];

/// One option, borrowing its data from the packet. `at` offsets are relative to the start of
/// the options area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    Eol,
    Nop,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    /// Up to four (left, right) edges, raw bytes in pairs of u32.
    Sack(&'a [u8]),
    Timestamps {
        tsval: u32,
        tsecr: u32,
    },
    /// RFC 6994: kind 253/254 with a 16-bit ExID.
    Experimental {
        kind: u8,
        exid: u16,
        data: &'a [u8],
    },
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

/// Iterates over options; yields `(offset, option)` and stops after an error or EOL.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> TcpOptions<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<(usize, TcpOption<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at >= self.bytes.len() {
            return None;
        }
        let at = self.at;
        let kind = self.bytes[at];
        match kind {
            EOL => {
                self.done = true;
                return Some(Ok((at, TcpOption::Eol)));
            }
            NOP => {
                self.at += 1;
                return Some(Ok((at, TcpOption::Nop)));
            }
            _ => {}
        }
        let bad = |len| {
            Some(Err(Error::OptionLength {
                kind,
                at: at + crate::tcp::OPTIONS,
                len,
            }))
        };
        let Some(&len) = self.bytes.get(at + 1) else {
            self.done = true;
            return bad(1);
        };
        let len = usize::from(len);
        if len < 2 || at + len > self.bytes.len() {
            self.done = true;
            return bad(len);
        }
        let data = &self.bytes[at + 2..at + len];
        let opt = match (kind, data.len()) {
            (MSS, 2) => TcpOption::Mss(u16::from_be_bytes([data[0], data[1]])),
            (WINDOW_SCALE, 1) => TcpOption::WindowScale(data[0]),
            (SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (SACK, n) if n % 8 == 0 && (8..=32).contains(&n) => TcpOption::Sack(data),
            (TIMESTAMPS, 8) => TcpOption::Timestamps {
                tsval: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                tsecr: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            },
            (MSS | WINDOW_SCALE | SACK_PERMITTED | SACK | TIMESTAMPS, _) => {
                self.done = true;
                return bad(len);
            }
            (k, n) if EXPERIMENTAL.contains(&k) && n >= 2 => TcpOption::Experimental {
                kind: k,
                exid: u16::from_be_bytes([data[0], data[1]]),
                data: &data[2..],
            },
            (k, _) => TcpOption::Unknown { kind: k, data },
        };
        self.at += len;
        Some(Ok((at, opt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(b: &[u8]) -> Vec<Result<TcpOption<'_>, Error>> {
        TcpOptions::new(b).map(|r| r.map(|(_, o)| o)).collect()
    }

    #[test]
    fn linux_syn_options() {
        let b = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let opts: Vec<_> = all(&b).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            opts,
            [
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 0 },
                TcpOption::Nop,
                TcpOption::WindowScale(7)
            ]
        );
    }

    #[test]
    fn malformed_lengths_are_errors() {
        for b in [
            &[2u8][..],
            &[2, 0],
            &[2, 1],
            &[2, 5, 0, 0],
            &[8, 9, 0, 0, 0, 0, 0, 0, 0],
            &[99, 10],
        ] {
            assert!(all(b).iter().any(Result::is_err), "{b:?}");
        }
    }

    #[test]
    fn experimental_and_unknown_are_kept() {
        let b = [253, 6, 0x72, 0x6b, 1, 2, 30, 3, 9];
        let opts: Vec<_> = all(&b).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            opts,
            [
                TcpOption::Experimental {
                    kind: 253,
                    exid: 0x726b,
                    data: &[1, 2]
                },
                TcpOption::Unknown {
                    kind: 30,
                    data: &[9]
                }
            ]
        );
    }
}
