//! The engine's side of connections from user-level EDP clients to local server programs on
//! `peer.edp_ports`: each is classified by [`EdpPort`] and, if enhanced, translated for its
//! whole life; the result is a connected flow without heartbeats, like those of `user_peer`.

use super::edp_port::{EdpPort, Event, Output, Verdict};
use super::*;

impl Engine {
    /// The flows of `peer.edp_ports` connections rackd still holds or rewrites.
    pub fn edp_port_flows(&self) -> Vec<FlowKey> {
        self.flows
            .values()
            .filter(|f| f.edp_port.is_some())
            .map(|f| f.key)
            .collect()
    }

    /// A SYN without the rackd option to a listed port (never one with it: that is a rackd
    /// peer, negotiated as usual).
    pub(super) fn is_edp_port(&self, key: FlowKey) -> bool {
        self.cfg.edp_ports.contains(&key.local.port())
    }

    /// The client's SYN: the flow is queued from here on, until the client shows what it is.
    pub(super) fn edp_port_syn(
        &mut self,
        now: Instant,
        syn: SynSeen,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        if let Some(flow) = self.flows.get(&syn.key) {
            let retransmitted = flow
                .edp_port
                .as_ref()
                .is_some_and(|e| e.client_isn() == syn.seq);
            if retransmitted || flow.edp_port.is_none() {
                return;
            }
            // The client gave up on the old attempt: a new connection on the tuple.
            self.remove(&syn.key);
        }
        let Some(machine) = packet().and_then(|p| EdpPort::new(now, &p, &self.params)) else {
            return;
        };
        let Some(mut flow) = self.server_flow(now, &syn) else {
            return;
        };
        if let Some(at) = machine.poll_timeout() {
            self.wake(at);
        }
        flow.edp_port = Some(Box::new(machine));
        self.insert(now, flow);
        self.actions.push_back(Action::QueueStrictly {
            key: syn.key,
            on: true,
        });
    }

    /// The socket's SYN-ACK: it travels as it is; the machine notes its parameters.
    pub(super) fn edp_port_syn_ack(
        &mut self,
        key: FlowKey,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if let (Some(e), Some(p)) = (flow.edp_port.as_mut(), packet()) {
            flow.isn_local = tcpseq::TcpIpPacket::new_checked(&p[..])
                .ok()
                .map(|v| v.tcp().seq());
            e.on_syn_ack(&p);
        }
    }

    /// A queued packet of such a flow other than a SYN.
    pub(super) fn edp_port_segment(
        &mut self,
        now: Instant,
        dir: Dir,
        key: FlowKey,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> SegmentVerdict {
        // A truncated packet cannot be copied, so not rewritten: the sender retransmits it.
        let Some(copy) = packet() else {
            return SegmentVerdict::Drop;
        };
        let Some(machine) = self.flows.get_mut(&key).and_then(|f| f.edp_port.as_mut()) else {
            return SegmentVerdict::Accept;
        };
        let out = match dir {
            Dir::In => machine.on_client(now, copy, self.rng.as_mut()),
            Dir::Out => machine.on_server(now, copy),
        };
        let at = machine.poll_timeout();
        if let Some(at) = at {
            self.wake(at);
        }
        self.edp_port_output(now, key, out)
    }

    /// Timers of such flows, from the table scan.
    pub(super) fn edp_port_timers(&mut self, now: Instant, keys: Vec<FlowKey>) {
        for key in keys {
            let Some(machine) = self.flows.get_mut(&key).and_then(|f| f.edp_port.as_mut()) else {
                continue;
            };
            let out = machine.handle_timeout(now);
            self.edp_port_output(now, key, out);
        }
    }

    fn edp_port_output(&mut self, now: Instant, key: FlowKey, out: Output) -> SegmentVerdict {
        for p in out.inject {
            self.inject(key, p);
        }
        match out.event {
            None => {}
            Some(Event::Plain) => self.release(key),
            Some(Event::Probed) => {
                tracing::debug!(flow = %key, "answered a user-level EDP client's probe")
            }
            Some(Event::Enhanced(session)) => self.edp_port_connected(now, key, session),
            Some(Event::Failed(why)) => {
                tracing::warn!(
                    flow = %key,
                    "a user-level EDP client's initialisation failed: {why}; resetting both ends"
                );
                self.counters.init_failures += 1;
                self.remove(&key);
            }
            Some(Event::Ended) => self.close(key),
        }
        match out.verdict {
            Verdict::Accept => SegmentVerdict::Accept,
            Verdict::Drop => SegmentVerdict::Drop,
            Verdict::Rewrite(p) => SegmentVerdict::Rewrite(p),
        }
    }

    /// Initialised with the client's id and key: connected, not monitored (the client has no
    /// daemon channel), and still translated.
    fn edp_port_connected(&mut self, now: Instant, key: FlowKey, session: Box<init::Session>) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let id = session.conn_id;
        let key_id = edp::identity::hex(&session.key_id());
        // The id is the client's choice: its halves stand for the two tokens.
        flow.set_state(
            State::Negotiating {
                token_local: id.0 as u32,
                token_peer: Some((id.0 >> 32) as u32),
            },
            now,
        );
        flow.set_state(State::Connected, now);
        flow.session = Some(session);
        flow.init = Init::Done { ack_frame: None };
        flow.user_peer = true;
        self.negotiating -= 1;
        self.revision += 1;
        tracing::info!(
            flow = %key,
            id = %id,
            key = %key_id,
            "connected to a user-level EDP client (translated; not monitored: it has no daemon channel)"
        );
    }
}

#[cfg(test)]
mod tests;
