//! Peer detection, key exchange and resumption for rackd.
//!
//! Everything except [`net`] is sans-IO: codecs take and return bytes, state machines take
//! `(now, event)` and return what to do. `README.md` beside this crate is the protocol
//! specification (wire formats, key schedule, state diagrams).
//!
//! - [`option`]: the SYN option (RFC 6994 experimental, ExID 0x726B).
//! - [`message`]: daemon-to-daemon messages in length-delimited, versioned frames.
//! - [`crypto`], [`identity`]: x25519 + HKDF + HMAC, host keys and pinning.
//! - [`init`]: the initialisation handshake; [`resume`]: the resumption handshake.
//! - [`edp`]: the Enhancement Detection Protocol state machines; [`net`]: their tokio driver.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod edp;
mod fixed;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod init;
pub mod message;
#[cfg(feature = "net")]
pub mod net;
pub mod option;
pub mod resume;

/// Which end of a handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// Sends `Init` (the EDP client) or `Hello` (the reconnecting side).
    Initiator = 1,
    Responder = 2,
}

impl Role {
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}
