//! Moving a connection's socket to another host: the engine's half of checkpoint and restore.
//!
//! - Old host: [`Engine::checkpoint_flow`] hands out the flow's [`FlowRecord`] and forgets the
//!   flow. A departure entry drops the flow's packets for a while (its socket closes silently, in
//!   repair mode, and a packet for it would draw a reset from the kernel) and tells the peer
//!   `Leaving` until it answers.
//! - Peer: on `Leaving` it holds the connection (suspended until the socket reappears); on
//!   `Arrived` from the new host it moves the flow to the sender's address and port, answers,
//!   and resumes.
//! - New host: [`Engine::restore_flow`] adopts the record as reconnecting and sends `Arrived`
//!   until the peer accepts (connected) or refuses: a record whose generation the peer has
//!   already accepted is a replay.
//!
//! Every step is authenticated with the connection's key; the generation makes each move
//! happen once.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use edp::crypto::SecretKey;
use edp::message::{ConnId, Message, MigrateStep};
use tcpseq::SeqNum;

use super::flow::{FlowKey, State};
use super::peer::Peer;
use super::record::{syn_counted, FlowRecord, SeqPoint};
use super::{Action, CommandError, Engine, SegmentVerdict};

/// First interval of a repeated move step; doubles up to [`STEP_RETRY_MAX`].
const STEP_RETRY: Duration = Duration::from_millis(200);
const STEP_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a step is repeated without an answer.
const STEP_LIMIT: Duration = Duration::from_secs(60);
/// Packets of a departed flow still in flight when the peer took it over.
const DEPARTED_LINGER: Duration = Duration::from_secs(5);

/// Where a restore stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreState {
    /// `Arrived` sent; no answer yet.
    Pending,
    /// The peer moved the connection here: the socket may start sending.
    Accepted,
    Refused(String),
}

/// A move step repeated until the peer answers it.
#[derive(Debug)]
struct Repeat {
    datagram: Vec<u8>,
    to: SocketAddr,
    from: IpAddr,
    next_send: Instant,
    interval: Duration,
    until: Instant,
}

impl Repeat {
    fn due(&mut self, now: Instant) -> Option<Action> {
        if self.next_send > now || self.until <= now {
            return None;
        }
        self.next_send = now + self.interval;
        self.interval = (self.interval * 2).min(STEP_RETRY_MAX);
        Some(Action::Send {
            to: self.to,
            from: self.from,
            datagram: self.datagram.clone(),
        })
    }
}

/// A checkpointed flow on the old host.
#[derive(Debug)]
pub(super) struct Departure {
    conn_id: ConnId,
    generation: u32,
    key: SecretKey,
    /// `None` once the peer has answered.
    leaving: Option<Repeat>,
    /// Its packets are dropped until then.
    until: Instant,
}

/// A restored flow on the new host, until the peer answers.
#[derive(Debug)]
pub(super) struct Arrival {
    state: RestoreState,
    arrived: Option<Repeat>,
}

