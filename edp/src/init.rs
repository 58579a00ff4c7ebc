//! Initialisation: one round trip of [`Init`] / [`InitAck`] agrees on a connection id, the
//! negotiated capabilities and a shared resumption key.
//!
//! ```text
//! initiator                                   responder
//!   Init { conn id, x25519 pk_i, buffers, offered caps, [host sig over pk_i] }  -->
//!                     <--  InitAck { conn id, pk_r, buffers, accepted caps,
//!                                    [host sig over pk_i, pk_r], confirm MAC }
//! ```
//!
//! Host signatures (when a [`HostIdentity`] is configured) cover
//! `"rackd-edp/1 sign init" || conn id || pk_i || offered caps` and
//! `"rackd-edp/1 sign init-ack" || conn id || pk_i || pk_r || accepted caps`, so the ephemeral keys
//! of both ends are authenticated. `confirm = MAC(resume key, "rackd-edp/1 init-ack" || conn id)`
//! shows the initiator that the responder derived the same key.

use crate::crypto::{derive_resume_key, CryptoError, Entropy, EphemeralKey, SecretKey};
use crate::crypto::{labels, PUBLIC_KEY_LEN};
use crate::identity::{verify_signature, HostIdentity, HostKey, PeerTrust, TrustError};
use crate::message::{Capabilities, ConnId, HostSignature, Init, InitAck};
use crate::Role;
use std::sync::Arc;
use thiserror::Error;

/// What this end tells its peer during initialisation.
#[derive(Debug, Clone, Default)]
pub struct LocalParams {
    pub sndbuf: u32,
    pub rcvbuf: u32,
    /// Offered (initiator) or supported (responder) capabilities.
    pub capabilities: Capabilities,
    /// Signs the handshake when set.
    pub identity: Option<Arc<HostIdentity>>,
}

/// The result of a completed initialisation.
#[derive(Debug, Clone)]
pub struct Session {
    pub conn_id: ConnId,
    pub role: Role,
    /// Capabilities both ends agreed on.
    pub capabilities: Capabilities,
    pub peer_sndbuf: u32,
    pub peer_rcvbuf: u32,
    /// The peer's host key, if it presented one (already verified and judged).
    pub peer_host_key: Option<HostKey>,
    key: SecretKey,
}

impl Session {
    /// Rebuilds a session, e.g. from a checkpoint.
    pub fn from_parts(
        conn_id: ConnId,
        role: Role,
        capabilities: Capabilities,
        key: SecretKey,
    ) -> Self {
        Session {
            conn_id,
            role,
            capabilities,
            peer_sndbuf: 0,
            peer_rcvbuf: 0,
            peer_host_key: None,
            key,
        }
    }

    /// The resumption key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// Non-secret fingerprint of the key: equal on both ends of a successful initialisation.
    pub fn key_id(&self) -> [u8; 8] {
        self.key.key_id()
    }
}

/// Why initialisation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InitError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("InitAck is for connection {got}, expected {expected}")]
    ConnIdMismatch { expected: ConnId, got: ConnId },
    #[error("peer accepted capabilities {accepted:#x} that were not offered ({offered:#x})")]
    CapabilitiesNotOffered { offered: u32, accepted: u32 },
    #[error("InitAck confirmation MAC does not verify: the peer derived a different key")]
    BadConfirm,
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// The initiator's side, waiting for the [`InitAck`].
#[derive(Debug)]
pub struct Initiator {
    conn_id: ConnId,
    ephemeral: EphemeralKey,
    offered: Capabilities,
}

