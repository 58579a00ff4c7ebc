//! Resumption: proving that a new TCP flow belongs to a suspended connection.
//!
//! ```text
//! initiator                                        responder
//!   Hello { conn id, nonce_i }                 -->
//!                                              <--  Challenge { nonce_r, MAC_K("challenge" || id || nonce_i || nonce_r) }
//!   Confirm { MAC_K("confirm" || id || nonce_i || nonce_r) } -->
//! ```
//!
//! Both nonces are fresh random values, so a recorded Challenge fails against a new `nonce_i` and a
//! recorded Confirm fails against a new `nonce_r`; different labels stop a tag from being reflected.
//! Tags are compared in constant time. After a successful exchange each side may send an
//! authenticated [`Recover`] bound to the same nonces ([`Resumed::seal_recover`]).
//!
//! Each message also has a compact fixed-size encoding for a TCP option of a crafted SYN, SYN-ACK
//! and ACK (kind 253, ExID [`RESUME_EXID`], then the compact bytes): Hello 16 bytes
//! (`conn id u64 BE | nonce_i`), Challenge 24 (`nonce_r | MAC`), Confirm 16 (`MAC`). The packet
//! type says which message an option holds; the decoders insist on the exact length.

use crate::crypto::{labels, CryptoError, Entropy, Mac, SecretKey, MAC_LEN};
use crate::message::{Challenge, Confirm, ConnId, Hello, Recover};
use crate::Role;
use std::time::{Duration, Instant};
use thiserror::Error;

/// RFC 6994 ExID of the option that carries compact resumption messages ("rs").
pub const RESUME_EXID: u16 = 0x7273;
/// Compact sizes.
pub const HELLO_LEN: usize = 16;
pub const CHALLENGE_LEN: usize = 8 + MAC_LEN;
pub const CONFIRM_LEN: usize = MAC_LEN;
/// Default time a resumption attempt may take before it is abandoned.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a compact message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("compact {what} must be {expected} bytes, got {got}")]
pub struct CompactError {
    pub what: &'static str,
    pub expected: usize,
    pub got: usize,
}

fn exact<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], CompactError> {
    bytes.try_into().map_err(|_| CompactError {
        what,
        expected: N,
        got: bytes.len(),
    })
}

impl Hello {
    pub fn to_compact(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..8].copy_from_slice(&self.conn_id.0.to_be_bytes());
        out[8..].copy_from_slice(&self.nonce);
        out
    }

    pub fn from_compact(bytes: &[u8]) -> Result<Hello, CompactError> {
        let b: [u8; HELLO_LEN] = exact("hello", bytes)?;
        let (id, nonce) = b.split_at(8);
        Ok(Hello {
            conn_id: ConnId(u64::from_be_bytes(id.try_into().expect("8 bytes"))),
            nonce: nonce.try_into().expect("8 bytes"),
        })
    }
}

impl Challenge {
    pub fn to_compact(&self) -> [u8; CHALLENGE_LEN] {
        let mut out = [0u8; CHALLENGE_LEN];
        out[..8].copy_from_slice(&self.nonce);
        out[8..].copy_from_slice(&self.mac);
        out
    }

    pub fn from_compact(bytes: &[u8]) -> Result<Challenge, CompactError> {
        let b: [u8; CHALLENGE_LEN] = exact("challenge", bytes)?;
        let (nonce, mac) = b.split_at(8);
        Ok(Challenge {
            nonce: nonce.try_into().expect("8 bytes"),
            mac: mac.try_into().expect("16 bytes"),
        })
    }
}

impl Confirm {
    pub fn to_compact(&self) -> [u8; CONFIRM_LEN] {
        self.mac
    }

    pub fn from_compact(bytes: &[u8]) -> Result<Confirm, CompactError> {
        Ok(Confirm {
            mac: exact("confirm", bytes)?,
        })
    }
}

/// Why a resumption failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ResumeError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("resumption is for connection {got}, expected {expected}")]
    ConnIdMismatch { expected: ConnId, got: ConnId },
    #[error("{0} MAC does not verify (wrong key, replayed or altered message)")]
    BadMac(&'static str),
    #[error("resumption timed out after {0:?}")]
    Timeout(Duration),
    #[error("resumption already finished ({0})")]
    Finished(&'static str),
    #[error("recover message for connection {got} in the resumption of {expected}")]
    RecoverConnId { expected: ConnId, got: ConnId },
}

/// Where a resumption attempt stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeState {
    /// Initiator: Hello sent.
    ExpectChallenge,
    /// Responder: Challenge sent.
    ExpectConfirm,
    Resumed,
    Failed(ResumeError),
}

