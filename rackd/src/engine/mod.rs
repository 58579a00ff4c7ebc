//! The daemon's protocol core, without I/O.
//!
//! [`Engine`] is driven like quinn-proto's `Connection`: the I/O layer feeds it what happened
//! (`on_syn`, `initialised`, `handle_timeout`) with the current time, applies what it returns,
//! drains [`Engine::poll_action`], and sleeps until [`Engine::poll_timeout`]. It never reads a clock
//! or touches a socket, so every ordering of events is a unit test.

mod flow;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use flow::{Dir, Flow, FlowKey, Role, State};

/// How long a connection may stay in negotiation (SYN retries, then initialisation) before it is
/// released as plain TCP.
pub const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A queued SYN or SYN-ACK, reduced to what negotiation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynSeen {
    pub dir: Dir,
    pub key: FlowKey,
    /// SYN-ACK rather than SYN.
    pub ack: bool,
    /// The token of a rackd option in the packet, if it carried one.
    pub hello: Option<u32>,
}

/// What to do with the SYN packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynVerdict {
    Pass,
    /// Add the rackd option with this token, then pass.
    AddHello {
        token: u32,
    },
}

/// Work for the I/O layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Both ends run rackd: run initialisation over the daemon channel (client side starts it).
    Initialise {
        key: FlowKey,
        role: Role,
        token_local: u32,
        token_peer: u32,
    },
    /// The connection runs as plain TCP from now on.
    Released { key: FlowKey },
}

/// Totals kept after flows are gone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub released: u64,
    pub negotiation_timeouts: u64,
}

#[derive(Debug)]
pub struct Engine {
    flows: HashMap<FlowKey, Flow>,
    deadlines: BinaryHeap<Reverse<(Instant, FlowKey)>>,
    actions: VecDeque<Action>,
    tokens: TokenSource,
    pub counters: Counters,
}

impl Engine {
    /// `seed` makes token choice reproducible in tests; the daemon passes a random one.
    pub fn new(seed: u64) -> Self {
        Self {
            flows: HashMap::new(),
            deadlines: BinaryHeap::new(),
            actions: VecDeque::new(),
            tokens: TokenSource(seed),
            counters: Counters::default(),
        }
    }

    pub fn flow(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key)
    }

    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// Handles a queued SYN or SYN-ACK and says what to do with the packet.
    pub fn on_syn(&mut self, now: Instant, syn: SynSeen) -> SynVerdict {
        match (syn.dir, syn.ack) {
            (Dir::Out, false) => self.client_syn(now, syn.key),
            (Dir::In, true) => {
                self.client_syn_ack(now, syn.key, syn.hello);
                SynVerdict::Pass
            }
            (Dir::In, false) => {
                self.server_syn(now, syn.key, syn.hello);
                SynVerdict::Pass
            }
            (Dir::Out, true) => self.server_syn_ack(syn.key),
        }
    }

    fn client_syn(&mut self, now: Instant, key: FlowKey) -> SynVerdict {
        if let Some(Flow {
            state: State::Negotiating { token_local, .. },
            ..
        }) = self.flows.get(&key)
        {
            // A retransmitted SYN carries the same token.
            return SynVerdict::AddHello {
                token: *token_local,
            };
        }
        let token = self.tokens.next();
        let state = State::Negotiating {
            token_local: token,
            token_peer: None,
        };
        self.insert(now, Flow::new(key, Role::Client, state, now));
        SynVerdict::AddHello { token }
    }

    fn client_syn_ack(&mut self, now: Instant, key: FlowKey, hello: Option<u32>) {
        let Some(flow) = self.flows.get_mut(&key) else {
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
        match hello {
            Some(token_peer) => {
                flow.set_state(
                    State::Negotiating {
                        token_local,
                        token_peer: Some(token_peer),
                    },
                    now,
                );
                self.actions.push_back(Action::Initialise {
                    key,
                    role: Role::Client,
                    token_local,
                    token_peer,
                });
            }
            None => self.release(key),
        }
    }

    fn server_syn(&mut self, now: Instant, key: FlowKey, hello: Option<u32>) {
        let Some(token_peer) = hello else { return };
        if let Some(flow) = self.flows.get(&key) {
            // A retransmitted SYN with the same token changes nothing; a different token means
            // the client gave up on the old attempt and this is a new connection.
            if matches!(flow.state, State::Negotiating { token_peer: Some(t), .. } if t == token_peer)
            {
                return;
            }
            if !matches!(flow.state, State::Negotiating { .. }) {
                return; // an established connection is not replaced by a stray SYN
            }
        }
        let token_local = self.tokens.next();
        let state = State::Negotiating {
            token_local,
            token_peer: Some(token_peer),
        };
        self.insert(now, Flow::new(key, Role::Server, state, now));
        self.actions.push_back(Action::Initialise {
            key,
            role: Role::Server,
            token_local,
            token_peer,
        });
    }

    fn server_syn_ack(&mut self, key: FlowKey) -> SynVerdict {
        match self.flows.get(&key) {
            Some(Flow {
                role: Role::Server,
                state: State::Negotiating { token_local, .. },
                ..
            }) => SynVerdict::AddHello {
                token: *token_local,
            },
            _ => SynVerdict::Pass,
        }
    }

    /// Initialisation over the daemon channel finished: the connection is protected.
    pub fn initialised(&mut self, now: Instant, key: &FlowKey) -> bool {
        match self.flows.get_mut(key) {
            Some(flow)
                if matches!(
                    flow.state,
                    State::Negotiating {
                        token_peer: Some(_),
                        ..
                    }
                ) =>
            {
                flow.set_state(State::Connected, now);
                true
            }
            _ => false,
        }
    }

    /// Initialisation failed or the peer turned out not to be usable: plain TCP.
    pub fn release(&mut self, key: FlowKey) {
        if self.flows.remove(&key).is_some() {
            tracing::debug!(flow = %key, "released");
            self.counters.released += 1;
            self.actions.push_back(Action::Released { key });
        }
    }

    /// Expires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            // Lazy deletion: the entry may belong to a flow that moved on or is gone.
            let due = self.flows.get(&key).is_some_and(|f| {
                matches!(f.state, State::Negotiating { .. }) && f.created + NEGOTIATE_TIMEOUT <= now
            });
            if due {
                self.counters.negotiation_timeouts += 1;
                self.release(key);
            }
        }
    }

    /// The next instant at which [`Engine::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Number of flows per state, in [`State::NAMES`] order (released flows are not kept, so that
    /// slot counts the total released so far).
    pub fn state_counts(&self) -> [u64; 6] {
        let mut counts = [0u64; 6];
        for f in self.flows.values() {
            let i = State::NAMES
                .iter()
                .position(|n| *n == f.state.name())
                .unwrap_or(0);
            counts[i] += 1;
        }
        counts[4] += self.counters.released;
        counts
    }

    fn insert(&mut self, now: Instant, flow: Flow) {
        self.deadlines
            .push(Reverse((now + NEGOTIATE_TIMEOUT, flow.key)));
        self.flows.insert(flow.key, flow);
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
