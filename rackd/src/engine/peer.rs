//! Liveness of the path to one peer host, from authenticated heartbeats in both directions.
//!
//! Each beat carries the sender's sequence number and the highest one it has received. A path is
//! up while beats arrive *and* the peer echoes beats we sent recently: a path that works in one
//! direction only is down for both ends.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use edp::message::ConnId;

/// Beats remembered with their send time, to date the peer's echoes.
const SENT_MEMORY: usize = 128;

#[derive(Debug)]
pub struct Peer {
    /// Connections with this peer (their keys authenticate the beats).
    pub conns: BTreeSet<ConnId>,
    /// Last connection whose key signed a beat, for round-robin.
    rr: Option<ConnId>,
    rx_seq: u64,
    sent: VecDeque<(u64, Instant)>,
    last_rx: Instant,
    /// When the latest beat the peer confirmed was sent.
    confirmed_sent: Instant,
    pub up: bool,
    pub next_beat: Instant,
    last_reply: Option<Instant>,
    /// Echoes of beats sent before this do not count (see [`Peer::reconfirm`]).
    confirm_after: Option<Instant>,
}

/// Beat timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    /// Silence (either direction) after which the path is down.
    pub detect_after: Duration,
    /// Beat interval while the path is down, so its return is noticed at once.
    pub probe_interval: Duration,
}

impl Peer {
    /// A peer whose path has just been shown to work (initialisation succeeded).
    pub fn new(now: Instant) -> Self {
        Peer {
            conns: BTreeSet::new(),
            rr: None,
            rx_seq: 0,
            sent: VecDeque::new(),
            last_rx: now,
            confirmed_sent: now,
            up: true,
            next_beat: now,
            last_reply: None,
            confirm_after: None,
        }
    }

    /// The next beat to send: (connection whose key signs it, seq, echo). `last_seq` is the
    /// last number sent to any peer: the peer ignores numbers it has seen, and it may remember
    /// ours longer than we remember it (its entry outlived ours, or rackd restarted), so
    /// numbers come from one counter that only grows.
    pub fn beat(
        &mut self,
        now: Instant,
        t: &Timing,
        last_seq: &mut u64,
    ) -> Option<(ConnId, u64, u64)> {
        let conn = self.next_conn()?;
        *last_seq += 1;
        let seq = *last_seq;
        if self.sent.len() == SENT_MEMORY {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, now));
        self.next_beat = now
            + if self.up {
                t.interval
            } else {
                t.probe_interval
            };
        Some((conn, seq, self.rx_seq))
    }

    fn next_conn(&mut self) -> Option<ConnId> {
        let next = match self.rr {
            Some(last) => self
                .conns
                .range((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                .next()
                .or_else(|| self.conns.iter().next()),
            None => self.conns.iter().next(),
        }
        .copied();
        self.rr = next;
        next
    }

    /// An authenticated beat arrived. Returns whether to answer at once: the peer has not
    /// heard us lately (its echo is stale), so it cannot know the path is back until we speak.
    pub fn on_beat(&mut self, now: Instant, seq: u64, echo: u64, t: &Timing) -> bool {
        if seq <= self.rx_seq {
            return false; // replayed or reordered
        }
        self.rx_seq = seq;
        self.last_rx = now;
        if let Some(&(_, at)) = self.sent.iter().find(|(s, _)| *s == echo) {
            if at > self.confirmed_sent && self.confirm_after.is_none_or(|t| at >= t) {
                self.confirmed_sent = at;
            }
        }
        let stale = now.duration_since(self.confirmed_sent) > t.interval * 2;
        let reply = (stale || !self.up)
            && self
                .last_reply
                .is_none_or(|r| now.duration_since(r) >= t.probe_interval / 4);
        if reply {
            self.last_reply = Some(now);
        }
        reply
    }

    /// Our side of the path changed (a new local address): the path counts as down until the
    /// peer echoes a beat sent from now on, which shows it has seen us at the new address.
    pub fn reconfirm(&mut self, now: Instant, t: &Timing) {
        self.confirm_after = Some(now);
        self.confirmed_sent = now
            .checked_sub(t.detect_after)
            .unwrap_or(self.confirmed_sent);
        self.next_beat = now;
    }

    /// Whether both directions have carried a beat within the detection time.
    pub fn alive(&self, now: Instant, t: &Timing) -> bool {
        now.duration_since(self.last_rx) < t.detect_after
            && now.duration_since(self.confirmed_sent) < t.detect_after
    }

    pub fn last_rx(&self) -> Instant {
        self.last_rx
    }
}
