//! The rackd SYN option: an RFC 6994 experimental TCP option that says "a rackd is here".
//!
//! ```text
//!  0        1        2        3        4        5        6 .. 9
//! +--------+--------+--------+--------+--------+--------+-----------------+
//! | kind   | length |  ExID 0x726B    |version | flags  | token (u32, BE) |
//! | 253    | 6 / 10 |  ("rk")         |        |        | optional        |
//! +--------+--------+--------+--------+--------+--------+-----------------+
//! ```
//!
//! The option is 6 bytes without a token and 10 with one, well inside the ~20 bytes a Linux SYN
//! leaves free. It never carries sequence numbers (middleboxes rewrite ISNs). A peer announcing a
//! newer version is accepted and spoken to in ours ([`SynOption::negotiate`]); a newer version may
//! append bytes after the token, which are ignored. Version 0, a wrong length or a foreign ExID is
//! an error, never a panic.

use thiserror::Error;

/// TCP option kind for RFC 6994 experiments (253; 254 is the other experimental kind).
pub const KIND: u8 = 253;
/// Our RFC 6994 experiment identifier, "rk" in ASCII.
pub const EXID: u16 = 0x726B;
/// The highest option version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the option without a token (kind, length, ExID, version, flags).
pub const LEN_BARE: usize = 6;
/// Length of the option with a 32-bit token.
pub const LEN_WITH_TOKEN: usize = 10;
/// Longest option we accept (a newer version may append up to 10 bytes to a version 1 option).
pub const LEN_MAX: usize = 20;

/// Flag bits of the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SynFlags(pub u8);

impl SynFlags {
    /// Set by the server's rackd in the SYN-ACK: "I saw your option and I am a rackd too".
    pub const ECHO: SynFlags = SynFlags(0x01);
    /// The sender can resume connections (always set by version 1 implementations).
    pub const RESUME: SynFlags = SynFlags(0x02);

    pub fn contains(self, other: SynFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SynFlags {
    type Output = SynFlags;
    fn bitor(self, rhs: SynFlags) -> SynFlags {
        SynFlags(self.0 | rhs.0)
    }
}

/// A decoded rackd SYN option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SynOption {
    /// The sender's highest version (may exceed [`VERSION`]).
    pub version: u8,
    pub flags: SynFlags,
    /// A short per-connection token that ties the SYN to the later initialisation.
    pub token: Option<u32>,
}

/// Why bytes are not a valid rackd option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OptionError {
    #[error("option truncated: {0} bytes, need at least {LEN_BARE}")]
    Truncated(usize),
    #[error("option kind {0} is not an RFC 6994 experimental kind (253/254)")]
    WrongKind(u8),
    #[error("option length byte {length} disagrees with the {available} bytes given")]
    LengthMismatch { length: u8, available: usize },
    #[error("option ExID {0:#06x} is not rackd's ({EXID:#06x})")]
    ForeignExid(u16),
    #[error("option version 0 is invalid")]
    VersionZero,
    #[error("version {version} option has invalid length {length}")]
    BadLength { version: u8, length: usize },
}

impl SynOption {
    /// A version-[`VERSION`] option.
    pub fn new(flags: SynFlags, token: Option<u32>) -> Self {
        SynOption {
            version: VERSION,
            flags,
            token,
        }
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        if self.token.is_some() {
            LEN_WITH_TOKEN
        } else {
            LEN_BARE
        }
    }

