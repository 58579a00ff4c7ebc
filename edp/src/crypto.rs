//! Key exchange, key schedule and message authentication.
//!
//! - Each connection gets a fresh x25519 key pair ([`EphemeralKey`]); an all-zero (non-contributory)
//!   shared secret — the result of a low-order peer point — is rejected.
//! - `prk = HKDF-Extract(salt = "rackd-edp/1 init", ikm = x25519 shared secret)`;
//!   `resume key = HKDF-Expand(prk, "rackd-edp/1 resume" || conn id || initiator pk || responder pk, 32)`.
//! - Every MAC is `HMAC-SHA256(resume key, label || fields)` truncated to [`MAC_LEN`] bytes and
//!   compared in constant time. Each use has its own label, so a tag from one message never
//!   verifies as another (no reflection).
//!
//! Secrets are zeroized on drop and never printed by `Debug`.

use ring::{hkdf, hmac, rand::SecureRandom};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a truncated MAC on the wire (128 bits).
pub const MAC_LEN: usize = 16;
/// Length of an x25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// A truncated HMAC-SHA256 tag.
pub type Mac = [u8; MAC_LEN];

/// Crypto failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("the system random number generator failed")]
    Rng,
    #[error("peer x25519 key is a low-order point: the shared secret would be predictable")]
    NonContributory,
    #[error("key derivation failed")]
    Kdf,
}

/// A source of randomness. The daemon uses [`SystemEntropy`]; tests pass a deterministic one so
/// that every run sees the same nonces.
pub trait Entropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError>;

    fn u64(&mut self) -> Result<u64, CryptoError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
}

/// The operating system's random number generator (through `ring`).
#[derive(Debug)]
pub struct SystemEntropy(ring::rand::SystemRandom);

impl SystemEntropy {
    pub fn new() -> Self {
        SystemEntropy(ring::rand::SystemRandom::new())
    }
}

impl Default for SystemEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl Entropy for SystemEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        self.0.fill(dest).map_err(|_| CryptoError::Rng)
    }
}

/// A reproducible stream of bytes from a seed (SplitMix64). **Not secret**: for tests and
/// simulations only.
#[derive(Debug, Clone)]
pub struct DeterministicEntropy(u64);

