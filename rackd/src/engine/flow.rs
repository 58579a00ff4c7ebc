//! What rackd knows about one TCP connection, keyed by the local socket's view of its addresses.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use edp::init::{Initiator, Session};
use edp::message::ConnId;
use tcpseq::SeqNum;

use super::edp_port::EdpPort;
use super::hold::Hold;
use super::inband::InBand;

/// A connection as the local socket sees it: its own address and its peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}

/// Which way a packet travels relative to the local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Sent by the local socket (seen at the output hook).
    Out,
    /// Arriving for the local socket (seen at the prerouting hook).
    In,
}

impl FlowKey {
    /// The key of a packet with the given source and destination travelling in `dir`.
    pub fn of_packet(dir: Dir, src: SocketAddr, dst: SocketAddr) -> Self {
        match dir {
            Dir::Out => Self {
                local: src,
                remote: dst,
            },
            Dir::In => Self {
                local: dst,
                remote: src,
            },
        }
    }
}

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Client,
    Server,
}

/// The states `rackctl status` shows, with the data each one needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// SYNs seen; waiting to learn whether the peer runs rackd and for initialisation.
    Negotiating {
        token_local: u32,
        token_peer: Option<u32>,
    },
    /// Both ends agreed; monitored.
    Connected,
    Suspended {
        since: Instant,
    },
    Reconnecting {
        since: Instant,
    },
    /// The peer has no rackd: plain TCP, nothing of it reaches rackd again.
    Released,
    /// The local socket ended while suspended: kept, so that heartbeats carry on until the
    /// peer is back (`peer_back`) and its next packet draws the kernel's reset here.
    Closed {
        peer_back: Option<Instant>,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Negotiating { .. } => "negotiating",
            State::Connected => "connected",
            State::Suspended { .. } => "suspended",
            State::Reconnecting { .. } => "reconnecting",
            State::Released => "released",
            State::Closed { .. } => "closed",
        }
    }

    /// Every state name, in the order status output lists them.
    pub const NAMES: [&'static str; 6] = [
        "negotiating",
        "connected",
        "suspended",
        "reconnecting",
        "released",
        "closed",
    ];
}

/// Timing of the re-sends that put a resumed connection back in step.
#[derive(Debug, Clone, Copy)]
pub struct Resync {
    pub next_send: Instant,
    pub interval: std::time::Duration,
    /// After this the window is reopened anyway.
    pub until: Instant,
}

/// Where the initialisation over the daemon channel stands.
#[derive(Debug)]
pub enum Init {
    /// Not started: the peer's token is not known yet.
    Idle,
    /// Client side: `Init` sent (and resent until answered).
    Sent {
        initiator: Box<Initiator>,
        frame: Vec<u8>,
        next_send: Instant,
        interval: std::time::Duration,
    },
    /// Client side: the SYN-ACK came without the option; asking the server's daemon whether it
    /// is there (`Probe`, resent until `until`).
    Probing {
        frame: Vec<u8>,
        next_send: Instant,
        interval: std::time::Duration,
        until: Instant,
    },
    /// Server side: waiting for the client's `Init`.
    Awaiting,
    /// Done; the server keeps its answer to repeat it when an `Init` arrives again (the first
    /// `InitAck` was lost).
    Done { ack_frame: Option<Vec<u8>> },
}