    /// Never true; present because `len` is.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole option (kind, length, ExID, body), ready for insertion into a TCP header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&[KIND, self.len() as u8]);
        out.extend_from_slice(&EXID.to_be_bytes());
        out.extend_from_slice(&self.encode_body());
        out
    }

    /// Only the body after the ExID (version, flags, token), for callers whose option builder adds
    /// kind, length and ExID itself.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = vec![self.version, self.flags.0];
        if let Some(token) = self.token {
            out.extend_from_slice(&token.to_be_bytes());
        }
        out
    }

    /// Decodes a whole option starting at its kind byte. `bytes` must be exactly the option (as a
    /// TCP option iterator yields it).
    pub fn decode(bytes: &[u8]) -> Result<SynOption, OptionError> {
        if bytes.len() < LEN_BARE {
            return Err(OptionError::Truncated(bytes.len()));
        }
        if bytes[0] != 253 && bytes[0] != 254 {
            return Err(OptionError::WrongKind(bytes[0]));
        }
        if usize::from(bytes[1]) != bytes.len() {
            return Err(OptionError::LengthMismatch {
                length: bytes[1],
                available: bytes.len(),
            });
        }
        let exid = u16::from_be_bytes([bytes[2], bytes[3]]);
        if exid != EXID {
            return Err(OptionError::ForeignExid(exid));
        }
        Self::decode_body(&bytes[4..])
    }

    /// Decodes the body after the ExID (as tcpseq's `TcpOption::Experimental { data, .. }`).
    pub fn decode_body(body: &[u8]) -> Result<SynOption, OptionError> {
        let length = body.len() + 4;
        let (&version, rest) = body.split_first().ok_or(OptionError::Truncated(length))?;
        let (&flags, rest) = rest.split_first().ok_or(OptionError::Truncated(length))?;
        if version == 0 {
            return Err(OptionError::VersionZero);
        }
        let bad = OptionError::BadLength { version, length };
        let token = match rest.len() {
            0 => None,
            // A newer version may append fields after the token; version 1 may not.
            n if n == 4 || (version > VERSION && n > 4 && length <= LEN_MAX) => {
                Some(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))
            }
            _ => return Err(bad),
        };
        Ok(SynOption {
            version,
            flags: SynFlags(flags),
            token,
        })
    }

    /// The version both sides speak: the lower of ours and the peer's.
    pub fn negotiate(&self) -> u8 {
        self.version.min(VERSION)
    }

    /// The option a server's rackd puts in the SYN-ACK in answer to this one: same token, ECHO set,
    /// version negotiated down to what both speak.
    pub fn echo(&self, flags: SynFlags) -> SynOption {
        SynOption {
            version: self.negotiate(),
            flags: flags | SynFlags::ECHO,
            token: self.token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_with_token() {
        let opt = SynOption::new(SynFlags::RESUME, Some(0xDEAD_BEEF));
        let bytes = opt.encode();
        assert_eq!(bytes, [253, 10, 0x72, 0x6B, 1, 2, 0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(opt.len(), bytes.len());
        assert_eq!(SynOption::decode(&bytes), Ok(opt));
        assert_eq!(SynOption::decode_body(&bytes[4..]), Ok(opt));
    }

    #[test]
    fn golden_bytes_without_token() {
        let opt = SynOption::new(SynFlags(0), None);
        assert_eq!(opt.encode(), [253, 6, 0x72, 0x6B, 1, 0]);
        assert_eq!(opt.encode_body(), [1, 0]);
        assert_eq!(SynOption::decode(&opt.encode()), Ok(opt));
    }

    #[test]
    fn kind_254_is_accepted() {
        let opt = SynOption::decode(&[254, 6, 0x72, 0x6B, 1, 3]).unwrap();
        assert!(opt.flags.contains(SynFlags::ECHO | SynFlags::RESUME));
    }

    #[test]
    fn newer_version_is_tolerated_and_negotiated_down() {
        let mut bytes = vec![
            253, 14, 0x72, 0x6B, 7, 2, 0, 0, 0, 9, 0xAA, 0xBB, 0xCC, 0xDD,
        ];
        let opt = SynOption::decode(&bytes).unwrap();
        assert_eq!((opt.version, opt.token, opt.negotiate()), (7, Some(9), 1));
        let echo = opt.echo(SynFlags::RESUME);
        assert_eq!(echo.version, 1);
        assert!(echo.flags.contains(SynFlags::ECHO));
        assert_eq!(echo.token, Some(9));
        // A newer version still may not exceed the option space.
        bytes.extend_from_slice(&[0; 8]);
        bytes[1] = bytes.len() as u8;
        assert!(matches!(
            SynOption::decode(&bytes),
            Err(OptionError::BadLength { .. })
        ));
    }

    #[test]
    fn garbage_is_rejected() {
        use OptionError::*;
        assert_eq!(SynOption::decode(&[]), Err(Truncated(0)));
        assert_eq!(
            SynOption::decode(&[253, 5, 0x72, 0x6B, 1]),
            Err(Truncated(5))
        );
        assert_eq!(
            SynOption::decode(&[2, 6, 0x72, 0x6B, 1, 0]),
            Err(WrongKind(2))
        );
        assert_eq!(
            SynOption::decode(&[253, 9, 0x72, 0x6B, 1, 0]),
            Err(LengthMismatch {
                length: 9,
                available: 6
            })
        );
        assert_eq!(
            SynOption::decode(&[253, 6, 0x12, 0x34, 1, 0]),
            Err(ForeignExid(0x1234))
        );
        assert_eq!(
            SynOption::decode(&[253, 6, 0x72, 0x6B, 0, 0]),
            Err(VersionZero)
        );
        assert_eq!(
            SynOption::decode(&[253, 8, 0x72, 0x6B, 1, 0, 1, 2]),
            Err(BadLength {
                version: 1,
                length: 8
            })
        );
        assert_eq!(
            SynOption::decode(&[253, 11, 0x72, 0x6B, 1, 0, 1, 2, 3, 4, 5]),
            Err(BadLength {
                version: 1,
                length: 11
            })
        );
        assert_eq!(SynOption::decode_body(&[1]), Err(Truncated(5)));
    }

    #[test]
    fn every_short_input_is_an_error_not_a_panic() {
        let mut state = 0x1234_5678_u32;
        for _ in 0..20_000 {
            let len = (state % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            if let Ok(opt) = SynOption::decode(&bytes) {
                assert_eq!(opt.encode()[4..6], bytes[4..6]);
            }
            let _ = SynOption::decode_body(&bytes);
        }
    }
}