impl DeterministicEntropy {
    pub fn new(seed: u64) -> Self {
        DeterministicEntropy(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Entropy for DeterministicEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in dest.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

/// A 32-byte secret, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Wraps raw key bytes (e.g. restored from a checkpoint).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// The raw bytes, for checkpointing a connection. Handle with care.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// `HMAC-SHA256(key, label || parts...)` truncated to [`MAC_LEN`].
    pub fn mac(&self, label: &[u8], parts: &[&[u8]]) -> Mac {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(label);
        for part in parts {
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        out
    }

    /// Recomputes the MAC and compares it with `tag` in constant time.
    pub fn verify(&self, label: &[u8], parts: &[&[u8]], tag: &Mac) -> bool {
        self.mac(label, parts).ct_eq(tag).into()
    }

    /// A non-secret 8-byte fingerprint of the key, for logs and for checking that both ends
    /// derived the same key.
    pub fn key_id(&self) -> [u8; 8] {
        let mac = self.mac(labels::KEY_ID, &[]);
        let mut out = [0u8; 8];
        out.copy_from_slice(&mac[..8]);
        out
    }
}

/// Domain-separation labels (all distinct; each is followed by fixed-length fields only).
pub mod labels {
    pub const INIT_SALT: &[u8] = b"rackd-edp/1 init";
    pub const RESUME_KEY: &[u8] = b"rackd-edp/1 resume";
    pub const INIT_ACK: &[u8] = b"rackd-edp/1 init-ack";
    pub const CHALLENGE: &[u8] = b"rackd-edp/1 challenge";
    pub const CONFIRM: &[u8] = b"rackd-edp/1 confirm";
    pub const RECOVER: &[u8] = b"rackd-edp/1 recover";
    pub const KEY_ID: &[u8] = b"rackd-edp/1 key-id";
    pub const HEARTBEAT: &[u8] = b"rackd-edp/1 heartbeat";
    pub const MIGRATE: &[u8] = b"rackd-edp/1 migrate";
    pub const SIGN_INIT: &[u8] = b"rackd-edp/1 sign init";
    pub const SIGN_INIT_ACK: &[u8] = b"rackd-edp/1 sign init-ack";
}

/// A per-connection x25519 key pair; the secret half is zeroized on drop.
pub struct EphemeralKey {
    secret: x25519_dalek::StaticSecret,
    public: [u8; PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl EphemeralKey {
    pub fn generate(rng: &mut dyn Entropy) -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes)?;
        let secret = x25519_dalek::StaticSecret::from(bytes);
        bytes.zeroize();
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(EphemeralKey { secret, public })
    }

    pub fn public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// The raw shared secret with `peer`; rejects low-order points.
    pub fn agree(&self, peer: &[u8; PUBLIC_KEY_LEN]) -> Result<SecretKey, CryptoError> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        if !shared.was_contributory() {
            return Err(CryptoError::NonContributory);
        }
        Ok(SecretKey(shared.to_bytes()))
    }
}

/// Derives the per-connection resumption key from the x25519 shared secret and the transcript.
pub fn derive_resume_key(
    shared: &SecretKey,
    conn_id: u64,
    initiator_pk: &[u8; PUBLIC_KEY_LEN],
    responder_pk: &[u8; PUBLIC_KEY_LEN],
) -> Result<SecretKey, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, labels::INIT_SALT).extract(&shared.0);
    let id = conn_id.to_be_bytes();
    let info: [&[u8]; 4] = [labels::RESUME_KEY, &id, initiator_pk, responder_pk];
    let okm = prk
        .expand(&info, hkdf::HKDF_SHA256)
        .map_err(|_| CryptoError::Kdf)?;
    let mut out = [0u8; 32];
    okm.fill(&mut out).map_err(|_| CryptoError::Kdf)?;
    Ok(SecretKey(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_key_and_others_do_not() {
        let mut rng = DeterministicEntropy::new(1);
        let a = EphemeralKey::generate(&mut rng).unwrap();
        let b = EphemeralKey::generate(&mut rng).unwrap();
        let c = EphemeralKey::generate(&mut rng).unwrap();
        let ka = derive_resume_key(&a.agree(&b.public()).unwrap(), 7, &a.public(), &b.public());
        let kb = derive_resume_key(&b.agree(&a.public()).unwrap(), 7, &a.public(), &b.public());
        assert_eq!(ka, kb);
        let kc = derive_resume_key(&c.agree(&b.public()).unwrap(), 7, &a.public(), &b.public());
        assert_ne!(ka.unwrap().key_id(), kc.unwrap().key_id());
        let other_id =
            derive_resume_key(&a.agree(&b.public()).unwrap(), 8, &a.public(), &b.public());
        assert_ne!(kb.unwrap().key_id(), other_id.unwrap().key_id());
    }

    #[test]
    fn low_order_points_are_rejected() {
        let mut rng = DeterministicEntropy::new(2);
        let a = EphemeralKey::generate(&mut rng).unwrap();
        // The identity and the point of order 8 from the curve25519 low-order list.
        let mut order8 = [0u8; 32];
        order8[..8].copy_from_slice(&[0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae]);
        order8[8..16].copy_from_slice(&[0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a]);
        order8[16..24].copy_from_slice(&[0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd]);
        order8[24..].copy_from_slice(&[0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00]);
        for point in [
            [0u8; 32],
            {
                let mut p = [0u8; 32];
                p[0] = 1;
                p
            },
            order8,
        ] {
            assert_eq!(a.agree(&point).unwrap_err(), CryptoError::NonContributory);
        }
    }

    #[test]
    fn macs_are_label_separated_and_verified() {
        let key = SecretKey::from_bytes([9; 32]);
        let tag = key.mac(labels::CHALLENGE, &[b"abc"]);
        assert!(key.verify(labels::CHALLENGE, &[b"abc"], &tag));
        assert!(!key.verify(labels::CONFIRM, &[b"abc"], &tag));
        assert!(!key.verify(labels::CHALLENGE, &[b"abd"], &tag));
        assert!(!SecretKey::from_bytes([8; 32]).verify(labels::CHALLENGE, &[b"abc"], &tag));
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }

    #[test]
    fn deterministic_entropy_repeats_and_system_entropy_varies() {
        let (mut a, mut b) = (DeterministicEntropy::new(5), DeterministicEntropy::new(5));
        assert_eq!(a.u64().unwrap(), b.u64().unwrap());
        let mut sys = SystemEntropy::new();
        assert_ne!(sys.u64().unwrap(), sys.u64().unwrap());
    }
}