impl Engine {
    /// Detaches the managed connection whose local socket is `key`; see the module notes.
    pub fn checkpoint_flow(
        &mut self,
        now: Instant,
        key: &FlowKey,
    ) -> Result<FlowRecord, CommandError> {
        let flow = self
            .flows
            .get(key)
            .ok_or_else(|| CommandError::UnknownFlow(key.to_string()))?;
        let not_managed = || CommandError::NotManaged {
            flow: key.to_string(),
            state: flow.state.name(),
        };
        // A translated connection (see `edp_port`) needs this rackd's offsets on every packet.
        if flow.edp_port.is_some() {
            return Err(not_managed());
        }
        let mut record = FlowRecord::of(flow).ok_or_else(not_managed)?;
        record.generation += 1;
        let (conn_id, secret) = (ConnId(record.conn_id), record.secret());
        let wire = flow.wire;
        let queued = flow.hold.is_some() || flow.is_suspended();
        let leaving =
            Message::migrate(&secret, conn_id, record.generation, MigrateStep::Leaving, 0);
        self.remove(key);
        if queued {
            self.actions.push_back(Action::Queue {
                key: *key,
                wire,
                on: false,
            });
        }
        // Translations are gone with the flow: the peer's packets now arrive as `wire`.
        self.actions.push_back(Action::Queue {
            key: wire,
            wire,
            on: true,
        });
        let mut repeat = Repeat {
            datagram: leaving.encode(),
            to: SocketAddr::new(wire.remote.ip(), self.cfg.peer_port),
            from: wire.local.ip(),
            next_send: now,
            interval: STEP_RETRY,
            until: now + STEP_LIMIT,
        };
        self.actions.extend(repeat.due(now));
        self.departed.insert(
            wire,
            Departure {
                conn_id,
                generation: record.generation,
                key: secret,
                leaving: Some(repeat),
                until: now + STEP_LIMIT,
            },
        );
        self.wake(now + STEP_RETRY);
        tracing::info!(flow = %key, id = %conn_id, generation = record.generation, "checkpointed");
        Ok(record)
    }

    /// Adopts `record` for a restored socket `key` whose sequence state is `seq`; see the
    /// module notes.
    pub fn restore_flow(
        &mut self,
        now: Instant,
        record: FlowRecord,
        key: FlowKey,
        seq: SeqPoint,
    ) -> Result<(), CommandError> {
        let conn_id = ConnId(record.conn_id);
        if self.by_conn.contains_key(&conn_id) || self.flows.contains_key(&key) {
            return Err(CommandError::AlreadyHere(format!(
                "{:016x}",
                record.conn_id
            )));
        }
        if key.local.is_ipv4() != key.remote.is_ipv4() {
            return Err(CommandError::WrongFamily {
                addr: key.remote.ip(),
            });
        }
        // Back where it left from: the departure is over (and must not take the peer's answer
        // to this restore for an answer to its `Leaving`).
        let back: Vec<FlowKey> = self
            .departed
            .iter()
            .filter(|(_, d)| d.conn_id == conn_id)
            .map(|(wire, _)| *wire)
            .collect();
        for wire in back {
            self.departed.remove(&wire);
            self.actions.push_back(Action::Queue {
                key: wire,
                wire,
                on: false,
            });
        }
        let secret = SecretKey::from_bytes(record.secret);
        // The restored socket's byte counters start at zero: ISNs chosen so that the usual
        // derivation (see `hold::SeqState::derive`) gives its sequence state.
        let isns = (
            SeqNum(seq.snd_una) - syn_counted(record.role),
            SeqNum(seq.rcv_nxt) - 1,
        );
        let flow = record.to_flow(key, State::Reconnecting { since: now }, isns, now);
        self.flows.insert(key, flow);
        self.by_conn.insert(conn_id, key);
        let arrived = Message::migrate(
            &secret,
            conn_id,
            record.generation,
            MigrateStep::Arrived,
            key.local.port(),
        );
        let mut repeat = Repeat {
            datagram: arrived.encode(),
            to: SocketAddr::new(key.remote.ip(), self.cfg.peer_port),
            from: key.local.ip(),
            next_send: now,
            interval: STEP_RETRY,
            until: now + STEP_LIMIT,
        };
        self.actions.extend(repeat.due(now));
        self.arrivals.insert(
            key,
            Arrival {
                state: RestoreState::Pending,
                arrived: Some(repeat),
            },
        );
        self.wake(now + STEP_RETRY);
        tracing::info!(flow = %key, id = %conn_id, generation = record.generation, "restoring");
        Ok(())
    }

    /// Where the restore of `key` stands.
    pub fn restore_state(&self, key: &FlowKey) -> RestoreState {
        match self.arrivals.get(key) {
            Some(a) => a.state.clone(),
            None if self.flows.contains_key(key) => RestoreState::Accepted,
            None => RestoreState::Refused(format!("no restore of {key} in progress")),
        }
    }

