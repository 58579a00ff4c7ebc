//! Optional host identity keys (Ed25519) and pinning, so that a man in the middle cannot complete
//! initialisation — and, because the resumption key comes from an authenticated exchange, cannot
//! complete a resumption either.
//!
//! A host signs its ephemeral x25519 key in `Init` / `InitAck` (see `init`). The peer checks the
//! signature, then asks its [`PeerTrust`] whether that host key is acceptable for the peer:
//! - [`PeerTrust::Opportunistic`]: any key or none (signatures present are still verified);
//! - [`PeerTrust::TrustOnFirstUse`]: the first key seen for a peer name is pinned in a
//!   [`PinStore`]; a different key later, or none where one is pinned, is refused;
//! - [`PeerTrust::AllowList`]: only listed keys, whatever the peer name.

use crate::crypto::{CryptoError, Entropy, SecretKey};
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// An Ed25519 public key.
pub type HostKey = [u8; 32];

/// A host's long-term signing key.
pub struct HostIdentity {
    seed: SecretKey,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostIdentity({})", hex(&self.public_key()))
    }
}

impl HostIdentity {
    pub fn generate(rng: &mut dyn Entropy) -> Result<Self, CryptoError> {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed)?;
        Self::from_seed(SecretKey::from_bytes(seed))
    }

    /// Restores an identity from the 32-byte seed that [`HostIdentity::seed`] returned.
    pub fn from_seed(seed: SecretKey) -> Result<Self, CryptoError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed.expose()).map_err(|_| CryptoError::Kdf)?;
        Ok(HostIdentity { seed, pair })
    }

    /// The secret seed, for storing the identity (keep it private).
    pub fn seed(&self) -> &SecretKey {
        &self.seed
    }

    pub fn public_key(&self) -> HostKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// Checks an Ed25519 signature.
pub fn verify_signature(key: &HostKey, message: &[u8], signature: &[u8; 64]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, key)
        .verify(message, signature)
        .is_ok()
}

/// Why a peer's host key was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("host key signature of peer {peer:?} does not verify")]
    BadSignature { peer: String },
    #[error("peer {peer:?} presented host key {presented}, but {pinned} is pinned")]
    Mismatch {
        peer: String,
        pinned: String,
        presented: String,
    },
    #[error("peer {peer:?} presented no host key, but {pinned} is pinned")]
    MissingPinned { peer: String, pinned: String },
    #[error("peer {peer:?} host key {presented} is not on the allow list")]
    NotAllowed { peer: String, presented: String },
    #[error("peer {peer:?} presented no host key; the allow list requires one")]
    MissingRequired { peer: String },
    #[error("peer name {0:?} cannot be pinned (empty or contains whitespace)")]
    BadPeerName(String),
    #[error("pin store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pin store {path} line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Where pinned host keys are kept, by peer name (a configured host name or an address).
pub trait PinStore {
    fn lookup(&self, peer: &str) -> Option<HostKey>;
    fn pin(&mut self, peer: &str, key: HostKey) -> Result<(), TrustError>;
}

/// Pins kept in memory only.
#[derive(Debug, Default, Clone)]
pub struct MemoryPinStore(BTreeMap<String, HostKey>);

impl MemoryPinStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl PinStore for MemoryPinStore {
    fn lookup(&self, peer: &str) -> Option<HostKey> {
        self.0.get(peer).copied()
    }

    fn pin(&mut self, peer: &str, key: HostKey) -> Result<(), TrustError> {
        check_peer_name(peer)?;
        self.0.insert(peer.to_owned(), key);
        Ok(())
    }
}

/// Pins kept in a text file, one `peer-name hex-key` per line; rewritten atomically (temporary
/// file and rename) on every new pin.
#[derive(Debug)]
pub struct FilePinStore {
    path: PathBuf,
    pins: MemoryPinStore,
}

impl FilePinStore {
    /// Opens the store; a missing file is an empty store.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TrustError> {
        let path = path.as_ref().to_owned();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(TrustError::Io { path, source }),
        };
        let mut pins = MemoryPinStore::new();
        for (i, line) in text.lines().enumerate() {
            let corrupt = |reason: &str| TrustError::Corrupt {
                path: path.clone(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(peer), Some(key), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(corrupt("expected `peer-name hex-key`"));
            };
            let key = unhex(key).ok_or_else(|| corrupt("key is not 64 hex digits"))?;
            pins.0.insert(peer.to_owned(), key);
        }
        Ok(FilePinStore { path, pins })
    }

    fn save(&self) -> Result<(), TrustError> {
        let io = |source| TrustError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        for (peer, key) in &self.pins.0 {
            writeln!(file, "{peer} {}", hex(key)).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

impl PinStore for FilePinStore {
    fn lookup(&self, peer: &str) -> Option<HostKey> {
        self.pins.lookup(peer)
    }

    fn pin(&mut self, peer: &str, key: HostKey) -> Result<(), TrustError> {
        self.pins.pin(peer, key)?;
        self.save()
    }
}

/// How a peer's host key is judged.
pub enum PeerTrust {
    Opportunistic,
    TrustOnFirstUse(Box<dyn PinStore + Send>),
    AllowList(HashSet<HostKey>),
}

impl std::fmt::Debug for PeerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerTrust::Opportunistic => f.write_str("Opportunistic"),
            PeerTrust::TrustOnFirstUse(_) => f.write_str("TrustOnFirstUse(..)"),
            PeerTrust::AllowList(keys) => write!(f, "AllowList({} keys)", keys.len()),
        }
    }
}