impl Initiator {
    /// Starts an initialisation; `conn_id` is random unless given (e.g. derived from SYN tokens).
    pub fn start(
        rng: &mut dyn Entropy,
        conn_id: Option<ConnId>,
        params: &LocalParams,
    ) -> Result<(Initiator, Init), InitError> {
        let conn_id = match conn_id {
            Some(id) => id,
            None => ConnId(rng.u64()?),
        };
        let ephemeral = EphemeralKey::generate(rng)?;
        let public_key = ephemeral.public();
        let host = params.identity.as_ref().map(|id| HostSignature {
            public_key: id.public_key(),
            signature: id.sign(&init_transcript(conn_id, &public_key, params.capabilities)),
        });
        let init = Init {
            conn_id,
            public_key,
            sndbuf: params.sndbuf,
            rcvbuf: params.rcvbuf,
            capabilities: params.capabilities,
            host,
        };
        Ok((
            Initiator {
                conn_id,
                ephemeral,
                offered: params.capabilities,
            },
            init,
        ))
    }

    pub fn conn_id(&self) -> ConnId {
        self.conn_id
    }

    /// Completes the initialisation with the responder's answer.
    pub fn finish(
        self,
        ack: &InitAck,
        peer: &str,
        trust: &mut PeerTrust,
    ) -> Result<Session, InitError> {
        if ack.conn_id != self.conn_id {
            return Err(InitError::ConnIdMismatch {
                expected: self.conn_id,
                got: ack.conn_id,
            });
        }
        if !self.offered.contains(ack.capabilities) {
            return Err(InitError::CapabilitiesNotOffered {
                offered: self.offered.0,
                accepted: ack.capabilities.0,
            });
        }
        let pk_i = self.ephemeral.public();
        let transcript =
            init_ack_transcript(self.conn_id, &pk_i, &ack.public_key, ack.capabilities);
        let peer_host_key = judge_host(ack.host.as_ref(), &transcript, peer, trust)?;
        let shared = self.ephemeral.agree(&ack.public_key)?;
        let key = derive_resume_key(&shared, self.conn_id.0, &pk_i, &ack.public_key)?;
        if !key.verify(
            labels::INIT_ACK,
            &[&self.conn_id.0.to_be_bytes()],
            &ack.confirm,
        ) {
            return Err(InitError::BadConfirm);
        }
        Ok(Session {
            conn_id: self.conn_id,
            role: Role::Initiator,
            capabilities: ack.capabilities,
            peer_sndbuf: ack.sndbuf,
            peer_rcvbuf: ack.rcvbuf,
            peer_host_key,
            key,
        })
    }
}

/// The responder's side: answers an [`Init`] in one step.
pub fn respond(
    rng: &mut dyn Entropy,
    init: &Init,
    params: &LocalParams,
    peer: &str,
    trust: &mut PeerTrust,
) -> Result<(InitAck, Session), InitError> {
    let offered = init_transcript(init.conn_id, &init.public_key, init.capabilities);
    let peer_host_key = judge_host(init.host.as_ref(), &offered, peer, trust)?;
    let ephemeral = EphemeralKey::generate(rng)?;
    let pk_r = ephemeral.public();
    let shared = ephemeral.agree(&init.public_key)?;
    let key = derive_resume_key(&shared, init.conn_id.0, &init.public_key, &pk_r)?;
    let capabilities = init.capabilities.intersect(params.capabilities);
    let transcript = init_ack_transcript(init.conn_id, &init.public_key, &pk_r, capabilities);
    let host = params.identity.as_ref().map(|id| HostSignature {
        public_key: id.public_key(),
        signature: id.sign(&transcript),
    });
    let ack = InitAck {
        conn_id: init.conn_id,
        public_key: pk_r,
        sndbuf: params.sndbuf,
        rcvbuf: params.rcvbuf,
        capabilities,
        host,
        confirm: key.mac(labels::INIT_ACK, &[&init.conn_id.0.to_be_bytes()]),
    };
    let session = Session {
        conn_id: init.conn_id,
        role: Role::Responder,
        capabilities,
        peer_sndbuf: init.sndbuf,
        peer_rcvbuf: init.rcvbuf,
        peer_host_key,
        key,
    };
    Ok((ack, session))
}