#[derive(Debug)]
pub struct Flow {
    /// The connection as the local socket sees it; never changes.
    pub key: FlowKey,
    /// The connection as the wire carries it now: different from `key` after an address change
    /// at either end, and then translated in the kernel both ways.
    pub wire: FlowKey,
    pub role: Role,
    pub state: State,
    pub created: Instant,
    /// When the state last changed (drives per-state timeouts).
    pub entered: Instant,
    pub reconnects: u32,
    /// The tokens exchanged in the SYNs, kept after negotiation as the connection's identity.
    pub token_local: u32,
    pub token_peer: u32,
    /// Initial sequence numbers from the SYN and SYN-ACK: with the socket's byte counters they
    /// give its exact sequence state when rackd must speak for the peer.
    pub isn_local: Option<SeqNum>,
    pub isn_peer: Option<SeqNum>,
    pub init: Init,
    /// Boxed, like `hold`: most flows in the table are negotiating, and a SYN flood fills it.
    pub session: Option<Box<Session>>,
    /// Suspended on an operator's request: stays suspended until resumed the same way.
    pub pinned: bool,
    /// While suspended: what rackd tells the local socket (and the peer) in their place.
    pub hold: Option<Box<Hold>>,
    /// Connected again, the hold kept until the peer has acknowledged the socket's outstanding
    /// data (see `hold`): when to re-send the socket's retransmission, and when to stop.
    pub resync: Option<Box<Resync>>,
    /// A SYN with the rackd option (peer token, ISN) arrived for this tuple while rackd still
    /// lists an older connection on it; if the local kernel answers with a SYN-ACK, that older
    /// connection is gone and this is a new one.
    pub reused_by: Option<(u32, SeqNum)>,
    /// Moves of the socket between hosts accepted so far (checkpoint and restore), and the one
    /// announced by the peer and not completed yet.
    pub generation: u32,
    pub moving: Option<u32>,
    /// The peer's address before its socket last moved to another host: beats still arriving
    /// from there are late, not news of a move.
    pub moved_from: Option<std::net::IpAddr>,
    /// A connection to a user-level EDP server being initialised in-band (see `inband`).
    pub inband: Option<Box<InBand>>,
    /// A connection to a `peer.edp_ports` port, classified and maybe translated (see
    /// `edp_port`).
    pub edp_port: Option<Box<EdpPort>>,
    /// The peer is a user-level EDP program, not a rackd: no daemon channel, so no heartbeats.
    pub user_peer: bool,
    /// From the socket table.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Flow {
    pub fn new(key: FlowKey, role: Role, state: State, now: Instant) -> Self {
        Self {
            key,
            wire: key,
            role,
            state,
            created: now,
            entered: now,
            reconnects: 0,
            token_local: 0,
            token_peer: 0,
            isn_local: None,
            isn_peer: None,
            init: Init::Idle,
            session: None,
            pinned: false,
            hold: None,
            resync: None,
            reused_by: None,
            generation: 0,
            moving: None,
            moved_from: None,
            inband: None,
            edp_port: None,
            user_peer: false,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// The identifier both ends use: client token in the high half, server token in the low.
    pub fn conn_id(&self) -> Option<ConnId> {
        let (local, peer) = match self.state {
            State::Negotiating {
                token_local,
                token_peer,
            } => (token_local, token_peer?),
            _ => (self.token_local, self.token_peer),
        };
        let (client, server) = match self.role {
            Role::Client => (local, peer),
            Role::Server => (peer, local),
        };
        Some(ConnId(u64::from(client) << 32 | u64::from(server)))
    }

    /// A server flow of a SYN without the option, kept only in case the client's rackd probes
    /// (see `Message::Probe`): not offered protection yet, so not listed.
    pub fn awaits_probe(&self) -> bool {
        self.role == Role::Server
            && matches!(
                self.state,
                State::Negotiating {
                    token_peer: None,
                    ..
                }
            )
            && matches!(self.init, Init::Idle)
    }

    /// Held by rackd: suspended (by failure or by command).
    pub fn is_suspended(&self) -> bool {
        matches!(self.state, State::Suspended { .. })
    }

    /// The connection's identifier, the same on both ends: the client's token, then the
    /// server's (zero while the server's is not known yet).
    pub fn id_hex(&self) -> String {
        let (local, peer) = match self.state {
            State::Negotiating {
                token_local,
                token_peer,
            } => (token_local, token_peer.unwrap_or(0)),
            _ => (self.token_local, self.token_peer),
        };
        let (client, server) = match self.role {
            Role::Client => (local, peer),
            Role::Server => (peer, local),
        };
        format!("{client:08x}{server:08x}")
    }

    /// Changes state, logging every transition in one place.
    pub fn set_state(&mut self, state: State, now: Instant) {
        tracing::debug!(flow = %self.key, from = self.state.name(), to = state.name(), "state");
        if let State::Negotiating {
            token_local,
            token_peer,
        } = self.state
        {
            self.token_local = token_local;
            self.token_peer = token_peer.unwrap_or(0);
        }
        self.state = state;
        self.entered = now;
    }
}
