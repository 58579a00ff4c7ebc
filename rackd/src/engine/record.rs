//! A managed connection as data: what another host (checkpoint and restore) or the next run of
//! rackd (a restart) needs to carry it on.

use std::net::SocketAddr;
use std::time::Instant;

use edp::crypto::SecretKey;
use edp::init::Session;
use edp::message::{Capabilities, ConnId};
use serde::{Deserialize, Serialize};
use tcpseq::SeqNum;

use super::flow::{Flow, FlowKey, Init, Role, State};
use super::peer::Peer;
use super::{Action, CommandError, Engine};

/// Identity, secret and history of a managed connection. Sealed into the checkpoint blob, or
/// kept in the root-only state file; never logged (its `Debug` omits the secret).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowRecord {
    pub conn_id: u64,
    pub role: Role,
    pub token_local: u32,
    pub token_peer: u32,
    /// The peer as the wire carries the connection now (a restored socket connects to it).
    pub peer: SocketAddr,
    /// This end as the wire carries it (a restored socket keeps its port if it is free).
    pub local: SocketAddr,
    pub secret: [u8; 32],
    pub capabilities: u32,
    /// Moves between hosts so far.
    pub generation: u32,
    pub reconnects: u32,
}

impl std::fmt::Debug for FlowRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowRecord")
            .field("conn_id", &format_args!("{:016x}", self.conn_id))
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A restored socket's sequence state (read through `TCP_REPAIR`): the next byte it expects
/// to be acknowledged and the next it expects to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqPoint {
    pub snd_una: u32,
    pub rcv_nxt: u32,
}

/// A managed connection kept across a restart of rackd: its record, the local socket's view
/// and the ISNs its sequence state is derived from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedFlow {
    pub record: FlowRecord,
    pub socket_local: SocketAddr,
    pub socket_remote: SocketAddr,
    pub isn_local: u32,
    pub isn_peer: u32,
    /// Suspended by command.
    pub pinned: bool,
}

impl SavedFlow {
    pub fn key(&self) -> FlowKey {
        FlowKey {
            local: self.socket_local,
            remote: self.socket_remote,
        }
    }
}

/// `tcpi_bytes_acked` counts the client's SYN but not the server's (see `SeqState::derive`).
pub(super) fn syn_counted(role: Role) -> u32 {
    match role {
        Role::Client => 0,
        Role::Server => 1,
    }
}

impl FlowRecord {
    /// The record of a managed flow (connected or suspended); `None` for any other.
    pub(super) fn of(flow: &Flow) -> Option<Self> {
        if !matches!(flow.state, State::Connected | State::Suspended { .. }) {
            return None;
        }
        let session = flow.session.as_ref()?;
        Some(FlowRecord {
            conn_id: flow.conn_id()?.0,
            role: flow.role,
            token_local: flow.token_local,
            token_peer: flow.token_peer,
            peer: flow.wire.remote,
            local: flow.wire.local,
            secret: *session.key().expose(),
            capabilities: session.capabilities.0,
            generation: flow.generation,
            reconnects: flow.reconnects,
        })
    }

    pub(super) fn secret(&self) -> SecretKey {
        SecretKey::from_bytes(self.secret)
    }

    /// A flow for the local socket `key` carrying this record's connection, its sequence state
    /// derived from `isns` (local, peer).
    pub(super) fn to_flow(
        &self,
        key: FlowKey,
        state: State,
        isns: (SeqNum, SeqNum),
        now: Instant,
    ) -> Flow {
        let session = Session::from_parts(
            ConnId(self.conn_id),
            match self.role {
                Role::Client => edp::Role::Initiator,
                Role::Server => edp::Role::Responder,
            },
            Capabilities(self.capabilities),
            self.secret(),
        );
        let mut flow = Flow::new(key, self.role, state, now);
        flow.token_local = self.token_local;
        flow.token_peer = self.token_peer;
        flow.generation = self.generation;
        flow.reconnects = self.reconnects;
        flow.init = Init::Done { ack_frame: None };
        flow.session = Some(Box::new(session));
        flow.isn_local = Some(isns.0);
        flow.isn_peer = Some(isns.1);
        flow
    }
}

impl Engine {
    /// Every managed connection, for the state file.
    pub fn saved_flows(&self) -> Vec<SavedFlow> {
        self.flows
            .values()
            // A user-level peer has no daemon to resume with: a restart leaves it plain TCP.
            .filter(|f| !f.user_peer)
            .filter_map(|f| {
                Some(SavedFlow {
                    record: FlowRecord::of(f)?,
                    socket_local: f.key.local,
                    socket_remote: f.key.remote,
                    isn_local: f.isn_local?.0,
                    isn_peer: f.isn_peer?.0,
                    pinned: f.pinned,
                })
            })
            .collect()
    }

    /// Takes over a connection a previous run of rackd managed (its socket still exists):
    /// connected, its translations and kept address back in place, and suspended again if it
    /// was suspended by command. A connection the peer suspended meanwhile resumes with the
    /// first heartbeats.
    pub fn adopt(&mut self, now: Instant, saved: &SavedFlow) -> Result<(), CommandError> {
        let (key, record) = (saved.key(), &saved.record);
        let conn_id = ConnId(record.conn_id);
        if self.by_conn.contains_key(&conn_id) || self.flows.contains_key(&key) {
            return Err(CommandError::AlreadyHere(format!(
                "{:016x}",
                record.conn_id
            )));
        }
        let isns = (SeqNum(saved.isn_local), SeqNum(saved.isn_peer));
        let flow = record.to_flow(key, State::Connected, isns, now);
        self.flows.insert(key, flow);
        self.by_conn.insert(conn_id, key);
        self.peers
            .entry(record.peer.ip())
            .or_insert_with(|| Peer::new(now))
            .conns
            .insert(conn_id);
        let wire = FlowKey {
            local: record.local,
            remote: record.peer,
        };
        if wire != key {
            if key.local.ip() != wire.local.ip() && self.kept.insert(key.local.ip()) {
                self.actions.push_back(Action::KeepLocal(key.local.ip()));
            }
            self.rewire(key, wire);
        }
        if saved.pinned {
            let _ = self.pin(now, key);
        }
        self.wake(now);
        self.revision += 1;
        Ok(())
    }

    /// Changes whenever the set of managed connections or what is saved of them changes.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}