    /// Ends a restore: an accepted flow stays; one not accepted (refused, or given up by the
    /// I/O layer) is forgotten.
    pub fn end_restore(&mut self, key: &FlowKey) {
        if let Some(a) = self.arrivals.remove(key) {
            if a.state != RestoreState::Accepted {
                self.remove(key);
            }
        }
    }

    /// A packet of a flow that left this host: dropped while the peer may still send to it.
    pub(super) fn departed_segment(&self, key: &FlowKey) -> Option<SegmentVerdict> {
        self.departed
            .contains_key(key)
            .then_some(SegmentVerdict::Drop)
    }

    pub(super) fn on_migrate(&mut self, now: Instant, from: SocketAddr, msg: &Message) {
        let Message::Migrate {
            conn_id,
            generation,
            step,
            port,
            ..
        } = *msg
        else {
            return;
        };
        let verified = match step {
            MigrateStep::Leaving | MigrateStep::Arrived => {
                self.flow_key_of(conn_id).is_some_and(|k| msg.verifies(k))
            }
            MigrateStep::Accepted | MigrateStep::Refused => {
                self.flow_key_of(conn_id).is_some_and(|k| msg.verifies(k))
                    || self
                        .departed
                        .values()
                        .any(|d| d.conn_id == conn_id && msg.verifies(&d.key))
            }
        };
        if !verified {
            self.counters.bad_datagrams += 1;
            return;
        }
        match step {
            MigrateStep::Leaving => self.peer_leaving(now, from, conn_id, generation),
            MigrateStep::Arrived => self.peer_arrived(now, from, conn_id, generation, port),
            MigrateStep::Accepted | MigrateStep::Refused => self.step_answered(
                now,
                conn_id,
                generation,
                port,
                step == MigrateStep::Accepted,
            ),
        }
    }

    fn flow_key_of(&self, conn_id: ConnId) -> Option<&SecretKey> {
        let flow = self.flows.get(self.by_conn.get(&conn_id)?)?;
        Some(flow.session.as_ref()?.key())
    }

    /// The peer's socket was checkpointed: hold the connection until it reappears.
    fn peer_leaving(&mut self, now: Instant, from: SocketAddr, conn_id: ConnId, generation: u32) {
        let key = self.by_conn[&conn_id];
        let flow = &self.flows[&key];
        if generation <= flow.generation {
            return; // an old step replayed
        }
        if flow.moving != Some(generation) {
            tracing::info!(flow = %key, id = %conn_id, generation, "peer's socket is moving");
            if self.pin(now, key).is_err() {
                return;
            }
            self.flows.get_mut(&key).expect("flow").moving = Some(generation);
        }
        self.answer(from, key, generation, MigrateStep::Accepted, 0);
    }

    /// The peer's socket was restored at `from`'s address and `port`.
    fn peer_arrived(
        &mut self,
        now: Instant,
        from: SocketAddr,
        conn_id: ConnId,
        generation: u32,
        port: u16,
    ) {
        let key = self.by_conn[&conn_id];
        let flow = &self.flows[&key];
        if generation <= flow.generation {
            tracing::warn!(flow = %key, id = %conn_id, generation, from = %from.ip(),
                "refused a move that was already made (a replayed checkpoint)");
            self.answer(from, key, generation, MigrateStep::Refused, port);
            return;
        }
        if from.ip().is_ipv4() != key.remote.is_ipv4() || port == 0 {
            self.counters.bad_datagrams += 1;
            return;
        }
        let (old_ip, mut wire) = (flow.wire.remote.ip(), flow.wire);
        wire.remote = SocketAddr::new(from.ip(), port);
        tracing::info!(flow = %key, id = %conn_id, generation, to = %wire.remote, "peer's socket moved");
        if let Some(peer) = self.peers.get_mut(&old_ip) {
            peer.conns.remove(&conn_id);
            if peer.conns.is_empty() {
                self.peers.remove(&old_ip);
            }
        }
        self.peers
            .entry(from.ip())
            .or_insert_with(|| Peer::new(now))
            .conns
            .insert(conn_id);
        if wire != flow.wire {
            self.rewire(key, wire);
        }
        let flow = self.flows.get_mut(&key).expect("flow");
        flow.generation = generation;
        flow.moving = None;
        flow.moved_from = Some(old_ip);
        flow.pinned = false;
        self.revision += 1;
        self.answer(from, key, generation, MigrateStep::Accepted, port);
        self.resume(now, key);
    }

