//! The daemon's protocol core, without I/O.
//!
//! [`Engine`] is driven like quinn-proto's `Connection`: the I/O layer feeds it what happened
//! (`on_syn`, `on_datagram`, `on_segment`, `on_socket`, `on_socket_table`, `handle_timeout`)
//! with the current time, drains [`Engine::poll_action`], and sleeps until
//! [`Engine::poll_timeout`]. It never reads a clock or touches a socket, so every ordering of
//! events is a unit test.
//!
//! Life of a flow: SYNs carry the rackd option (negotiating) → `Init`/`InitAck` over the daemon
//! channel (UDP) give it an id and a secret (connected; its packets no longer reach rackd) →
//! heartbeats per peer host detect a failure (suspended: queued again, held open by
//! [`hold::Hold`]) → heartbeats return (connected again).

mod edp_port;
mod flow;
pub mod hold;
mod inband;
mod migrate;
mod peer;
mod reassembly;
mod record;
mod user_client;
mod user_peer;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use edp::crypto::Entropy;
use edp::identity::PeerTrust;
use edp::init::{self, Initiator, LocalParams};
use edp::message::{Capabilities, ConnId, Message};
use tcpseq::SeqNum;

pub use flow::{Dir, Flow, FlowKey, Init, Resync, Role, State};
use hold::{Hold, SeqState};
pub use hold::{SegmentSeen, SocketCounters};
use inband::InBand;
pub use inband::{EdpServer, InBandError};
pub use migrate::RestoreState;
use migrate::{Arrival, Departure};
use peer::{Peer, Timing};
pub use record::{FlowRecord, SavedFlow, SeqPoint};

/// How long a connection may stay in negotiation (SYN retries, then initialisation) before it is
/// released as plain TCP.
pub const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(30);
/// First retransmission interval of an unanswered `Init`; doubles up to [`INIT_RETRY_MAX`].
const INIT_RETRY: Duration = Duration::from_millis(200);
const INIT_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a client's rackd probes for the server's when the option did not come back, and
/// how long a server's rackd remembers a SYN without the option for such a probe.
const PROBE_LIMIT: Duration = Duration::from_millis(1500);
const PROBE_WAIT: Duration = Duration::from_secs(3);
/// A flow whose socket is missing from the socket table this long after its SYN is gone.
const SOCKET_GRACE: Duration = Duration::from_secs(3);
/// Flow table scan period while something is pending (negotiation, suspension).
const SCAN_BUSY: Duration = Duration::from_millis(100);
const SCAN_IDLE: Duration = Duration::from_secs(1);
/// Re-sends of the socket's retransmission after a resume: first interval, cap, and how long
/// to wait for the peer's acknowledgement before reopening the window anyway.
const RESYNC_FIRST: Duration = Duration::from_millis(100);
const RESYNC_MAX: Duration = Duration::from_secs(1);
const RESYNC_LIMIT: Duration = Duration::from_secs(10);
/// Without a captured retransmission the socket's own next one is awaited: its retransmission
/// timer backs off to at most 120 s.
const RESYNC_LIMIT_WITHOUT_HEAD: Duration = Duration::from_secs(130);
/// How long a connection whose socket ended during a suspension stays after its peer is back
/// (see [`State::Closed`]): long enough for the peer to resume and send.
const CLOSED_LINGER: Duration = Duration::from_secs(5);
/// Upper bound on connections in negotiation: beyond it new SYNs are not offered protection,
/// so a SYN flood costs bounded memory.
pub const MAX_NEGOTIATING: usize = 16_384;

/// Tunables, from the configuration file.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub heartbeat_interval: Duration,
    pub detect_after: Duration,
    /// How long a suspended connection waits for its peer before it is reset.
    pub reconnect_window: Duration,
    /// UDP port of the peers' daemon channel.
    pub peer_port: u16,
    /// Probe the peer's daemon when the SYN-ACK lacks the option (see `Message::Probe`).
    pub fallback: bool,
    /// Heartbeats are numbered from here on (see `Peer::beat`): the daemon starts from the
    /// wall clock in microseconds, which only grows from one run to the next.
    pub beat_base: u64,
    /// User-level EDP servers on hosts without rackd: connections to them are initialised
    /// in-band (see `inband`).
    pub edp_servers: Vec<EdpServer>,
    /// Local ports whose connections from user-level EDP clients rackd initialises in the
    /// server program's place (see `edp_port`).
    pub edp_ports: Vec<u16>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            heartbeat_interval: Duration::from_millis(1000),
            detect_after: Duration::from_millis(4000),
            reconnect_window: Duration::from_secs(3 * 24 * 3600),
            peer_port: 7113,
            fallback: true,
            beat_base: 0,
            edp_servers: Vec::new(),
            edp_ports: Vec::new(),
        }
    }
}

/// A queued SYN or SYN-ACK, reduced to what negotiation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynSeen {
    pub dir: Dir,
    pub key: FlowKey,
    /// SYN-ACK rather than SYN.
    pub ack: bool,
    /// The token of a rackd option in the packet, if it carried one.
    pub hello: Option<u32>,
    /// The packet's sequence number: its sender's ISN.
    pub seq: SeqNum,
}

/// What to do with the SYN packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynVerdict {
    Pass,
    /// Add the rackd option with this token, then pass.
    AddHello {
        token: u32,
    },
    /// rackd sends its own version of the packet (in-band EDP); this one must not travel.
    Drop,
}

/// What to do with a queued packet of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentVerdict {
    Accept,
    /// rackd answered it in the other end's place; the packet must not travel.
    Drop,
    /// This rewritten copy travels instead (complete checksums).
    Rewrite(Vec<u8>),
}

/// Work for the I/O layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A daemon-channel datagram, sent from the address the flows use on the wire (`from`), so
    /// the peer never learns of an address before rackd has moved its flows to it.
    Send {
        to: SocketAddr,
        from: IpAddr,
        datagram: Vec<u8>,
    },
    /// Start (`on`) or stop queueing both directions of the flow. Outgoing packets are matched
    /// as they leave (`wire`), incoming ones after translation back (`key`).
    Queue {
        key: FlowKey,
        wire: FlowKey,
        on: bool,
    },
    /// Like `Queue`, for a flow whose packets rackd rewrites (`edp_port`): while rackd is gone
    /// they are dropped, never let through unrewritten (the stream would be corrupted).
    QueueStrictly { key: FlowKey, on: bool },
    /// The flow's wire view changed from `old` to `wire` (equal to `key`: no translation):
    /// replace its in-kernel translations, and its outgoing queue entry if `queued`.
    Translate {
        key: FlowKey,
        old: FlowKey,
        wire: FlowKey,
        queued: bool,
    },
    /// Keep this address usable by local sockets that are bound to it, after it left its
    /// interface (their packets are translated to the new address on the wire).
    KeepLocal(IpAddr),
    /// Look the local socket up in the kernel's table and report it with [`Engine::on_socket`].
    ReadSocket { key: FlowKey },
    /// A crafted packet, addressed to the local socket or to the peer.
    Inject(Vec<u8>),
    /// The connection runs as plain TCP from now on.
    Released { key: FlowKey },
    /// Probe `key.remote` for a user-level EDP server from `key.local`'s address (EDP's probe
    /// connection, half-closed at once) and report with [`Engine::on_edp_probe`].
    ProbeEdp { key: FlowKey },
}

