//! Daemon-to-daemon messages and their frame codec.
//!
//! A frame is `length (u16, big endian) | version (u8) | body`, where `length` counts the version
//! byte and the body and may not exceed [`MAX_FRAME_LEN`]; the body is the [postcard] encoding of
//! [`Message`]. Oversize lengths are rejected from the two header bytes, before anything is
//! buffered or allocated. [`FrameDecoder`] accepts input in pieces of any size.
//!
//! Byte counts in [`Recover`] are 64-bit counts of stream bytes, never absolute sequence numbers
//! (middleboxes rewrite ISNs).

use crate::crypto::{labels, Mac, SecretKey, PUBLIC_KEY_LEN};
use crate::fixed;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use thiserror::Error;

/// The frame format version this crate writes and accepts.
pub const FRAME_VERSION: u8 = 1;
/// Largest value of the length field (version byte + body).
pub const MAX_FRAME_LEN: usize = 512;
/// Size of the frame header (length field).
pub const HEADER_LEN: usize = 2;
/// Most bytes a [`FrameDecoder`] holds before it refuses more input.
pub const MAX_BUFFERED: usize = 64 * 1024;

/// A connection identifier, chosen by the initiator of the initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Enhancements a peer offers (in [`Init`]) or accepts (in [`InitAck`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Suspend and resume the connection across outages and address changes.
    pub const RESUME: Capabilities = Capabilities(1 << 0);
    /// Heartbeats over the daemon channel.
    pub const HEARTBEAT: Capabilities = Capabilities(1 << 1);
    /// Checkpoint and restore the connection on another host.
    pub const MIGRATE: Capabilities = Capabilities(1 << 2);
    /// Everything this version knows about.
    pub const ALL: Capabilities = Capabilities(0b111);

    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// What both sides support.
    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Capabilities) -> Capabilities {
        Capabilities(self.0 | rhs.0)
    }
}

/// A host identity key and its signature over the handshake transcript (see `identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSignature {
    #[serde(with = "fixed")]
    pub public_key: [u8; 32],
    #[serde(with = "fixed")]
    pub signature: [u8; 64],
}

/// Initialisation request: the initiator's half of the key exchange and what it needs to recover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    pub conn_id: ConnId,
    #[serde(with = "fixed")]
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The sender's socket send and receive buffer sizes in bytes: how much may be in flight.
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub capabilities: Capabilities,
    pub host: Option<HostSignature>,
}

/// Initialisation answer. `confirm` proves the responder derived the resumption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitAck {
    pub conn_id: ConnId,
    #[serde(with = "fixed")]
    pub public_key: [u8; PUBLIC_KEY_LEN],
    pub sndbuf: u32,
    pub rcvbuf: u32,
    /// The negotiated set: a subset of what the initiator offered.
    pub capabilities: Capabilities,
    pub host: Option<HostSignature>,
    #[serde(with = "fixed")]
    pub confirm: Mac,
}

/// Resumption step 1 (initiator → responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub conn_id: ConnId,
    pub nonce: [u8; 8],
}

/// Resumption step 2 (responder → initiator): the responder's nonce and its proof of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub nonce: [u8; 8],
    #[serde(with = "fixed")]
    pub mac: Mac,
}

/// Resumption step 3 (initiator → responder): the initiator's proof of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    #[serde(with = "fixed")]
    pub mac: Mac,
}

/// After a resumption: how many stream bytes the sender has received from and sent to the peer
/// since the connection began, authenticated with the resumption transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recover {
    pub conn_id: ConnId,
    pub received: u64,
    pub sent: u64,
    #[serde(with = "fixed")]
    pub mac: Mac,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// Both sockets closed normally.
    Finished,
    /// The local socket was aborted (reset, user timeout).
    Aborted,
    /// Reconnection gave up.
    GaveUp,
}

/// Error codes a daemon reports to its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    UnsupportedVersion,
    UnknownConnection,
    AuthenticationFailed,
    Malformed,
    Refused,
}

/// Every daemon-to-daemon message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Init(Init),
    InitAck(InitAck),
    ResumeHello(Hello),
    ResumeChallenge {
        conn_id: ConnId,
        challenge: Challenge,
    },
    ResumeConfirm {
        conn_id: ConnId,
        confirm: Confirm,
    },
    Recover(Recover),
    /// A liveness beat (see [`Message::heartbeat`]): `seq` counts this sender's beats, `echo` is
    /// the highest `seq` it has received from the other end, so each end learns whether its own
    /// beats arrive.
    Heartbeat {
        conn_id: ConnId,
        seq: u64,
        echo: u64,
        mac: Mac,
    },
    Close {
        conn_id: ConnId,
        reason: CloseReason,
    },
    Error {
        conn_id: Option<ConnId>,
        code: ErrorCode,
    },
    /// A step of moving the connection's socket to another host (checkpoint and restore), made
    /// with [`Message::migrate`]. `generation` counts the connection's moves: a peer takes a
    /// step only for a generation above the last it accepted, so a replayed move is refused.
    Migrate {
        conn_id: ConnId,
        generation: u32,
        step: MigrateStep,
        /// `Arrived`: the restored socket's port at the sender's address. An answer echoes the
        /// port of the `Arrived` it answers, or 0 when it answers a `Leaving`.
        port: u16,
        mac: Mac,
    },
    /// Client daemon → server daemon when the SYN-ACK came back without the rackd option
    /// (stripped on the path, or no rackd there): "the connection `client` → `server` has a
    /// rackd at this end, with this token". A rackd at the server answers [`Message::ProbeAck`];
    /// then initialisation goes on as after an echoed option.
    Probe {
        token: u32,
        client: SocketAddr,
        server: SocketAddr,
    },
    /// The server daemon's answer: the connection's id (client token, server token).
    ProbeAck {
        conn_id: ConnId,
        client: SocketAddr,
        server: SocketAddr,
    },
}