/// What both sides know after a successful resumption.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub conn_id: ConnId,
    pub role: Role,
    key: SecretKey,
    nonce_i: [u8; 8],
    nonce_r: [u8; 8],
}

impl Resumed {
    /// An authenticated [`Recover`] with this side's byte counts.
    pub fn seal_recover(&self, received: u64, sent: u64) -> Recover {
        let body = self.recover_body(self.role, received, sent);
        Recover {
            conn_id: self.conn_id,
            received,
            sent,
            mac: self.key.mac(labels::RECOVER, &[&body]),
        }
    }

    /// Checks the peer's [`Recover`]; returns its `(received, sent)` counts.
    pub fn open_recover(&self, recover: &Recover) -> Result<(u64, u64), ResumeError> {
        if recover.conn_id != self.conn_id {
            return Err(ResumeError::RecoverConnId {
                expected: self.conn_id,
                got: recover.conn_id,
            });
        }
        let body = self.recover_body(self.role.peer(), recover.received, recover.sent);
        if !self.key.verify(labels::RECOVER, &[&body], &recover.mac) {
            return Err(ResumeError::BadMac("recover"));
        }
        Ok((recover.received, recover.sent))
    }

    /// `conn id | nonce_i | nonce_r | sender role | received | sent`, all fixed size.
    fn recover_body(&self, sender: Role, received: u64, sent: u64) -> Vec<u8> {
        [
            &self.conn_id.0.to_be_bytes()[..],
            &self.nonce_i,
            &self.nonce_r,
            &[sender as u8],
            &received.to_be_bytes(),
            &sent.to_be_bytes(),
        ]
        .concat()
    }
}

fn challenge_mac(key: &SecretKey, id: ConnId, nonce_i: &[u8; 8], nonce_r: &[u8; 8]) -> Mac {
    key.mac(labels::CHALLENGE, &[&id.0.to_be_bytes(), nonce_i, nonce_r])
}

fn confirm_mac(key: &SecretKey, id: ConnId, nonce_i: &[u8; 8], nonce_r: &[u8; 8]) -> Mac {
    key.mac(labels::CONFIRM, &[&id.0.to_be_bytes(), nonce_i, nonce_r])
}

/// Shared bookkeeping of one attempt: state, deadline and the parameters both roles hold.
#[derive(Debug)]
struct Attempt {
    state: ResumeState,
    conn_id: ConnId,
    key: SecretKey,
    started: Instant,
    deadline: Instant,
}

impl Attempt {
    fn new(
        now: Instant,
        conn_id: ConnId,
        key: SecretKey,
        timeout: Duration,
        state: ResumeState,
    ) -> Self {
        Attempt {
            state,
            conn_id,
            key,
            started: now,
            deadline: now + timeout,
        }
    }

    /// Checks the attempt is waiting for `expected` and not past its deadline.
    fn expect(&mut self, now: Instant, expected: ResumeState) -> Result<(), ResumeError> {
        self.handle_timeout(now);
        match &self.state {
            s if *s == expected => Ok(()),
            ResumeState::Failed(e) => Err(e.clone()),
            _ => Err(ResumeError::Finished("already resumed")),
        }
    }

    fn fail(&mut self, err: ResumeError) -> ResumeError {
        self.state = ResumeState::Failed(err.clone());
        err
    }

    fn handle_timeout(&mut self, now: Instant) {
        let waiting = matches!(
            self.state,
            ResumeState::ExpectChallenge | ResumeState::ExpectConfirm
        );
        if waiting && now >= self.deadline {
            self.state = ResumeState::Failed(ResumeError::Timeout(self.deadline - self.started));
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        matches!(
            self.state,
            ResumeState::ExpectChallenge | ResumeState::ExpectConfirm
        )
        .then_some(self.deadline)
    }
}

/// The side that reconnects and proves it holds the key.
///
/// Drive it with [`handle_challenge`](Self::handle_challenge) and
/// [`handle_timeout`](Self::handle_timeout); arm a timer for [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ResumeInitiator {
    attempt: Attempt,
    nonce: [u8; 8],
}

