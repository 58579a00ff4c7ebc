//! The checkpoint blob: a versioned container sealed with ChaCha20-Poly1305 under a key the
//! hosts of a cluster share.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "RKCP"
//! 4       2     format version, big-endian (1)
//! 6       12    nonce (random)
//! 18      n+16  ciphertext of the payload and its tag; bytes 0..18 are authenticated with it
//! ```
//! The payload is [`Payload`] in postcard. The sealing key is derived from the key file with
//! HKDF-SHA256 (info `rackd checkpoint blob v1`), so the file's bytes are never used directly.
//!
//! [`open`] never panics: any input gives a payload or a [`BlobError`] that says what was wrong.

use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::repair::SocketImage;

pub const MAGIC: [u8; 4] = *b"RKCP";
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + NONCE_LEN;
const TAG_LEN: usize = 16;
/// Bytes in the key file.
pub const KEY_LEN: usize = 32;
const KDF_INFO: &[u8] = b"rackd checkpoint blob v1";

/// A checkpoint's identity: random, 16 bytes, shown in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CheckpointId(pub [u8; 16]);

impl CheckpointId {
    pub fn random() -> Result<CheckpointId, BlobError> {
        let mut b = [0u8; 16];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| BlobError::Random)?;
        Ok(CheckpointId(b))
    }
}

impl std::fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a blob holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub id: CheckpointId,
    /// When the checkpoint was taken, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The engine's record of the connection (identity, secret, sequence bases, generation) in
    /// JSON: the engine owns that type's serde, and JSON accepts every serde feature.
    #[serde(with = "serde_bytes_vec")]
    pub record: Vec<u8>,
    pub socket: SocketImage,
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        <&[u8]>::deserialize(d).map(<[u8]>::to_vec)
    }
}

/// Why a blob could not be made or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error(
        "checkpoint key {path}: {source} (create it on every host of the cluster with the same \
         32 random bytes, mode 0600, e.g. `head -c 32 /dev/urandom > {path}`)"
    )]
    KeyMissing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint key {path} holds {len} bytes; it must hold exactly {KEY_LEN} (or {} hex digits)", KEY_LEN * 2)]
    KeyLength { path: PathBuf, len: usize },
    #[error(
        "checkpoint key {path} has mode {mode:04o}: it must not be readable by group or others"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("blob truncated: {len} bytes, a checkpoint has at least {min}")]
    Truncated { len: usize, min: usize },
    #[error("not a rackd checkpoint (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("checkpoint format version {0} is not supported (this rackd reads {VERSION})")]
    Version(u16),
    #[error(
        "blob authentication failed: corrupted, truncated, or sealed with another cluster key"
    )]
    Authentication,
    #[error("checkpoint payload undecodable after authentication: {0}")]
    Payload(String),
    #[error("no randomness from the system")]
    Random,
}

/// The cluster key, as read from the key file.
pub struct Key(LessSafeKey);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Reads the key file: 32 raw bytes, or 64 hex digits (a trailing newline allowed). The
    /// file must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Key, BlobError> {
        use std::os::unix::fs::PermissionsExt;
        let missing = |source| BlobError::KeyMissing {
            path: path.into(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(missing)?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(BlobError::KeyMode {
                path: path.into(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(missing)?;
        let key = parse_key(&bytes).ok_or(BlobError::KeyLength {
            path: path.into(),
            len: bytes.len(),
        })?;
        Ok(Key::from_bytes(&key))
    }

    pub fn from_bytes(secret: &[u8; KEY_LEN]) -> Key {
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                KEY_LEN
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(secret);
        let mut derived = [0u8; KEY_LEN];
        // Expanding 32 bytes from SHA-256 cannot exceed HKDF's limit of 255 blocks.
        prk.expand(&[KDF_INFO], Len)
            .and_then(|okm| okm.fill(&mut derived))
            .unwrap_or_else(|_| unreachable!("HKDF-SHA256 expands to 32 bytes"));
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &derived)
            .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 takes 32-byte keys"));
        Key(LessSafeKey::new(unbound))
    }
}

fn parse_key(bytes: &[u8]) -> Option<[u8; KEY_LEN]> {
    if let Ok(raw) = <[u8; KEY_LEN]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim_end();
    if text.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// Seals `payload` into a blob.
pub fn seal(key: &Key, payload: &Payload) -> Result<Vec<u8>, BlobError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| BlobError::Random)?;
    let mut blob = Vec::with_capacity(HEADER_LEN + 256 + payload.socket.send_queue.len());
    blob.extend_from_slice(&MAGIC);
    blob.extend_from_slice(&VERSION.to_be_bytes());
    blob.extend_from_slice(&nonce);
    let mut body = postcard::to_allocvec(payload).map_err(|e| BlobError::Payload(e.to_string()))?;
    let tag = key
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&blob[..HEADER_LEN]),
            &mut body,
        )
        .map_err(|_| BlobError::Payload("sealing failed".into()))?;
    blob.extend_from_slice(&body);
    blob.extend_from_slice(tag.as_ref());
    Ok(blob)
}