fn init_transcript(conn_id: ConnId, pk_i: &[u8; PUBLIC_KEY_LEN], caps: Capabilities) -> Vec<u8> {
    [
        labels::SIGN_INIT,
        &conn_id.0.to_be_bytes(),
        pk_i,
        &caps.0.to_be_bytes(),
    ]
    .concat()
}

fn init_ack_transcript(
    conn_id: ConnId,
    pk_i: &[u8; PUBLIC_KEY_LEN],
    pk_r: &[u8; PUBLIC_KEY_LEN],
    caps: Capabilities,
) -> Vec<u8> {
    [
        labels::SIGN_INIT_ACK,
        &conn_id.0.to_be_bytes(),
        pk_i,
        pk_r,
        &caps.0.to_be_bytes(),
    ]
    .concat()
}

/// Verifies a presented host signature, then asks the trust policy about the key.
fn judge_host(
    host: Option<&HostSignature>,
    transcript: &[u8],
    peer: &str,
    trust: &mut PeerTrust,
) -> Result<Option<HostKey>, TrustError> {
    if let Some(h) = host {
        if !verify_signature(&h.public_key, transcript, &h.signature) {
            return Err(TrustError::BadSignature {
                peer: peer.to_owned(),
            });
        }
    }
    let key = host.map(|h| h.public_key);
    trust.check(peer, key.as_ref())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeterministicEntropy;
    use crate::identity::{MemoryPinStore, PinStore};

    fn params(caps: Capabilities, identity: Option<Arc<HostIdentity>>) -> LocalParams {
        LocalParams {
            sndbuf: 1000,
            rcvbuf: 2000,
            capabilities: caps,
            identity,
        }
    }

    fn identity(seed: u64) -> Arc<HostIdentity> {
        Arc::new(HostIdentity::generate(&mut DeterministicEntropy::new(seed)).unwrap())
    }

    #[test]
    fn both_ends_agree_on_key_and_capabilities() {
        let mut rng = DeterministicEntropy::new(10);
        let offered = Capabilities::RESUME | Capabilities::HEARTBEAT;
        let (initiator, init) = Initiator::start(&mut rng, None, &params(offered, None)).unwrap();
        let supported = Capabilities::RESUME | Capabilities::MIGRATE;
        let (ack, server) = respond(
            &mut rng,
            &init,
            &params(supported, None),
            "c",
            &mut PeerTrust::Opportunistic,
        )
        .unwrap();
        let client = initiator
            .finish(&ack, "s", &mut PeerTrust::Opportunistic)
            .unwrap();
        assert_eq!(client.key(), server.key());
        assert_eq!(client.key_id(), server.key_id());
        assert_eq!(client.capabilities, Capabilities::RESUME);
        assert_eq!(server.capabilities, Capabilities::RESUME);
        assert_eq!(
            (client.role, server.role),
            (Role::Initiator, Role::Responder)
        );
        assert_eq!((client.peer_sndbuf, server.peer_rcvbuf), (1000, 2000));
        assert_eq!(client.conn_id, init.conn_id);
    }

    #[test]
    fn given_conn_id_is_used() {
        let mut rng = DeterministicEntropy::new(11);
        let (i, init) =
            Initiator::start(&mut rng, Some(ConnId(42)), &params(Capabilities::ALL, None)).unwrap();
        assert_eq!((i.conn_id(), init.conn_id), (ConnId(42), ConnId(42)));
    }

    fn run(
        init_mut: impl FnOnce(&mut Init),
        ack_mut: impl FnOnce(&mut InitAck),
        client_trust: &mut PeerTrust,
        server_trust: &mut PeerTrust,
    ) -> Result<(), InitError> {
        let mut rng = DeterministicEntropy::new(12);
        let (initiator, mut init) = Initiator::start(
            &mut rng,
            None,
            &params(Capabilities::ALL, Some(identity(1))),
        )
        .unwrap();
        init_mut(&mut init);
        let (mut ack, _) = respond(
            &mut rng,
            &init,
            &params(Capabilities::ALL, Some(identity(2))),
            "client",
            server_trust,
        )?;
        ack_mut(&mut ack);
        initiator.finish(&ack, "server", client_trust).map(|_| ())
    }

    fn opp() -> PeerTrust {
        PeerTrust::Opportunistic
    }

    #[test]
    fn tampering_is_detected() {
        run(|_| {}, |_| {}, &mut opp(), &mut opp()).unwrap();
        let err = run(|_| {}, |a| a.conn_id = ConnId(1), &mut opp(), &mut opp()).unwrap_err();
        assert!(matches!(err, InitError::ConnIdMismatch { .. }), "{err}");
        let err = run(|_| {}, |a| a.confirm[0] ^= 1, &mut opp(), &mut opp()).unwrap_err();
        assert!(matches!(err, InitError::BadConfirm), "{err}");
        // A man in the middle replacing the responder's x25519 key breaks the host signature.
        let err = run(|_| {}, |a| a.public_key[5] ^= 1, &mut opp(), &mut opp()).unwrap_err();
        assert!(
            matches!(err, InitError::Trust(TrustError::BadSignature { .. })),
            "{err}"
        );
        let err = run(|i| i.public_key[5] ^= 1, |_| {}, &mut opp(), &mut opp()).unwrap_err();
        assert!(
            matches!(err, InitError::Trust(TrustError::BadSignature { .. })),
            "{err}"
        );
        let err = run(
            |i| i.capabilities = Capabilities(1),
            |_| {},
            &mut opp(),
            &mut opp(),
        );
        assert!(matches!(
            err,
            Err(InitError::Trust(TrustError::BadSignature { .. }))
        ));
    }

    #[test]
    fn mitm_without_the_pinned_key_is_refused() {
        let mut pins = MemoryPinStore::new();
        pins.pin("server", identity(99).public_key()).unwrap();
        let mut client_trust = PeerTrust::TrustOnFirstUse(Box::new(pins));
        let err = run(|_| {}, |_| {}, &mut client_trust, &mut opp()).unwrap_err();
        assert!(
            matches!(err, InitError::Trust(TrustError::Mismatch { .. })),
            "{err}"
        );
        // Stripping the signature does not help either.
        let err = run(|_| {}, |a| a.host = None, &mut client_trust, &mut opp()).unwrap_err();
        assert!(
            matches!(err, InitError::Trust(TrustError::MissingPinned { .. })),
            "{err}"
        );
        let mut allow = PeerTrust::AllowList([identity(1).public_key()].into_iter().collect());
        run(|_| {}, |_| {}, &mut opp(), &mut allow).unwrap();
        let mut deny = PeerTrust::AllowList([identity(3).public_key()].into_iter().collect());
        let err = run(|_| {}, |_| {}, &mut opp(), &mut deny).unwrap_err();
        assert!(
            matches!(err, InitError::Trust(TrustError::NotAllowed { .. })),
            "{err}"
        );
    }

    #[test]
    fn accepted_capabilities_must_have_been_offered() {
        let err = run(
            |_| {},
            |a| a.capabilities = Capabilities(1 << 9),
            &mut opp(),
            &mut opp(),
        );
        assert!(matches!(err, Err(InitError::CapabilitiesNotOffered { .. })));
    }

    #[test]
    fn low_order_peer_key_is_rejected() {
        let mut rng = DeterministicEntropy::new(13);
        let (_, mut init) =
            Initiator::start(&mut rng, None, &params(Capabilities::ALL, None)).unwrap();
        init.public_key = [0; 32];
        let err = respond(
            &mut rng,
            &init,
            &params(Capabilities::ALL, None),
            "c",
            &mut opp(),
        );
        assert!(matches!(
            err,
            Err(InitError::Crypto(CryptoError::NonContributory))
        ));
    }
}