impl PeerTrust {
    /// Judges `presented` (a key whose signature the caller has already verified) for `peer`.
    pub fn check(&mut self, peer: &str, presented: Option<&HostKey>) -> Result<(), TrustError> {
        let peer_s = || peer.to_owned();
        match (self, presented) {
            (PeerTrust::Opportunistic, _) => Ok(()),
            (PeerTrust::TrustOnFirstUse(store), presented) => {
                match (store.lookup(peer), presented) {
                    (None, Some(key)) => store.pin(peer, *key),
                    (None, None) => Ok(()),
                    (Some(pinned), Some(key)) if pinned == *key => Ok(()),
                    (Some(pinned), Some(key)) => Err(TrustError::Mismatch {
                        peer: peer_s(),
                        pinned: hex(&pinned),
                        presented: hex(key),
                    }),
                    (Some(pinned), None) => Err(TrustError::MissingPinned {
                        peer: peer_s(),
                        pinned: hex(&pinned),
                    }),
                }
            }
            (PeerTrust::AllowList(keys), Some(key)) if keys.contains(key) => Ok(()),
            (PeerTrust::AllowList(_), Some(key)) => Err(TrustError::NotAllowed {
                peer: peer_s(),
                presented: hex(key),
            }),
            (PeerTrust::AllowList(_), None) => Err(TrustError::MissingRequired { peer: peer_s() }),
        }
    }
}

fn check_peer_name(peer: &str) -> Result<(), TrustError> {
    if peer.is_empty() || peer.chars().any(char::is_whitespace) {
        return Err(TrustError::BadPeerName(peer.to_owned()));
    }
    Ok(())
}

/// Lower-case hex of a key.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a key.
pub fn unhex(s: &str) -> Option<HostKey> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeterministicEntropy;

    fn key(n: u8) -> HostKey {
        [n; 32]
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let mut rng = DeterministicEntropy::new(3);
        let id = HostIdentity::generate(&mut rng).unwrap();
        let other = HostIdentity::generate(&mut rng).unwrap();
        let sig = id.sign(b"transcript");
        assert!(verify_signature(&id.public_key(), b"transcript", &sig));
        assert!(!verify_signature(&id.public_key(), b"transcripT", &sig));
        assert!(!verify_signature(&other.public_key(), b"transcript", &sig));
        let restored = HostIdentity::from_seed(id.seed().clone()).unwrap();
        assert_eq!(restored.public_key(), id.public_key());
    }

    #[test]
    fn tofu_pins_the_first_key_and_refuses_a_different_one() {
        let mut trust = PeerTrust::TrustOnFirstUse(Box::new(MemoryPinStore::new()));
        trust.check("peer-a", None).unwrap();
        trust.check("peer-a", Some(&key(1))).unwrap();
        trust.check("peer-a", Some(&key(1))).unwrap();
        assert!(matches!(
            trust.check("peer-a", Some(&key(2))),
            Err(TrustError::Mismatch { .. })
        ));
        assert!(matches!(
            trust.check("peer-a", None),
            Err(TrustError::MissingPinned { .. })
        ));
        trust.check("peer-b", Some(&key(2))).unwrap();
        assert!(matches!(
            trust.check("bad name", Some(&key(2))),
            Err(TrustError::BadPeerName(_))
        ));
    }

    #[test]
    fn allow_list_ignores_names_and_requires_a_listed_key() {
        let mut trust = PeerTrust::AllowList([key(1), key(2)].into_iter().collect());
        trust.check("x", Some(&key(1))).unwrap();
        trust.check("y", Some(&key(2))).unwrap();
        assert!(matches!(
            trust.check("x", Some(&key(3))),
            Err(TrustError::NotAllowed { .. })
        ));
        assert!(matches!(
            trust.check("x", None),
            Err(TrustError::MissingRequired { .. })
        ));
        PeerTrust::Opportunistic.check("x", None).unwrap();
    }

    #[test]
    fn file_store_persists_pins_and_rejects_corruption() {
        let dir = std::env::temp_dir().join(format!("edp-pins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pins");
        let _ = std::fs::remove_file(&path);
        let mut store = FilePinStore::open(&path).unwrap();
        assert_eq!(store.lookup("h1"), None);
        store.pin("h1", key(0xAB)).unwrap();
        store.pin("h2", key(0x01)).unwrap();
        let reopened = FilePinStore::open(&path).unwrap();
        assert_eq!(reopened.lookup("h1"), Some(key(0xAB)));
        assert_eq!(reopened.lookup("h2"), Some(key(0x01)));
        std::fs::write(&path, "# comment\n\nh1 zz\n").unwrap();
        let err = FilePinStore::open(&path).unwrap_err();
        assert!(matches!(err, TrustError::Corrupt { line: 3, .. }), "{err}");
        std::fs::write(&path, "h1\n").unwrap();
        assert!(matches!(
            FilePinStore::open(&path),
            Err(TrustError::Corrupt { line: 1, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_round_trips() {
        let k = [0x0F; 32];
        assert_eq!(unhex(&hex(&k)), Some(k));
        assert_eq!(unhex("0f"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
        assert_eq!(unhex(&"é".repeat(32)), None);
    }
}