/// Checks and opens a blob.
pub fn open(key: &Key, blob: &[u8]) -> Result<Payload, BlobError> {
    let min = HEADER_LEN + TAG_LEN;
    if blob.len() < 6 {
        return Err(BlobError::Truncated {
            len: blob.len(),
            min,
        });
    }
    let magic: [u8; 4] = blob[..4].try_into().unwrap_or_default();
    if magic != MAGIC {
        return Err(BlobError::Magic(magic));
    }
    let version = u16::from_be_bytes([blob[4], blob[5]]);
    if version != VERSION {
        return Err(BlobError::Version(version));
    }
    if blob.len() < min {
        return Err(BlobError::Truncated {
            len: blob.len(),
            min,
        });
    }
    let (header, sealed) = blob.split_at(HEADER_LEN);
    let nonce: [u8; NONCE_LEN] = header[6..].try_into().unwrap_or_default();
    let mut body = sealed.to_vec();
    let plain = key
        .0
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut body,
        )
        .map_err(|_| BlobError::Authentication)?;
    postcard::from_bytes(plain).map_err(|e| BlobError::Payload(e.to_string()))
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::super::repair::{AppOptions, Negotiated, Window};
    use super::*;

    fn sample() -> Payload {
        Payload {
            id: CheckpointId([7; 16]),
            created_unix_ms: 1_700_000_000_000,
            record: br#"{"conn":"00ab"}"#.to_vec(),
            socket: SocketImage {
                local: "192.0.2.2:40000".parse().unwrap(),
                remote: "198.51.100.2:5001".parse().unwrap(),
                snd_una: 0xffff_fff0,
                unsent: 3,
                rcv_copied: 12,
                negotiated: Negotiated {
                    mss: 1448,
                    sack: true,
                    timestamps: true,
                    wscale: Some((7, 9)),
                },
                window: Window {
                    snd_wl1: 1,
                    snd_wnd: 2,
                    max_window: 3,
                    rcv_wnd: 4,
                    rcv_wup: 5,
                },
                ts_clock: 99,
                app: AppOptions {
                    nodelay: true,
                    keepalive: false,
                },
                recv_queue: b"unread".to_vec(),
                send_queue: vec![0xa5; 3000],
            },
        }
    }

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; KEY_LEN])
    }

    #[test]
    fn seal_then_open_gives_the_payload() {
        let blob = seal(&key(1), &sample()).unwrap();
        assert_eq!(&blob[..6], b"RKCP\x00\x01");
        assert_eq!(open(&key(1), &blob).unwrap(), sample());
        // Queues are stored as bytes, not one varint per byte.
        assert!(blob.len() < 3000 + 200, "{} bytes", blob.len());
    }

    #[test]
    fn two_seals_differ() {
        let (a, b) = (
            seal(&key(1), &sample()).unwrap(),
            seal(&key(1), &sample()).unwrap(),
        );
        assert_ne!(a, b, "fresh nonce each time");
    }

    #[test]
    fn every_flipped_bit_is_an_authentication_failure() {
        let blob = seal(&key(1), &sample()).unwrap();
        for i in (6..blob.len())
            .step_by(97)
            .chain([6, 17, 18, blob.len() - 1])
        {
            let mut bad = blob.clone();
            bad[i] ^= 0x10;
            let e = open(&key(1), &bad).unwrap_err();
            assert!(matches!(e, BlobError::Authentication), "byte {i}: {e}");
        }
    }

    #[test]
    fn truncation_at_any_length_is_refused() {
        let blob = seal(&key(1), &sample()).unwrap();
        for len in [0, 3, 5, 6, 17, 33, 34, blob.len() / 2, blob.len() - 1] {
            let e = open(&key(1), &blob[..len]).unwrap_err();
            match e {
                BlobError::Truncated { .. } | BlobError::Authentication => {}
                BlobError::Magic(_) if len < 4 => {}
                other => panic!("length {len}: {other}"),
            }
        }
        let e = open(&key(1), &blob[..10]).unwrap_err().to_string();
        assert_eq!(e, "blob truncated: 10 bytes, a checkpoint has at least 34");
    }

    #[test]
    fn another_clusters_key_cannot_open_it() {
        let blob = seal(&key(1), &sample()).unwrap();
        assert!(matches!(
            open(&key(2), &blob).unwrap_err(),
            BlobError::Authentication
        ));
    }

    #[test]
    fn foreign_data_and_future_versions_are_named() {
        let e = open(&key(1), b"GIF89a plus some more bytes to be long enough").unwrap_err();
        assert!(matches!(e, BlobError::Magic(_)), "{e}");
        let mut blob = seal(&key(1), &sample()).unwrap();
        blob[5] = 2;
        let e = open(&key(1), &blob).unwrap_err().to_string();
        assert!(e.contains("version 2"), "{e}");
    }

    #[test]
    fn key_files_raw_or_hex_private_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rackd-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("raw");
        std::fs::write(&raw, [3u8; 32]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let hex = dir.join("hex");
        std::fs::write(&hex, format!("{}\n", "03".repeat(32))).unwrap();
        std::fs::set_permissions(&hex, std::fs::Permissions::from_mode(0o400)).unwrap();
        let blob = seal(&Key::load(&raw).unwrap(), &sample()).unwrap();
        assert_eq!(open(&Key::load(&hex).unwrap(), &blob).unwrap(), sample());

        std::fs::set_permissions(&hex, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Key::load(&hex).unwrap_err().to_string();
        assert!(e.contains("mode 0644"), "{e}");
        let short = dir.join("short");
        std::fs::write(&short, [1u8; 31]).unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Key::load(&short).unwrap_err().to_string();
        assert!(e.contains("holds 31 bytes"), "{e}");
        let e = Key::load(&dir.join("absent")).unwrap_err().to_string();
        assert!(e.contains("absent") && e.contains("32 random bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