/// Which step of a move a [`Message::Migrate`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrateStep {
    /// From the old host: the socket was checkpointed; hold the connection until it reappears.
    Leaving,
    /// From the new host: the socket was restored there.
    Arrived,
    /// From the peer: the step with this generation was taken.
    Accepted,
    /// From the peer: the generation is not newer than one already accepted.
    Refused,
}

/// Number of [`Message`] variants; a body starting with a higher tag is a newer message.
const MESSAGE_VARIANTS: u8 = 12;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame length {0} exceeds the limit of {MAX_FRAME_LEN}")]
    Oversize(usize),
    #[error("frame length 0: a frame has at least a version byte")]
    Empty,
    #[error("frame version {0} is not supported (this end speaks {FRAME_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown message type {0}")]
    UnknownMessage(u8),
    #[error("malformed message body: {0}")]
    Malformed(postcard::Error),
    #[error("{0} bytes left over after the message body")]
    TrailingBytes(usize),
    #[error("decoder buffer full ({MAX_BUFFERED} bytes) without a complete frame being read")]
    BufferFull,
}

impl Message {
    /// A heartbeat authenticated with the connection's key, so that nobody without it can keep a
    /// dead path looking alive or make a live one look dead.
    pub fn heartbeat(key: &SecretKey, conn_id: ConnId, seq: u64, echo: u64) -> Message {
        let mac = key.mac(labels::HEARTBEAT, &[&heartbeat_fields(conn_id, seq, echo)]);
        Message::Heartbeat {
            conn_id,
            seq,
            echo,
            mac,
        }
    }

    /// A move step authenticated with the connection's key.
    pub fn migrate(
        key: &SecretKey,
        conn_id: ConnId,
        generation: u32,
        step: MigrateStep,
        port: u16,
    ) -> Message {
        let fields = migrate_fields(conn_id, generation, step, port);
        Message::Migrate {
            conn_id,
            generation,
            step,
            port,
            mac: key.mac(labels::MIGRATE, &[&fields]),
        }
    }

    /// Whether an authenticated message ([`Message::Heartbeat`], [`Message::Migrate`]) was made
    /// with `key`; false for any other message.
    pub fn verifies(&self, key: &SecretKey) -> bool {
        match self {
            Message::Heartbeat {
                conn_id,
                seq,
                echo,
                mac,
            } => key.verify(
                labels::HEARTBEAT,
                &[&heartbeat_fields(*conn_id, *seq, *echo)],
                mac,
            ),
            Message::Migrate {
                conn_id,
                generation,
                step,
                port,
                mac,
            } => key.verify(
                labels::MIGRATE,
                &[&migrate_fields(*conn_id, *generation, *step, *port)],
                mac,
            ),
            _ => false,
        }
    }

    /// The frame for this message. Every message this crate defines fits [`MAX_FRAME_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).expect("serialising to a Vec cannot fail");
        let len = 1 + body.len();
        debug_assert!(len <= MAX_FRAME_LEN, "message larger than a frame");
        let mut out = Vec::with_capacity(HEADER_LEN + len);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.push(FRAME_VERSION);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one frame from the front of `bytes`: `Ok(None)` if more bytes are needed,
    /// otherwise the message and the number of bytes it used.
    pub fn decode(bytes: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len > MAX_FRAME_LEN {
            return Err(FrameError::Oversize(len));
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let Some(frame) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let (version, body) = (frame[0], &frame[1..]);
        if version != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        Ok(Some((Self::decode_body(body)?, HEADER_LEN + len)))
    }

    fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
        // A tag below 128 is a one-byte varint; anything we do not know is a newer message type.
        if let Some(&tag) = body.first() {
            if (MESSAGE_VARIANTS..0x80).contains(&tag) {
                return Err(FrameError::UnknownMessage(tag));
            }
        }
        let (message, rest) = postcard::take_from_bytes(body).map_err(FrameError::Malformed)?;
        if !rest.is_empty() {
            return Err(FrameError::TrailingBytes(rest.len()));
        }
        Ok(message)
    }
}

/// A streaming frame decoder: push bytes as they arrive, pull messages out.
///
/// After an error the stream cannot be resynchronised; the decoder keeps returning that error.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Fails if more than [`MAX_BUFFERED`] bytes would be waiting.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if self.buf.len() + data.len() > MAX_BUFFERED {
            self.failed = Some(FrameError::BufferFull);
            return Err(FrameError::BufferFull);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete message, `Ok(None)` if more input is needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match Message::decode(&self.buf) {
            Ok(Some((message, used))) => {
                self.buf.drain(..used);
                Ok(Some(message))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Bytes received but not part of any decoded frame (e.g. application data that followed the
    /// last daemon message on a stream that is handed to the application).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Number of bytes waiting.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests;

/// The authenticated fields of a move step, fixed-size and in order.
fn migrate_fields(conn_id: ConnId, generation: u32, step: MigrateStep, port: u16) -> [u8; 15] {
    let mut out = [0u8; 15];
    out[..8].copy_from_slice(&conn_id.0.to_be_bytes());
    out[8..12].copy_from_slice(&generation.to_be_bytes());
    out[12] = step as u8;
    out[13..].copy_from_slice(&port.to_be_bytes());
    out
}

/// The authenticated fields of a heartbeat, fixed-size and in order.
fn heartbeat_fields(conn_id: ConnId, seq: u64, echo: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&conn_id.0.to_be_bytes());
    out[8..16].copy_from_slice(&seq.to_be_bytes());
    out[16..].copy_from_slice(&echo.to_be_bytes());
    out
}