    /// The peer answered our `Leaving` (old host) or `Arrived` (new host).
    fn step_answered(
        &mut self,
        now: Instant,
        conn_id: ConnId,
        generation: u32,
        port: u16,
        accepted: bool,
    ) {
        // An answer names its step: port 0 answers a `Leaving`, the restored socket's port its
        // `Arrived` (a late answer to this host's `Leaving` must not accept a restore here).
        if port == 0 {
            if let Some(d) = self
                .departed
                .values_mut()
                .find(|d| d.conn_id == conn_id && d.generation == generation)
            {
                if d.leaving.take().is_some() {
                    d.until = now + DEPARTED_LINGER;
                    self.wake(now + DEPARTED_LINGER);
                }
            }
            return;
        }
        let Some(&key) = self.by_conn.get(&conn_id) else {
            return;
        };
        if key.local.port() != port {
            return;
        }
        let Some(arrival) = self.arrivals.get_mut(&key) else {
            return;
        };
        if self.flows[&key].generation != generation || arrival.state != RestoreState::Pending {
            return;
        }
        arrival.arrived = None;
        if !accepted {
            arrival.state = RestoreState::Refused(format!(
                "the peer refused move {generation} of connection {:016x}: it was made before \
                 (a checkpoint can be restored once)",
                conn_id.0
            ));
            return;
        }
        arrival.state = RestoreState::Accepted;
        let remote = key.remote.ip();
        self.peers
            .entry(remote)
            .or_insert_with(|| Peer::new(now))
            .conns
            .insert(conn_id);
        let flow = self.flows.get_mut(&key).expect("flow");
        flow.set_state(State::Connected, now);
        flow.reconnects += 1;
        self.revision += 1;
        tracing::info!(flow = %key, id = %conn_id, generation, "restored");
    }

    fn answer(
        &mut self,
        to: SocketAddr,
        key: FlowKey,
        generation: u32,
        step: MigrateStep,
        port: u16,
    ) {
        let flow = &self.flows[&key];
        let (Some(session), Some(conn_id)) = (&flow.session, flow.conn_id()) else {
            return;
        };
        let datagram = Message::migrate(session.key(), conn_id, generation, step, port).encode();
        self.actions.push_back(Action::Send {
            to: SocketAddr::new(to.ip(), self.cfg.peer_port),
            from: flow.wire.local.ip(),
            datagram,
        });
    }

    /// Repeats unanswered steps and ends departures and finished arrivals that are due.
    pub(super) fn scan_moves(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        let mut over = Vec::new();
        for (wire, d) in &mut self.departed {
            if let Some(r) = &mut d.leaving {
                self.actions.extend(r.due(now));
                soonest(r.next_send);
            }
            if d.until <= now {
                over.push(*wire);
            } else {
                soonest(d.until);
            }
        }
        for wire in over {
            self.departed.remove(&wire);
            self.actions.push_back(Action::Queue {
                key: wire,
                wire,
                on: false,
            });
        }
        for a in self.arrivals.values_mut() {
            if let Some(r) = &mut a.arrived {
                self.actions.extend(r.due(now));
                if r.until <= now {
                    a.arrived = None;
                    a.state =
                        RestoreState::Refused("the peer did not answer the restored socket".into());
                } else {
                    soonest(r.next_send);
                }
            }
        }
        next
    }
}
