//! TCP options: a parsing iterator that reports malformed lengths instead of guessing, and
//! the encoder used by the builders and by option insertion.

use crate::seq::SeqNum;
use crate::Error;

pub const EOL: u8 = 0;
pub const NOP: u8 = 1;
pub const MSS: u8 = 2;
pub const WINDOW_SCALE: u8 = 3;
pub const SACK_PERMITTED: u8 = 4;
pub const SACK: u8 = 5;
pub const TIMESTAMPS: u8 = 8;
/// RFC 6994 shared experimental option kinds (followed by a 16-bit ExID).
pub const EXPERIMENTAL: [u8; 2] = [253, 254];
/// The most option bytes a TCP header can hold (60 - 20).
pub const MAX_LEN: usize = 40;

/// One or more SACK blocks as on the wire: pairs of big-endian (left, right) edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlocks<'a>(&'a [u8]);

impl<'a> SackBlocks<'a> {
    /// Wraps raw edges; `None` unless the length is 8, 16, 24 or 32 bytes.
    pub fn new(raw: &'a [u8]) -> Option<Self> {
        (raw.len() % 8 == 0 && (8..=32).contains(&raw.len())).then_some(SackBlocks(raw))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Number of blocks (1 to 4).
    pub fn len(&self) -> usize {
        self.0.len() / 8
    }

    /// Always false: a SACK option has at least one block.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The blocks as (left, right) edges.
    pub fn iter(&self) -> impl Iterator<Item = (SeqNum, SeqNum)> + 'a {
        self.0.chunks_exact(8).map(|b| {
            (
                SeqNum(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                SeqNum(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
            )
        })
    }

    /// Encodes blocks into `out`, returning the used part; `None` for 0 or more than 4 blocks.
    pub fn encode(blocks: &[(SeqNum, SeqNum)], out: &'a mut [u8; 32]) -> Option<SackBlocks<'a>> {
        if blocks.is_empty() || blocks.len() > 4 {
            return None;
        }
        for (chunk, (l, r)) in out.chunks_exact_mut(8).zip(blocks) {
            chunk[..4].copy_from_slice(&l.0.to_be_bytes());
            chunk[4..].copy_from_slice(&r.0.to_be_bytes());
        }
        Some(SackBlocks(&out[..blocks.len() * 8]))
    }
}

/// One option, borrowing its data from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of option list; the iterator stops after it.
    Eol,
    Nop,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    Sack(SackBlocks<'a>),
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
    /// Any other kind, kept verbatim so it passes through untouched.
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// The option's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            TcpOption::Eol => EOL,
            TcpOption::Nop => NOP,
            TcpOption::Mss(_) => MSS,
            TcpOption::WindowScale(_) => WINDOW_SCALE,
            TcpOption::SackPermitted => SACK_PERMITTED,
            TcpOption::Sack(_) => SACK,
            TcpOption::Timestamps { .. } => TIMESTAMPS,
            TcpOption::Experimental { kind, .. } | TcpOption::Unknown { kind, .. } => *kind,
        }
    }

    /// Bytes on the wire, kind and length included.
    pub fn wire_len(&self) -> usize {
        match self {
            TcpOption::Eol | TcpOption::Nop => 1,
            TcpOption::Mss(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(b) => 2 + b.as_bytes().len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Experimental { data, .. } => 4 + data.len(),
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option to the start of `out` and returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let len = self.wire_len();
        if len > MAX_LEN {
            return Err(Error::OptionSpace { need: len });
        }
        let have = out.len();
        let out = out
            .get_mut(..len)
            .ok_or(Error::BufferTooSmall { need: len, have })?;
        out[0] = self.kind();
        if len > 1 {
            out[1] = len as u8;
        }
        match self {
            TcpOption::Eol | TcpOption::Nop | TcpOption::SackPermitted => {}
            TcpOption::Mss(m) => out[2..].copy_from_slice(&m.to_be_bytes()),
            TcpOption::WindowScale(s) => out[2] = *s,
            TcpOption::Sack(b) => out[2..].copy_from_slice(b.as_bytes()),
            TcpOption::Timestamps { tsval, tsecr } => {
                out[2..6].copy_from_slice(&tsval.to_be_bytes());
                out[6..10].copy_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::Experimental { exid, data, .. } => {
                out[2..4].copy_from_slice(&exid.to_be_bytes());
                out[4..].copy_from_slice(data);
            }
            TcpOption::Unknown { data, .. } => out[2..].copy_from_slice(data),
        }
        Ok(len)
    }
}

/// Encodes `options` into `out`, zero-padded (EOL) to a multiple of 4; returns the length.
pub fn encode(options: &[TcpOption<'_>], out: &mut [u8; MAX_LEN]) -> Result<usize, Error> {
    let need: usize = options.iter().map(TcpOption::wire_len).sum();
    let padded = need.next_multiple_of(4);
    if padded > MAX_LEN {
        return Err(Error::OptionSpace { need: padded });
    }
    let mut at = 0;
    for o in options {
        at += o.emit(&mut out[at..])?;
    }
    out[at..padded].fill(EOL);
    Ok(padded)
}

/// Iterates over the options area of a TCP header. Stops after EOL, at the end, or after the
/// first malformed option (which it yields as an error).
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> TcpOptions<'a> {
    /// Iterates over `bytes`, the options area (header bytes 20 to the data offset).
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            done: false,
        }
    }

    /// Like `next`, also giving the option's offset within the options area.
    pub fn next_at(&mut self) -> Option<Result<(usize, TcpOption<'a>), Error>> {
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
                at: at + crate::tcp::OPTIONS_START,
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
            (TIMESTAMPS, 8) => TcpOption::Timestamps {
                tsval: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                tsecr: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            },
            (SACK, _) => match SackBlocks::new(data) {
                Some(b) => TcpOption::Sack(b),
                None => {
                    self.done = true;
                    return bad(len);
                }
            },
            (MSS | WINDOW_SCALE | SACK_PERMITTED | TIMESTAMPS, _) => {
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

    /// Checks the whole area; returns the length of the meaningful part (up to and excluding
    /// EOL).
    pub fn validate(bytes: &'a [u8]) -> Result<usize, Error> {
        let mut it = Self::new(bytes);
        let mut end = 0;
        while let Some(item) = it.next_at() {
            let (at, opt) = item?;
            if opt == TcpOption::Eol {
                break;
            }
            end = at + opt.wire_len();
        }
        Ok(end)
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_at().map(|r| r.map(|(_, o)| o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(b: &[u8]) -> Vec<Result<TcpOption<'_>, Error>> {
        TcpOptions::new(b).collect()
    }

    const LINUX_SYN: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn linux_syn_options() {
        let opts: Vec<_> = all(&LINUX_SYN).into_iter().map(Result::unwrap).collect();
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
        let mut out = [0u8; MAX_LEN];
        assert_eq!(encode(&opts, &mut out), Ok(20));
        assert_eq!(out[..20], LINUX_SYN);
    }

    #[test]
    fn malformed_lengths_are_errors() {
        for b in [
            &[2u8][..],
            &[2, 0],
            &[2, 1],
            &[2, 5, 0, 0],
            &[3, 2],
            &[4, 3, 0],
            &[5, 2],
            &[5, 9, 0, 0, 0, 0, 0, 0, 0],
            &[8, 9, 0, 0, 0, 0, 0, 0, 0],
            &[99, 10],
            &[1, 1, 253, 1],
        ] {
            let got = all(b);
            assert!(
                matches!(got.last(), Some(Err(Error::OptionLength { .. }))),
                "{b:?}: {got:?}"
            );
        }
        assert_eq!(
            all(&[1, 77, 3]),
            [
                Ok(TcpOption::Nop),
                Err(Error::OptionLength {
                    kind: 77,
                    at: 21,
                    len: 3
                })
            ]
        );
    }

    #[test]
    fn eol_ends_the_list() {
        assert_eq!(
            all(&[1, 0, 2, 4, 0, 1]),
            [Ok(TcpOption::Nop), Ok(TcpOption::Eol)]
        );
        assert_eq!(TcpOptions::validate(&[1, 0, 2, 4, 0, 1]), Ok(1));
        assert_eq!(TcpOptions::validate(&LINUX_SYN), Ok(20));
    }

    #[test]
    fn sack_blocks_round_trip() {
        let mut raw = [0u8; 32];
        let blocks = [(SeqNum(1), SeqNum(2)), (SeqNum(u32::MAX), SeqNum(5))];
        let s = SackBlocks::encode(&blocks, &mut raw).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), blocks);
        let mut wire = vec![5, 18];
        wire.extend_from_slice(s.as_bytes());
        assert_eq!(all(&wire), [Ok(TcpOption::Sack(s))]);
        assert!(SackBlocks::new(&[0; 7]).is_none());
        assert!(SackBlocks::new(&[0; 40]).is_none());
    }

    #[test]
    fn experimental_and_unknown_are_kept() {
        let b = [253, 6, 0x72, 0x6b, 1, 2, 30, 3, 9, 254, 2];
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
                },
                // Too short for an ExID: kept as an unknown option.
                TcpOption::Unknown {
                    kind: 254,
                    data: &[]
                }
            ]
        );
        let mut out = [0u8; MAX_LEN];
        assert_eq!(encode(&opts, &mut out), Ok(12));
        assert_eq!(out[..12], [253, 6, 0x72, 0x6b, 1, 2, 30, 3, 9, 254, 2, 0]);
    }

    #[test]
    fn encoding_more_than_forty_bytes_fails() {
        let big = [TcpOption::Unknown {
            kind: 30,
            data: &[0; 30],
        }; 2];
        let mut out = [0u8; MAX_LEN];
        assert_eq!(encode(&big, &mut out), Err(Error::OptionSpace { need: 64 }));
        let huge = TcpOption::Unknown {
            kind: 30,
            data: &[0; 300],
        };
        assert_eq!(
            huge.emit(&mut [0u8; 400]),
            Err(Error::OptionSpace { need: 302 })
        );
    }
}