/// Totals kept after flows are gone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub released: u64,
    pub negotiation_timeouts: u64,
    pub init_failures: u64,
    pub closed: u64,
    pub suspensions: u64,
    pub resumptions: u64,
    pub expired: u64,
    pub bad_datagrams: u64,
    pub not_offered: u64,
}

/// Why an operator's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no connection with id {0}")]
    UnknownId(String),
    #[error("connection {id} is {state}: only a connected connection can be suspended")]
    NotConnected { id: String, state: &'static str },
    #[error("connection {0} was not suspended by command")]
    NotPinned(String),
    #[error(
        "connection {id} is {state}: a peer address can only be given to a suspended connection"
    )]
    NotSuspended { id: String, state: &'static str },
    #[error("{addr} is not of the connection's address family")]
    WrongFamily { addr: IpAddr },
    #[error("no connection {0} in rackd's table")]
    UnknownFlow(String),
    #[error("connection {flow} is {state}: only a managed connection (connected or suspended) can be checkpointed")]
    NotManaged { flow: String, state: &'static str },
    #[error("connection {0} is already on this host")]
    AlreadyHere(String),
}

pub struct Engine {
    flows: HashMap<FlowKey, Flow>,
    by_conn: HashMap<ConnId, FlowKey>,
    /// Flows whose wire view differs from the socket's, by wire view (outgoing packets are
    /// queued after translation).
    by_wire: HashMap<FlowKey, FlowKey>,
    /// Local addresses rackd keeps for sockets bound to them.
    kept: std::collections::HashSet<IpAddr>,
    peers: HashMap<IpAddr, Peer>,
    /// Flows checkpointed away from this host, by wire view, and flows restored here whose
    /// peer has not answered yet (see `migrate`).
    departed: HashMap<FlowKey, Departure>,
    arrivals: HashMap<FlowKey, Arrival>,
    actions: VecDeque<Action>,
    tokens: TokenSource,
    rng: Box<dyn Entropy + Send>,
    trust: PeerTrust,
    params: LocalParams,
    cfg: EngineConfig,
    timing: Timing,
    /// The last heartbeat number sent (see `Peer::beat`).
    beat_seq: u64,
    negotiating: usize,
    next_scan: Option<Instant>,
    /// See [`Engine::revision`].
    revision: u64,
    pub counters: Counters,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("flows", &self.flows.len())
            .field("peers", &self.peers.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Engine {
    /// `seed` makes token choice reproducible in tests; `rng` supplies key material.
    pub fn new(seed: u64, rng: Box<dyn Entropy + Send>, cfg: EngineConfig) -> Self {
        let timing = Timing {
            interval: cfg.heartbeat_interval,
            detect_after: cfg.detect_after,
            probe_interval: (cfg.heartbeat_interval / 4)
                .clamp(Duration::from_millis(20), Duration::from_millis(100)),
        };
        Self {
            flows: HashMap::new(),
            by_conn: HashMap::new(),
            by_wire: HashMap::new(),
            kept: std::collections::HashSet::new(),
            peers: HashMap::new(),
            departed: HashMap::new(),
            arrivals: HashMap::new(),
            actions: VecDeque::new(),
            tokens: TokenSource(seed),
            rng,
            trust: PeerTrust::Opportunistic,
            params: LocalParams {
                capabilities: Capabilities(Capabilities::RESUME.0 | Capabilities::HEARTBEAT.0),
                ..LocalParams::default()
            },
            beat_seq: cfg.beat_base,
            cfg,
            timing,
            negotiating: 0,
            next_scan: None,
            revision: 0,
            counters: Counters::default(),
        }
    }

    pub fn flow(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key)
    }

    /// The connections rackd offers protection to (not the option-less SYNs it remembers in
    /// case of a probe).
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values().filter(|f| !f.awaits_probe())
    }

    /// When the last authenticated heartbeat from the flow's peer arrived.
    pub fn last_heartbeat(&self, flow: &Flow) -> Option<Instant> {
        flow.session.as_ref()?;
        self.peers.get(&flow.wire.remote.ip()).map(Peer::last_rx)
    }

    // ----- negotiation -------------------------------------------------------------------

    /// Handles a queued SYN or SYN-ACK and says what to do with the packet.
    pub fn on_syn(&mut self, now: Instant, syn: SynSeen) -> SynVerdict {
        self.on_syn_packet(now, syn, || None)
    }

    /// Like [`Engine::on_syn`]; `packet` makes a complete copy of the packet, called only when
    /// rackd keeps one (connections to user-level EDP servers).
    pub fn on_syn_packet(
        &mut self,
        now: Instant,
        syn: SynSeen,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> SynVerdict {
        match (syn.dir, syn.ack) {
            (Dir::Out, false) => self.client_syn(now, syn, packet),
            (Dir::In, true) => self.client_syn_ack(now, syn, packet),
            (Dir::In, false) if syn.hello.is_none() && self.is_edp_port(syn.key) => {
                self.edp_port_syn(now, syn, packet);
                SynVerdict::Pass
            }
            (Dir::In, false) => {
                self.server_syn(now, syn);
                SynVerdict::Pass
            }
            (Dir::Out, true)
                if self
                    .flows
                    .get(&syn.key)
                    .is_some_and(|f| f.edp_port.is_some()) =>
            {
                self.edp_port_syn_ack(syn.key, packet);
                SynVerdict::Pass
            }
            (Dir::Out, true) => self.server_syn_ack(now, syn),
        }
    }

    fn client_syn(
        &mut self,
        now: Instant,
        syn: SynSeen,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> SynVerdict {
        if let Some(flow) = self.flows.get(&syn.key) {
            if let (Some(inband), true) = (&flow.inband, flow.isn_local == Some(syn.seq)) {
                // The socket's retransmission: rackd's own SYN (if any yet) goes in its place.
                if let Some(p) = inband.on_local_syn() {
                    self.inject(syn.key, p);
                }
                return SynVerdict::Drop;
            }
            match flow.state {
                // A retransmitted SYN carries the same token.
                State::Negotiating { token_local, .. } if flow.isn_local == Some(syn.seq) => {
                    return SynVerdict::AddHello { token: token_local };
                }
                // The local kernel opens a tuple only when its old connection is gone: the
                // port was reused before rackd noticed the end.
                _ => self.close(syn.key),
            }
        }
        if self.negotiating >= MAX_NEGOTIATING {
            self.counters.not_offered += 1;
            return SynVerdict::Pass;
        }
        let token = self.tokens.next();
        let state = State::Negotiating {
            token_local: token,
            token_peer: None,
        };
        let mut flow = Flow::new(syn.key, Role::Client, state, now);
        flow.isn_local = Some(syn.seq);
        if self
            .cfg
            .edp_servers
            .iter()
            .any(|s| s.matches(syn.key.remote))
        {
            // The SYN waits for the probe (see `inband`).
            if let Some(inband) = packet().and_then(|p| InBand::new(now, p)) {
                self.wake(inband.poll_timeout());
                flow.inband = Some(Box::new(inband));
                self.insert(now, flow);
                self.actions.push_back(Action::ProbeEdp { key: syn.key });
                return SynVerdict::Drop;
            }
        }
        self.insert(now, flow);
        SynVerdict::AddHello { token }
    }

    fn client_syn_ack(
        &mut self,
        now: Instant,
        syn: SynSeen,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> SynVerdict {
        if self.flows.get(&syn.key).is_some_and(|f| f.inband.is_some()) {
            return self.inband_syn_ack(now, syn.key, packet);
        }
        self.plain_syn_ack(now, syn);
        SynVerdict::Pass
    }

    fn plain_syn_ack(&mut self, now: Instant, syn: SynSeen) {
        let Some(flow) = self.flows.get_mut(&syn.key) else {
            return;
        };
        let State::Negotiating {
            token_local,
            token_peer: None,
        } = flow.state
        else {
            return;
        };
        if flow.role != Role::Client {
            return;
        }
        flow.isn_peer = Some(syn.seq);
        let Some(token_peer) = syn.hello else {
            if !self.cfg.fallback {
                self.release(syn.key);
                return;
            }
            // Stripped on the path, or no rackd there: ask its daemon.
            let frame = Message::Probe {
                token: token_local,
                client: syn.key.local,
                server: syn.key.remote,
            }
            .encode();
            flow.init = Init::Probing {
                frame: frame.clone(),
                next_send: now + INIT_RETRY,
                interval: INIT_RETRY,
                until: now + PROBE_LIMIT,
            };
            self.actions.push_back(Action::Send {
                to: SocketAddr::new(syn.key.remote.ip(), self.cfg.peer_port),
                from: syn.key.local.ip(),
                datagram: frame,
            });
            self.wake(now + INIT_RETRY);
            return;
        };
        self.start_init(now, syn.key, token_peer);
    }

    /// The client knows the server's token (echoed option, or answered probe): `Init`.
    fn start_init(&mut self, now: Instant, key: FlowKey, token_peer: u32) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let State::Negotiating { token_local, .. } = flow.state else {
            return;
        };
        flow.set_state(
            State::Negotiating {
                token_local,
                token_peer: Some(token_peer),
            },
            now,
        );
        let Some(conn_id) = flow.conn_id() else {
            return;
        };
        match Initiator::start(self.rng.as_mut(), Some(conn_id), &self.params) {
            Ok((initiator, msg)) => {
                let frame = Message::Init(msg).encode();
                let to = SocketAddr::new(key.remote.ip(), self.cfg.peer_port);
                flow.init = Init::Sent {
                    initiator: Box::new(initiator),
                    frame: frame.clone(),
                    next_send: now + INIT_RETRY,
                    interval: INIT_RETRY,
                };
                self.by_conn.insert(conn_id, key);
                self.actions.push_back(Action::Send {
                    to,
                    from: key.local.ip(),
                    datagram: frame,
                });
            }
            Err(e) => {
                tracing::warn!(flow = %key, "cannot start initialisation: {e}");
                self.counters.init_failures += 1;
                self.release(key);
            }
        }
    }

    fn server_syn(&mut self, now: Instant, syn: SynSeen) {
        let Some(token_peer) = syn.hello else {
            self.server_syn_without_option(now, syn);
            return;
        };
        if let Some(flow) = self.flows.get(&syn.key) {
            // A retransmitted SYN with the same token changes nothing; a different token means
            // the client gave up on the old attempt and this is a new connection.
            if matches!(flow.state, State::Negotiating { token_peer: Some(t), .. } if t == token_peer)
            {
                return;
            }
            if !matches!(flow.state, State::Negotiating { .. }) {
                // Not replaced by a SYN alone (anyone can send one); only if the local kernel
                // answers it with a SYN-ACK, which it does only when the old connection is gone.
                if let Some(flow) = self.flows.get_mut(&syn.key) {
                    flow.reused_by = Some((token_peer, syn.seq));
                }
                return;
            }
            self.remove(&syn.key);
        }
        if self.negotiating >= MAX_NEGOTIATING {
            self.counters.not_offered += 1;
            return;
        }
        let token_local = self.tokens.next();
        let state = State::Negotiating {
            token_local,
            token_peer: Some(token_peer),
        };
        let mut flow = Flow::new(syn.key, Role::Server, state, now);
        flow.isn_peer = Some(syn.seq);
        flow.init = Init::Awaiting;
        if let Some(id) = flow.conn_id() {
            self.by_conn.insert(id, syn.key);
        }
        self.insert(now, flow);
    }

    /// A SYN without the option: remembered for a while in case the client's rackd probes
    /// (the option was stripped on the path), released otherwise.
    fn server_syn_without_option(&mut self, now: Instant, syn: SynSeen) {
        if !self.cfg.fallback || self.flows.contains_key(&syn.key) {
            return;
        }
        if let Some(flow) = self.server_flow(now, &syn) {
            self.insert(now, flow);
        }
    }

    /// A negotiating flow for a client's SYN; none while too many are negotiating (a flood).
    fn server_flow(&mut self, now: Instant, syn: &SynSeen) -> Option<Flow> {
        if self.negotiating >= MAX_NEGOTIATING {
            self.counters.not_offered += 1;
            return None;
        }
        let state = State::Negotiating {
            token_local: self.tokens.next(),
            token_peer: None,
        };
        let mut flow = Flow::new(syn.key, Role::Server, state, now);
        flow.isn_peer = Some(syn.seq);
        Some(flow)
    }

    /// A client's rackd asks whether this end has one (its option did not arrive).
    fn on_probe(&mut self, now: Instant, from: SocketAddr, token: u32, key: FlowKey) {
        let Some(flow) = self.flows.get_mut(&key) else {
            self.counters.bad_datagrams += 1;
            return;
        };
        // Only from the connection's peer, like `Init`.
        if flow.role != Role::Server || from.ip() != flow.wire.remote.ip() {
            self.counters.bad_datagrams += 1;
            return;
        }
        let State::Negotiating {
            token_local,
            token_peer,
        } = flow.state
        else {
            return;
        };
        match token_peer {
            None if matches!(flow.init, Init::Idle) => {
                flow.set_state(
                    State::Negotiating {
                        token_local,
                        token_peer: Some(token),
                    },
                    now,
                );
                flow.init = Init::Awaiting;
            }
            Some(t) if t == token => {} // our answer was lost
            _ => return,
        }
        let Some(conn_id) = flow.conn_id() else {
            return;
        };
        tracing::debug!(flow = %key, id = %conn_id, "probed: the option was stripped on the path");
        self.by_conn.insert(conn_id, key);
        let datagram = Message::ProbeAck {
            conn_id,
            client: key.remote,
            server: key.local,
        }
        .encode();
        self.actions.push_back(Action::Send {
            to: SocketAddr::new(from.ip(), self.cfg.peer_port),
            from: key.local.ip(),
            datagram,
        });
    }

    /// The server's rackd answered our probe.
    fn on_probe_ack(&mut self, now: Instant, from: SocketAddr, conn_id: ConnId, key: FlowKey) {
        let Some(flow) = self.flows.get(&key) else {
            return;
        };
        let probing = matches!(flow.init, Init::Probing { .. })
            && matches!(flow.state, State::Negotiating { token_local, token_peer: None }
                if (conn_id.0 >> 32) as u32 == token_local);
        if !probing || flow.role != Role::Client || from.ip() != key.remote.ip() {
            self.counters.bad_datagrams += 1;
            return;
        }
        tracing::debug!(flow = %key, id = %conn_id, "the server's rackd answered the probe");
        self.start_init(now, key, conn_id.0 as u32);
    }

    fn server_syn_ack(&mut self, now: Instant, syn: SynSeen) -> SynVerdict {
        let reused = self.flows.get(&syn.key).and_then(|f| match f.state {
            State::Negotiating { .. } => None,
            _ => f.reused_by,
        });
        if let Some((token_peer, isn_peer)) = reused {
            self.close(syn.key);
            self.server_syn(
                now,
                SynSeen {
                    dir: Dir::In,
                    ack: false,
                    hello: Some(token_peer),
                    seq: isn_peer,
                    ..syn
                },
            );
        }
        match self.flows.get_mut(&syn.key) {
            Some(
                flow @ Flow {
                    role: Role::Server,
                    state: State::Negotiating { .. },
                    ..
                },
            ) => {
                flow.isn_local = Some(syn.seq);
                match flow.state {
                    // Echo the option only to a client that sent it.
                    State::Negotiating {
                        token_local,
                        token_peer: Some(_),
                    } => SynVerdict::AddHello { token: token_local },
                    _ => SynVerdict::Pass,
                }
            }
            _ => SynVerdict::Pass,
        }
    }

    /// Initialisation failed or the peer turned out not to be usable: plain TCP.
    pub fn release(&mut self, key: FlowKey) {
        if self.remove(&key).is_some() {
            tracing::debug!(flow = %key, "released");
            self.counters.released += 1;
            self.actions.push_back(Action::Released { key });
        }
    }

    // ----- daemon channel ----------------------------------------------------------------

    /// A datagram arrived on the daemon channel.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let msg = match Message::decode(bytes) {
            Ok(Some((msg, used))) if used == bytes.len() => msg,
            other => {
                self.counters.bad_datagrams += 1;
                tracing::debug!(%from, ?other, "unusable datagram");
                return;
            }
        };
        match msg {
            Message::Init(init) => self.on_init(now, from, &init),
            Message::InitAck(ack) => self.on_init_ack(now, from, &ack),
            Message::Heartbeat { conn_id, .. } => self.on_heartbeat(now, from, conn_id, &msg),
            Message::Migrate { .. } => self.on_migrate(now, from, &msg),
            Message::Probe {
                token,
                client,
                server,
            } => {
                let key = FlowKey {
                    local: server,
                    remote: client,
                };
                self.on_probe(now, from, token, key)
            }
            Message::ProbeAck {
                conn_id,
                client,
                server,
            } => {
                let key = FlowKey {
                    local: client,
                    remote: server,
                };
                self.on_probe_ack(now, from, conn_id, key)
            }
            other => {
                self.counters.bad_datagrams += 1;
                tracing::debug!(%from, ?other, "unexpected message");
            }
        }
    }

    fn on_init(&mut self, now: Instant, from: SocketAddr, msg: &edp::message::Init) {
        let Some(&key) = self.by_conn.get(&msg.conn_id) else {
            self.counters.bad_datagrams += 1;
            return;
        };
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        // Only from the address the connection came from: nobody else learns our answer (and
        // a spoofed source cannot turn the server into a reflector).
        if flow.role != Role::Server || from.ip() != flow.wire.remote.ip() {
            self.counters.bad_datagrams += 1;
            return;
        }
        match &flow.init {
            Init::Done {
                ack_frame: Some(frame),
            } => {
                // Our InitAck was lost: the same answer again.
                self.actions.push_back(Action::Send {
                    to: SocketAddr::new(from.ip(), self.cfg.peer_port),
                    from: flow.wire.local.ip(),
                    datagram: frame.clone(),
                });
                return;
            }
            Init::Awaiting => {}
            _ => return,
        }
        let peer = key.remote.ip().to_string();
        match init::respond(self.rng.as_mut(), msg, &self.params, &peer, &mut self.trust) {
            Ok((ack, session)) => {
                let frame = Message::InitAck(ack).encode();
                flow.session = Some(Box::new(session));
                flow.init = Init::Done {
                    ack_frame: Some(frame.clone()),
                };
                self.actions.push_back(Action::Send {
                    to: SocketAddr::new(from.ip(), self.cfg.peer_port),
                    from: flow.wire.local.ip(),
                    datagram: frame,
                });
                self.connected(now, key, msg.conn_id);
            }
            Err(e) => {
                tracing::info!(flow = %key, "initialisation refused: {e}");
                self.counters.init_failures += 1;
                self.release(key);
            }
        }
    }

    fn on_init_ack(&mut self, now: Instant, _from: SocketAddr, ack: &edp::message::InitAck) {
        let Some(&key) = self.by_conn.get(&ack.conn_id) else {
            self.counters.bad_datagrams += 1;
            return;
        };
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if !matches!(flow.init, Init::Sent { .. }) {
            return; // a duplicate answer
        }
        let Init::Sent { initiator, .. } = std::mem::replace(&mut flow.init, Init::Idle) else {
            unreachable!()
        };
        let peer = key.remote.ip().to_string();
        match initiator.finish(ack, &peer, &mut self.trust) {
            Ok(session) => {
                flow.session = Some(Box::new(session));
                flow.init = Init::Done { ack_frame: None };
                self.connected(now, key, ack.conn_id);
            }
            Err(e) => {
                tracing::info!(flow = %key, "initialisation failed: {e}");
                self.counters.init_failures += 1;
                self.release(key);
            }
        }
    }

    fn connected(&mut self, now: Instant, key: FlowKey, conn_id: ConnId) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.set_state(State::Connected, now);
        self.negotiating -= 1;
        self.revision += 1;
        let peer = self
            .peers
            .entry(flow.wire.remote.ip())
            .or_insert_with(|| Peer::new(now));
        if peer.conns.is_empty() {
            // Lingering after earlier connections (maybe unheard for a while): initialisation
            // just crossed the path both ways.
            peer.proven(now);
        }
        peer.conns.insert(conn_id);
        tracing::info!(flow = %key, id = %conn_id, "connected");
    }

    fn on_heartbeat(&mut self, now: Instant, from: SocketAddr, conn_id: ConnId, msg: &Message) {
        let Message::Heartbeat { seq, echo, .. } = *msg else {
            return;
        };
        let Some(flow) = self.by_conn.get(&conn_id).and_then(|k| self.flows.get(k)) else {
            // A connection that ended here lately: its beats still show the path works.
            let ip = from.ip();
            let Some(peer) = self.peers.get_mut(&ip) else {
                return;
            };
            let Some((key, _)) = peer.ended(conn_id) else {
                return;
            };
            if !msg.verifies(key) {
                self.counters.bad_datagrams += 1;
                return;
            }
            if peer.on_beat(now, seq, echo, &self.timing) {
                self.send_beat(now, ip);
            }
            self.evaluate(now, ip);
            return;
        };
        let Some(session) = &flow.session else { return };
        if !msg.verifies(session.key()) {
            self.counters.bad_datagrams += 1;
            return;
        }
        let mut ip = flow.wire.remote.ip();
        if flow.moved_from == Some(from.ip()) {
            return; // sent by the host the socket left, before it left
        }
        if from.ip() != ip && from.ip().is_ipv4() == ip.is_ipv4() {
            // An authenticated beat from a new address: the peer host moved.
            self.peer_moved(ip, from.ip());
            ip = from.ip();
        }
        let Some(peer) = self.peers.get_mut(&ip) else {
            return;
        };
        if peer.on_beat(now, seq, echo, &self.timing) {
            self.send_beat(now, ip);
        }
        self.evaluate(now, ip);
    }

    /// The peer's address changed: its connections are translated to the new one, and the
    /// heartbeats follow.
    fn peer_moved(&mut self, old: IpAddr, new: IpAddr) {
        let Some(mut peer) = self.peers.remove(&old) else {
            return;
        };
        tracing::info!(%old, %new, "peer moved");
        if let Some(there) = self.peers.remove(&new) {
            // Another connection already knew the host at its new address.
            peer.conns.extend(there.conns);
        }
        for id in &peer.conns {
            let Some(&key) = self.by_conn.get(id) else {
                continue;
            };
            if let Some(flow) = self.flows.get(&key) {
                if flow.wire.remote.ip() == new {
                    continue;
                }
                let mut wire = flow.wire;
                wire.remote.set_ip(new);
                self.rewire(key, wire);
            }
        }
        self.peers.insert(new, peer);
    }

    /// Local addresses as they are now (`present`), and the source address the kernel would
    /// use towards an address (`source_for`): flows whose local address left are moved to the
    /// new one.
    pub fn on_local_addresses(
        &mut self,
        now: Instant,
        present: impl Fn(IpAddr) -> bool,
        source_for: impl Fn(IpAddr) -> Option<IpAddr>,
    ) {
        // Kept at once, even with no new address to move to yet (the link is down): a held
        // socket must go on receiving rackd's ACKs at its address.
        let departed: Vec<IpAddr> = self
            .flows
            .values()
            .filter(|f| f.session.is_some() && !present(f.key.local.ip()))
            .map(|f| f.key.local.ip())
            .collect();
        for ip in departed {
            if self.kept.insert(ip) {
                self.actions.push_back(Action::KeepLocal(ip));
            }
        }
        let moved: Vec<(FlowKey, FlowKey)> = self
            .flows
            .values()
            .filter(|f| f.session.is_some() && !present(f.wire.local.ip()))
            .filter_map(|f| {
                let new = source_for(f.wire.remote.ip())
                    .filter(|&new| reaches(new, f.wire.remote.ip()))?;
                let mut wire = f.wire;
                wire.local.set_ip(new);
                (new != f.wire.local.ip()).then_some((f.key, wire))
            })
            .collect();
        for (key, wire) in moved {
            tracing::info!(flow = %key, new = %wire.local.ip(), "local address moved");
            // Held until the peer has seen a beat from the new address and translates too;
            // before that the socket's packets would meet no socket there and draw a reset.
            // Held first, so the translation is installed queued: a socket that could not send
            // while its address was gone retransmits as soon as the address is kept on lo.
            let ip = wire.remote.ip();
            if let Some(peer) = self.peers.get_mut(&ip) {
                peer.reconfirm(now, &self.timing);
            }
            self.evaluate(now, ip);
            self.rewire(key, wire);
        }
    }

    fn rewire(&mut self, key: FlowKey, wire: FlowKey) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let old = std::mem::replace(&mut flow.wire, wire);
        self.revision += 1;
        let queued = flow.hold.is_some() || flow.is_suspended();
        if wire != key {
            self.by_wire.insert(wire, key);
        }
        self.by_wire.remove(&old);
        self.actions.push_back(Action::Translate {
            key,
            old,
            wire,
            queued,
        });
    }

    fn queue(&mut self, key: FlowKey, on: bool) {
        let wire = self.flows.get(&key).map_or(key, |f| f.wire);
        self.actions.push_back(Action::Queue { key, wire, on });
    }

    /// A packet rackd built in the local socket's view, sent as the wire carries the flow.
    fn inject(&mut self, key: FlowKey, mut packet: Vec<u8>) {
        if let Some(flow) = self.flows.get(&key) {
            if flow.wire != flow.key {
                rewire_packet(&mut packet, &flow.key, &flow.wire);
            }
        }
        self.actions.push_back(Action::Inject(packet));
    }

    fn send_beat(&mut self, now: Instant, ip: IpAddr) {
        let Some(peer) = self.peers.get_mut(&ip) else {
            return;
        };
        // Connections that ended are skipped; the peer is dropped when none is left and the
        // last one ended long enough ago.
        while peer.expire(now) {
            let Some((conn_id, seq, echo)) = peer.beat(now, &self.timing, &mut self.beat_seq)
            else {
                break;
            };
            let flow = self.by_conn.get(&conn_id).and_then(|k| self.flows.get(k));
            let signer = match flow.and_then(|f| Some((f.session.as_ref()?, f.wire.local.ip()))) {
                Some((s, from)) => Some((s.key(), from)),
                // Lingering after the last connection ended: from the address it used.
                None => peer.ended(conn_id),
            };
            match signer {
                Some((key, from)) => {
                    let datagram = Message::heartbeat(key, conn_id, seq, echo).encode();
                    let to = SocketAddr::new(ip, self.cfg.peer_port);
                    self.actions.push_back(Action::Send { to, from, datagram });
                    return;
                }
                None => peer.retire(conn_id, None),
            }
        }
        self.peers.remove(&ip);
    }

    /// Moves the peer's connections between connected and suspended when its path changed.
    fn evaluate(&mut self, now: Instant, ip: IpAddr) {
        let Some(peer) = self.peers.get_mut(&ip) else {
            return;
        };
        let alive = peer.alive(now, &self.timing);
        // Only connections need a verdict: beats that linger after the last one ended may
        // stop at either end.
        if alive == peer.up || peer.conns.is_empty() {
            return;
        }
        peer.up = alive;
        let conns: Vec<ConnId> = peer.conns.iter().copied().collect();
        if alive {
            tracing::info!(peer = %ip, "path to peer is back");
        } else {
            tracing::warn!(peer = %ip, "path to peer failed");
            // Probe at the fast rate from now on.
            peer.next_beat = now;
        }
        for id in conns {
            let Some(&key) = self.by_conn.get(&id) else {
                continue;
            };
            if alive {
                if let Some(flow) = self.flows.get_mut(&key) {
                    if let State::Closed { peer_back } = &mut flow.state {
                        peer_back.get_or_insert(now);
                    }
                }
                self.resume(now, key);
            } else {
                self.suspend(now, key);
            }
        }
    }

    // ----- suspension --------------------------------------------------------------------

    fn suspend(&mut self, now: Instant, key: FlowKey) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if flow.state != State::Connected {
            return;
        }
        flow.set_state(State::Suspended { since: now }, now);
        flow.hold = None;
        self.counters.suspensions += 1;
        // Queue first, then read the socket: nothing can slip between the two.
        self.queue(key, true);
        self.actions.push_back(Action::ReadSocket { key });
    }

    fn resume(&mut self, now: Instant, key: FlowKey) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if !flow.is_suspended() || flow.pinned {
            return;
        }
        flow.set_state(State::Connected, now);
        flow.reconnects += 1;
        self.counters.resumptions += 1;
        let Some(hold) = &flow.hold else {
            self.queue(key, false);
            return;
        };
        if !hold.has_head() && !hold.outstanding() {
            self.end_hold(key, true);
            return;
        }
        // Stay queued, the window closed, until the peer acknowledges new data (see `hold`):
        // re-send the socket's captured retransmission, or, if none was seen during a short
        // hold, let its next one (a window probe, which never aborts it) go to the peer.
        let mut out: Vec<Vec<u8>> = hold.head().into_iter().collect();
        out.extend(hold.release(false));
        let limit = if hold.has_head() {
            RESYNC_LIMIT
        } else {
            RESYNC_LIMIT_WITHOUT_HEAD
        };
        flow.resync = Some(Box::new(Resync {
            next_send: now + RESYNC_FIRST,
            interval: RESYNC_FIRST,
            until: now + limit,
        }));
        self.wake(now + RESYNC_FIRST);
        for p in out {
            self.inject(key, p);
        }
    }

    /// The connection is in step again: rackd lets go of it.
    fn end_hold(&mut self, key: FlowKey, reopen_local: bool) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.resync = None;
        if let Some(hold) = flow.hold.take() {
            if reopen_local {
                for p in hold.release(true) {
                    self.inject(key, p);
                }
            }
        }
        self.queue(key, false);
    }

    /// The local socket's entry in the kernel's table (`None`: it is gone), as asked for by
    /// [`Action::ReadSocket`].
    pub fn on_socket(&mut self, now: Instant, key: FlowKey, counters: Option<SocketCounters>) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let Some(c) = counters else {
            self.end(now, key);
            return;
        };
        flow.bytes_sent = c.bytes_sent;
        flow.bytes_received = c.bytes_received;
        if !flow.is_suspended() || flow.hold.is_some() {
            return;
        }
        let (Some(isn_local), Some(isn_peer)) = (flow.isn_local, flow.isn_peer) else {
            return;
        };
        let seq = SeqState::derive(flow.role, isn_local, isn_peer, &c);
        let mut hold = Hold::new(key, seq, &c);
        self.actions.push_back(Action::Inject(hold.start(now)));
        tracing::debug!(flow = %key, ?seq, "holding the socket");
        flow.hold = Some(Box::new(hold));
    }

    /// A queued packet of a flow other than a SYN. `packet` makes a copy of the whole packet
    /// with a complete checksum, called only when rackd keeps one.
    pub fn on_segment(
        &mut self,
        now: Instant,
        dir: Dir,
        key: FlowKey,
        seg: &SegmentSeen,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> SegmentVerdict {
        if let Some(verdict) = self.departed_segment(&key) {
            return verdict;
        }
        // Outgoing packets of a translated flow are queued as the wire carries them.
        let key = self.by_wire.get(&key).copied().unwrap_or(key);
        let Some(flow) = self.flows.get_mut(&key) else {
            return SegmentVerdict::Accept;
        };
        if flow.inband.is_some() {
            return self.inband_segment(now, dir, key, packet);
        }
        if flow.edp_port.is_some() {
            return self.edp_port_segment(now, dir, key, packet);
        }
        let Some(hold) = flow.hold.as_mut() else {
            // Connected again (the queue set lags by a moment), or the hold is being set up.
            return if flow.is_suspended() {
                SegmentVerdict::Drop
            } else {
                SegmentVerdict::Accept
            };
        };
        if dir == Dir::Out && seg.flags.rst() {
            // The application aborted: its reset travels, and the connection is over.
            self.end(now, key);
            return SegmentVerdict::Accept;
        }
        if flow.resync.is_some() {
            // Resumed: everything travels; the peer's acknowledgement of new data ends it.
            if dir == Dir::Out {
                hold.observe_local(seg, packet);
            }
            if dir == Dir::In && hold.peer_caught_up(seg) {
                tracing::debug!(flow = %key, "back in step");
                self.end_hold(key, false);
            }
            return SegmentVerdict::Accept;
        }
        let answer = match dir {
            Dir::Out => hold.on_local(now, seg, packet),
            Dir::In => hold.on_remote(now, seg),
        };
        tracing::trace!(flow = %key, ?dir, ?seg, answered = answer.is_some(), "held packet");
        if let Some(p) = answer {
            self.inject(key, p);
        }
        SegmentVerdict::Drop
    }

    /// Suspends a connected connection on an operator's request, until [`Engine::resume_by_id`].
    pub fn suspend_by_id(&mut self, now: Instant, id: &str) -> Result<(), CommandError> {
        let key = self.key_by_id(id)?;
        self.pin(now, key)
            .map_err(|state| CommandError::NotConnected {
                id: id.into(),
                state,
            })
    }

    /// Suspends the flow until it is unpinned (by command, or when a moving socket arrives);
    /// `Err` names a state that cannot be suspended.
    fn pin(&mut self, now: Instant, key: FlowKey) -> Result<(), &'static str> {
        let Some(flow) = self.flows.get_mut(&key) else {
            return Ok(());
        };
        if flow.edp_port.is_some() {
            // Every packet is translated; a hold would speak untranslated (see `edp_port`).
            return Err("translated for a user-level EDP client");
        }
        match flow.state {
            State::Connected => {
                flow.pinned = true;
                self.revision += 1;
                self.suspend(now, key);
                Ok(())
            }
            State::Suspended { .. } => {
                flow.pinned = true;
                self.revision += 1;
                Ok(())
            }
            ref s => Err(s.name()),
        }
    }

    /// Ends a suspension made by command; the connection resumes when its path is up.
    pub fn resume_by_id(&mut self, now: Instant, id: &str) -> Result<(), CommandError> {
        let key = self.key_by_id(id)?;
        let flow = self.flows.get_mut(&key).expect("indexed flow exists");
        if !flow.pinned {
            return Err(CommandError::NotPinned(id.into()));
        }
        flow.pinned = false;
        self.revision += 1;
        let up = self
            .peers
            .get(&self.flows[&key].wire.remote.ip())
            .is_some_and(|p| p.up);
        if up {
            self.resume(now, key);
        }
        Ok(())
    }

    /// Gives a suspended connection its peer's new address (both ends moved during an outage, so
    /// neither can tell the other): rackd sends to it and translates the connection to it.
    pub fn set_peer_by_id(&mut self, id: &str, addr: IpAddr) -> Result<(), CommandError> {
        let key = self.key_by_id(id)?;
        let flow = &self.flows[&key];
        if !flow.is_suspended() {
            return Err(CommandError::NotSuspended {
                id: id.into(),
                state: flow.state.name(),
            });
        }
        if addr.is_ipv4() != key.remote.is_ipv4() {
            return Err(CommandError::WrongFamily { addr });
        }
        let old = flow.wire.remote.ip();
        if old != addr {
            self.peer_moved(old, addr);
        }
        Ok(())
    }

    fn key_by_id(&self, id: &str) -> Result<FlowKey, CommandError> {
        u64::from_str_radix(id, 16)
            .ok()
            .and_then(|n| self.by_conn.get(&ConnId(n)))
            .copied()
            .filter(|k| self.flows.contains_key(k))
            .ok_or_else(|| CommandError::UnknownId(id.into()))
    }

    // ----- bookkeeping -------------------------------------------------------------------

    /// The kernel's socket table, looked up by flow key, read every second or so: flows whose
    /// socket is gone are removed, and byte counters refreshed.
    pub fn on_socket_table(
        &mut self,
        now: Instant,
        mut lookup: impl FnMut(&FlowKey) -> Option<SocketCounters>,
    ) {
        let mut gone = Vec::new();
        for (key, flow) in &mut self.flows {
            match lookup(key) {
                Some(c) => {
                    flow.bytes_sent = c.bytes_sent;
                    flow.bytes_received = c.bytes_received;
                }
                None if now.duration_since(flow.created) >= SOCKET_GRACE => gone.push(*key),
                None => {}
            }
        }
        for key in gone {
            self.end(now, key);
        }
    }

    /// The kernel freed the socket of `key` (a destroy notification).
    pub fn on_socket_gone(&mut self, now: Instant, key: &FlowKey) {
        if self.flows.contains_key(key) {
            self.end(now, *key);
        }
    }

    /// The local socket is gone (closed, aborted). A suspended connection stays, closed: its
    /// peer holds its own end, and would until its reconnection window ends. Beats go on, so
    /// the peer resumes when the path returns; its next packet then meets no socket here and
    /// draws the kernel's reset, which ends the connection there too.
    fn end(&mut self, now: Instant, key: FlowKey) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if let Some(e) = flow.edp_port.as_mut() {
            if !e.socket_gone(now) {
                // Translation lingers for the last packets (see `edp_port`).
                let at = e.poll_timeout();
                if let Some(at) = at {
                    self.wake(at);
                }
                return;
            }
        }
        match flow.state {
            State::Closed { .. } => {}
            State::Suspended { .. } if flow.session.is_some() => {
                tracing::debug!(flow = %key, "socket ended during the suspension: closed");
                flow.set_state(State::Closed { peer_back: None }, now);
                flow.hold = None;
                flow.resync = None;
                flow.pinned = false;
                self.queue(key, false);
            }
            _ => self.close(key),
        }
    }

    fn close(&mut self, key: FlowKey) {
        if let Some(flow) = self.remove(&key) {
            tracing::debug!(flow = %key, state = flow.state.name(), "closed");
            self.counters.closed += 1;
            if flow.is_suspended() {
                self.queue(key, false);
            }
        }
    }

    /// Expires whatever is due at `now`: heartbeats, `Init` retransmissions, negotiation and
    /// reconnection deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_beat <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            self.send_beat(now, ip);
        }
        let ips: Vec<IpAddr> = self.peers.keys().copied().collect();
        for ip in ips {
            self.evaluate(now, ip);
        }
        if self.next_scan.is_none_or(|t| t <= now) {
            self.scan(now);
        }
    }

    fn scan(&mut self, now: Instant) {
        let mut busy = false;
        let mut expired = Vec::new();
        let mut timed_out = Vec::new();
        let mut gave_up = Vec::new();
        let mut resend = Vec::new();
        let mut ended = Vec::new();
        let mut plain = Vec::new();
        let mut inband = Vec::new();
        let mut edp_ports = Vec::new();
        let mut next = now + SCAN_IDLE;
        for (key, flow) in &mut self.flows {
            if let Some(e) = &flow.edp_port {
                if let Some(at) = e.poll_timeout() {
                    if at <= now {
                        edp_ports.push(*key);
                    }
                    next = next.min(at);
                }
                busy |= e.is_classifying();
                continue;
            }
            if let (Some(r), Some(hold)) = (&mut flow.resync, &flow.hold) {
                if r.until <= now {
                    gave_up.push(*key);
                } else if r.next_send <= now {
                    r.interval = (r.interval * 2).min(RESYNC_MAX);
                    r.next_send = now + r.interval;
                    resend.extend(hold.head().map(|h| (*key, h)));
                }
                next = next.min(r.next_send);
            }
            match flow.state {
                State::Negotiating { token_peer, .. } => {
                    busy = true;
                    if let Some(i) = &flow.inband {
                        if i.poll_timeout() <= now {
                            inband.push(*key);
                        }
                        next = next.min(i.poll_timeout());
                        continue;
                    }
                    if flow.created + NEGOTIATE_TIMEOUT <= now {
                        timed_out.push(*key);
                        continue;
                    }
                    let unprobed = match flow.init {
                        Init::Probing { until, .. } => until <= now,
                        // A server flow of a SYN without the option nobody asked about.
                        Init::Idle => {
                            flow.role == Role::Server
                                && token_peer.is_none()
                                && flow.created + PROBE_WAIT <= now
                        }
                        _ => false,
                    };
                    if unprobed {
                        plain.push(*key);
                        continue;
                    }
                    if let Init::Sent {
                        frame,
                        next_send,
                        interval,
                        ..
                    }
                    | Init::Probing {
                        frame,
                        next_send,
                        interval,
                        ..
                    } = &mut flow.init
                    {
                        if *next_send <= now {
                            *interval = (*interval * 2).min(INIT_RETRY_MAX);
                            *next_send = now + *interval;
                            self.actions.push_back(Action::Send {
                                to: SocketAddr::new(flow.wire.remote.ip(), self.cfg.peer_port),
                                from: flow.wire.local.ip(),
                                datagram: frame.clone(),
                            });
                        }
                    }
                }
                State::Suspended { since } => {
                    busy = true;
                    if now.duration_since(since) >= self.cfg.reconnect_window {
                        expired.push(*key);
                    } else if flow.resync.is_none() {
                        if let Some(p) = flow.hold.as_mut().and_then(|h| h.keepalive(now)) {
                            self.actions.push_back(Action::Inject(p));
                        }
                    }
                }
                State::Closed { peer_back } => {
                    busy = true;
                    let back = peer_back.is_some_and(|t| now.duration_since(t) >= CLOSED_LINGER);
                    if back || now.duration_since(flow.entered) >= self.cfg.reconnect_window {
                        ended.push(*key);
                    }
                }
                _ => {}
            }
        }
        self.inband_timers(now, inband);
        self.edp_port_timers(now, edp_ports);
        for key in timed_out {
            self.counters.negotiation_timeouts += 1;
            self.release(key);
        }
        for key in expired {
            self.expire(key);
        }
        for key in ended {
            self.close(key);
        }
        for key in plain {
            if self.flows.get(&key).is_some_and(Flow::awaits_probe) {
                self.remove(&key); // never offered, so not counted as released
            } else {
                self.release(key);
            }
        }
        for (key, packet) in resend {
            self.inject(key, packet);
        }
        for key in gave_up {
            tracing::warn!(flow = %key, "the peer never acknowledged the re-sent data: reopening");
            self.end_hold(key, true);
        }
        if busy {
            next = next.min(now + SCAN_BUSY);
        }
        if let Some(t) = self.scan_moves(now) {
            next = next.min(t);
        }
        self.next_scan = Some(next);
    }

    /// Makes sure the flow table is scanned at `at` or earlier.
    fn wake(&mut self, at: Instant) {
        self.next_scan = Some(self.next_scan.map_or(at, |t| t.min(at)));
    }

    /// The reconnection window passed: the local socket is reset like any failed connection.
    fn expire(&mut self, key: FlowKey) {
        if let Some(flow) = self.flows.get(&key) {
            if let Some(hold) = &flow.hold {
                self.actions.push_back(Action::Inject(hold.reset_local()));
            }
            tracing::warn!(flow = %key, "reconnection window expired: resetting");
            self.counters.expired += 1;
            self.close(key);
        }
    }

    /// The next instant at which [`Engine::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let beats = self.peers.values().map(|p| p.next_beat).min();
        let scan = if self.flows.is_empty() && self.departed.is_empty() {
            None
        } else {
            self.next_scan
        };
        match (beats, scan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Number of flows per state, in [`State::NAMES`] order (released and closed flows are not
    /// kept, so those slots count the totals so far).
    pub fn state_counts(&self) -> [u64; 6] {
        let mut counts = [0u64; 6];
        for f in self.flows() {
            let i = State::NAMES
                .iter()
                .position(|n| *n == f.state.name())
                .unwrap_or(0);
            counts[i] += 1;
        }
        counts[4] += self.counters.released;
        counts[5] += self.counters.closed;
        counts
    }

    fn insert(&mut self, now: Instant, flow: Flow) {
        self.negotiating += 1;
        if self.next_scan.is_none_or(|t| t > now + SCAN_BUSY) {
            self.next_scan = Some(now + SCAN_BUSY);
        }
        self.flows.insert(flow.key, flow);
    }

    fn remove(&mut self, key: &FlowKey) -> Option<Flow> {
        let flow = self.flows.remove(key)?;
        // Give back what a flood took once the table is mostly empty again.
        if self.flows.capacity() > 1024 && self.flows.len() < self.flows.capacity() / 8 {
            self.flows.shrink_to(self.flows.len() * 2);
        }
        if matches!(flow.state, State::Negotiating { .. }) {
            self.negotiating -= 1;
        }
        if flow.edp_port.is_some() {
            self.actions.push_back(Action::QueueStrictly {
                key: *key,
                on: false,
            });
        } else if flow.inband.as_ref().is_some_and(|i| !i.is_probing()) {
            // In-band EDP queues the flow from its SYN on (the socket may end meanwhile).
            self.actions.push_back(Action::Queue {
                key: *key,
                wire: flow.wire,
                on: false,
            });
        }
        if flow.session.is_some() {
            self.revision += 1;
        }
        if let Some(id) = flow.conn_id() {
            if self.by_conn.get(&id) == Some(key) {
                self.by_conn.remove(&id);
            }
            let ip = flow.wire.remote.ip();
            if let Some(peer) = self.peers.get_mut(&ip) {
                let signer = flow
                    .session
                    .as_ref()
                    .map(|s| (s.key().clone(), flow.wire.local.ip()));
                peer.retire(id, signer);
            }
            if flow.wire != flow.key {
                self.by_wire.remove(&flow.wire);
                self.actions.push_back(Action::Translate {
                    key: *key,
                    old: flow.wire,
                    wire: flow.key,
                    queued: false,
                });
            }
        }
        Some(flow)
    }
}

/// Connection tokens: splitmix64, seeded once. Tokens only pair a flow with its initialisation
/// messages; authenticity comes from the key exchange, not from their secrecy.
#[derive(Debug)]
struct TokenSource(u64);

impl TokenSource {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

#[cfg(test)]
mod tests;

/// Whether `source` can carry a flow to `remote`: while an address is being replaced the kernel
/// may offer a link-local or loopback source for a while, and a flow moved there would be lost.
fn reaches(source: IpAddr, remote: IpAddr) -> bool {
    let narrow = |a: IpAddr| match a {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_loopback() || a.is_unicast_link_local() || a.is_unspecified(),
    };
    !narrow(source) || narrow(remote)
}

/// Rewrites a packet for the peer from the socket's view of the flow to the wire's. Packets for
/// the local socket stay as they are: they are delivered locally, untranslated.
fn rewire_packet(packet: &mut [u8], key: &FlowKey, wire: &FlowKey) {
    let Ok(mut p) = tcpseq::TcpIpPacket::new_checked(&mut packet[..]) else {
        return;
    };
    if (p.src(), p.dst()) != (key.local, key.remote) {
        return;
    }
    let (new_src, new_dst) = (wire.local, wire.remote);
    // Same family by construction; a failure leaves the packet as it was built.
    let _ = p.set_src_addr(new_src.ip());
    let _ = p.set_dst_addr(new_dst.ip());
    p.set_src_port(new_src.port());
    p.set_dst_port(new_dst.port());
}
