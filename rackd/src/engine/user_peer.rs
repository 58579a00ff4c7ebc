//! The engine's side of connections to user-level EDP servers (`peer.edp_servers`): the probe's
//! outcome, the flow's life while [`InBand`] speaks for the local socket, and the result — a
//! connected flow without heartbeats, since such a peer has no daemon channel.

use super::*;
use tcpseq::Checksum;

impl Engine {
    /// The daemon's probe of the server of `key` ended: `enhanced` if it answered exactly with
    /// the announcement, then closed.
    pub fn on_edp_probe(&mut self, now: Instant, key: FlowKey, enhanced: bool) {
        let Some(flow) = self.flows.get(&key) else {
            return;
        };
        if !flow.inband.as_ref().is_some_and(|i| i.is_probing()) {
            return;
        }
        let State::Negotiating { token_local, .. } = flow.state else {
            return;
        };
        if enhanced {
            match self.start_inband(now, key, token_local) {
                Ok(()) => return,
                Err(e) => tracing::warn!(flow = %key, "cannot start initialisation: {e}"),
            }
        } else {
            tracing::debug!(flow = %key, "not a user-level EDP server: negotiating as usual");
        }
        self.inband_to_plain(key);
    }

    /// An EDP server: the SYN moved back to make room for the announcement and `Init`.
    fn start_inband(
        &mut self,
        now: Instant,
        key: FlowKey,
        token_local: u32,
    ) -> Result<(), init::InitError> {
        // The server half of the id is rackd's choice too: the peer takes the id it is given.
        let token_peer = self.tokens.next();
        let conn_id = ConnId(u64::from(token_local) << 32 | u64::from(token_peer));
        let (initiator, init) = Initiator::start(self.rng.as_mut(), Some(conn_id), &self.params)?;
        let frame = Message::Init(init).encode();
        let Some(flow) = self.flows.get_mut(&key) else {
            return Ok(());
        };
        let Some(inband) = flow.inband.as_mut() else {
            return Ok(());
        };
        let syn = inband.start(now, &frame, initiator);
        let at = inband.poll_timeout();
        flow.set_state(
            State::Negotiating {
                token_local,
                token_peer: Some(token_peer),
            },
            now,
        );
        self.by_conn.insert(conn_id, key);
        tracing::debug!(flow = %key, id = %conn_id, "a user-level EDP server: initialising in-band");
        self.queue(key, true);
        self.inject(key, syn);
        self.wake(at);
        Ok(())
    }

    /// Not an EDP server (or no report): the socket's SYN goes on with the rackd option, and
    /// negotiation runs as for any connection.
    fn inband_to_plain(&mut self, key: FlowKey) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let State::Negotiating { token_local, .. } = flow.state else {
            return;
        };
        let Some(inband) = flow.inband.take() else {
            return;
        };
        let syn = inband.into_syn();
        let packet =
            match crate::packets::with_hello(&syn, Checksum::Complete, token_local, Vec::new()) {
                Ok(p) => p,
                Err(_) => syn,
            };
        self.inject(key, packet);
    }

    /// The server's SYN-ACK of an in-band flow: rackd completes the handshake in the socket's
    /// place.
    pub(super) fn inband_syn_ack(
        &mut self,
        now: Instant,
        key: FlowKey,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> SynVerdict {
        // A copy cannot be made of a truncated packet: the server will repeat it.
        let Some(copy) = packet() else {
            return SynVerdict::Drop;
        };
        let Some(inband) = self.flows.get_mut(&key).and_then(|f| f.inband.as_mut()) else {
            return SynVerdict::Drop;
        };
        match inband.on_syn_ack(now, copy) {
            Ok(segments) => {
                let at = inband.poll_timeout();
                for p in segments {
                    self.inject(key, p);
                }
                self.wake(at);
            }
            Err(e) => self.inband_failed(key, e),
        }
        SynVerdict::Drop
    }

    /// A queued packet of an in-band flow other than a SYN.
    pub(super) fn inband_segment(
        &mut self,
        now: Instant,
        dir: Dir,
        key: FlowKey,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> SegmentVerdict {
        if dir == Dir::Out {
            return SegmentVerdict::Accept;
        }
        let Some(copy) = packet() else {
            return SegmentVerdict::Drop;
        };
        let Some(inband) = self.flows.get_mut(&key).and_then(|f| f.inband.as_mut()) else {
            return SegmentVerdict::Drop;
        };
        match inband.on_remote(copy) {
            Ok(None) => {}
            Ok(Some(ack)) => self.inband_finish(now, key, &ack),
            Err(e) => self.inband_failed(key, e),
        }
        SegmentVerdict::Drop
    }

    /// The InitAck is complete: checked, then the socket gets its SYN-ACK and the flow leaves
    /// the queue.
    fn inband_finish(&mut self, now: Instant, key: FlowKey, ack: &edp::message::InitAck) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let Some(initiator) = flow.inband.as_mut().and_then(|i| i.take_initiator()) else {
            return;
        };
        let peer = key.remote.ip().to_string();
        let session = match initiator.finish(ack, &peer, &mut self.trust) {
            Ok(session) => session,
            Err(e) => return self.inband_failed(key, InBandError::BadInitAck(e.to_string())),
        };
        let Some(inband) = flow.inband.take() else {
            return;
        };
        let packets = inband.completion();
        flow.isn_peer = inband.socket_isn_peer();
        let key_id = edp::identity::hex(&session.key_id());
        flow.session = Some(Box::new(session));
        flow.init = Init::Done { ack_frame: None };
        flow.user_peer = true;
        flow.set_state(State::Connected, now);
        self.negotiating -= 1;
        self.revision += 1;
        tracing::info!(
            flow = %key,
            id = %ack.conn_id,
            key = %key_id,
            "connected to a user-level EDP peer (not monitored: it has no daemon channel)"
        );
        for p in packets {
            self.inject(key, p);
        }
        self.queue(key, false);
    }

    /// The in-band handshake failed: both ends are reset (the socket sees a refused connect).
    pub(super) fn inband_failed(&mut self, key: FlowKey, error: InBandError) {
        let Some(inband) = self.flows.get(&key).and_then(|f| f.inband.as_ref()) else {
            return;
        };
        let resets = inband.resets(error == InBandError::Reset);
        tracing::warn!(
            flow = %key,
            "in-band EDP with the user-level server failed: {error}; resetting both ends"
        );
        self.counters.init_failures += 1;
        for p in resets {
            self.inject(key, p);
        }
        self.remove(&key); // and out of the queue
    }

    /// Timers of in-band flows, from the table scan: re-sends, failures and overdue probes.
    pub(super) fn inband_timers(&mut self, now: Instant, keys: Vec<FlowKey>) {
        for key in keys {
            let Some(inband) = self.flows.get_mut(&key).and_then(|f| f.inband.as_mut()) else {
                continue;
            };
            if inband.probe_overdue(now) {
                tracing::warn!(flow = %key, "no report of the EDP probe: negotiating as usual");
                self.inband_to_plain(key);
                continue;
            }
            match inband.handle_timeout(now) {
                Ok(packets) => {
                    let at = inband.poll_timeout();
                    for p in packets {
                        self.inject(key, p);
                    }
                    self.wake(at);
                }
                Err(e) => self.inband_failed(key, e),
            }
        }
    }
}

#[cfg(test)]
mod tests;