impl ResumeInitiator {
    pub fn start(
        now: Instant,
        rng: &mut dyn Entropy,
        conn_id: ConnId,
        key: SecretKey,
        timeout: Duration,
    ) -> Result<(Self, Hello), ResumeError> {
        let mut nonce = [0u8; 8];
        rng.fill(&mut nonce)?;
        let attempt = Attempt::new(now, conn_id, key, timeout, ResumeState::ExpectChallenge);
        Ok((ResumeInitiator { attempt, nonce }, Hello { conn_id, nonce }))
    }

    /// Verifies the responder's Challenge; on success returns the Confirm to send.
    pub fn handle_challenge(
        &mut self,
        now: Instant,
        challenge: &Challenge,
    ) -> Result<(Confirm, Resumed), ResumeError> {
        self.attempt.expect(now, ResumeState::ExpectChallenge)?;
        let a = &self.attempt;
        let ok = a.key.verify(
            labels::CHALLENGE,
            &[&a.conn_id.0.to_be_bytes(), &self.nonce, &challenge.nonce],
            &challenge.mac,
        );
        if !ok {
            return Err(self.attempt.fail(ResumeError::BadMac("challenge")));
        }
        let confirm = Confirm {
            mac: confirm_mac(&a.key, a.conn_id, &self.nonce, &challenge.nonce),
        };
        let resumed = Resumed {
            conn_id: a.conn_id,
            role: Role::Initiator,
            key: a.key.clone(),
            nonce_i: self.nonce,
            nonce_r: challenge.nonce,
        };
        self.attempt.state = ResumeState::Resumed;
        Ok((confirm, resumed))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.attempt.handle_timeout(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.attempt.poll_timeout()
    }

    pub fn state(&self) -> &ResumeState {
        &self.attempt.state
    }
}

/// The side that holds the suspended connection and checks the reconnecting peer.
#[derive(Debug)]
pub struct ResumeResponder {
    attempt: Attempt,
    nonce_i: [u8; 8],
    nonce_r: [u8; 8],
}

impl ResumeResponder {
    /// Answers a Hello for connection `conn_id` (looked up by the caller from `hello.conn_id`).
    pub fn start(
        now: Instant,
        rng: &mut dyn Entropy,
        hello: &Hello,
        conn_id: ConnId,
        key: SecretKey,
        timeout: Duration,
    ) -> Result<(Self, Challenge), ResumeError> {
        if hello.conn_id != conn_id {
            return Err(ResumeError::ConnIdMismatch {
                expected: conn_id,
                got: hello.conn_id,
            });
        }
        let mut nonce_r = [0u8; 8];
        rng.fill(&mut nonce_r)?;
        let challenge = Challenge {
            nonce: nonce_r,
            mac: challenge_mac(&key, conn_id, &hello.nonce, &nonce_r),
        };
        let attempt = Attempt::new(now, conn_id, key, timeout, ResumeState::ExpectConfirm);
        Ok((
            ResumeResponder {
                attempt,
                nonce_i: hello.nonce,
                nonce_r,
            },
            challenge,
        ))
    }

    /// Verifies the initiator's Confirm.
    pub fn handle_confirm(
        &mut self,
        now: Instant,
        confirm: &Confirm,
    ) -> Result<Resumed, ResumeError> {
        self.attempt.expect(now, ResumeState::ExpectConfirm)?;
        let a = &self.attempt;
        let parts: [&[u8]; 3] = [&a.conn_id.0.to_be_bytes(), &self.nonce_i, &self.nonce_r];
        if !a.key.verify(labels::CONFIRM, &parts, &confirm.mac) {
            return Err(self.attempt.fail(ResumeError::BadMac("confirm")));
        }
        let resumed = Resumed {
            conn_id: a.conn_id,
            role: Role::Responder,
            key: a.key.clone(),
            nonce_i: self.nonce_i,
            nonce_r: self.nonce_r,
        };
        self.attempt.state = ResumeState::Resumed;
        Ok(resumed)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.attempt.handle_timeout(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.attempt.poll_timeout()
    }

    pub fn state(&self) -> &ResumeState {
        &self.attempt.state
    }
}

#[cfg(test)]
mod tests;
