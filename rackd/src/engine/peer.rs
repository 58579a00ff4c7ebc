//! Liveness of the path to one peer host, from authenticated heartbeats in both directions.
//!
//! Each beat carries the sender's sequence number and the highest one it has received. A path is
//! up while beats arrive *and* the peer echoes beats we sent recently: a path that works in one
//! direction only is down for both ends.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use edp::crypto::SecretKey;
use edp::message::ConnId;

/// Beats remembered with their send time, to date the peer's echoes.
const SENT_MEMORY: usize = 128;
/// How long beats go on after the last connection with the peer ended here. The peer may
/// notice the end of its own sockets later (a lost destroy notification is made up by the next
/// socket-table read, seconds later), and until then it expects beats: silence would look
/// like a failed path there, and its connections would be held instead of closed.
pub const LINGER: Duration = Duration::from_secs(30);
/// Ended connections remembered per peer (their keys sign and check the lingering beats).
const ENDED_MEMORY: usize = 8;

#[derive(Debug)]
struct Ended {
    conn: ConnId,
    key: SecretKey,
    local: IpAddr,
    at: Option<Instant>,
}

#[derive(Debug)]
pub struct Peer {
    /// Connections with this peer (their keys authenticate the beats).
    pub conns: BTreeSet<ConnId>,
    /// Connections that ended here, newest last: key, the local address they used, and when
    /// the end was seen (stamped by [`Peer::expire`]). Beats go on under them for [`LINGER`].
    ended: VecDeque<Ended>,
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
            ended: VecDeque::new(),
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

    /// The connection ended here. With its key and the local address it used (`signer`), it
    /// keeps signing beats for a while (see [`LINGER`]).
    pub fn retire(&mut self, conn: ConnId, signer: Option<(SecretKey, IpAddr)>) {
        self.conns.remove(&conn);
        let Some((key, local)) = signer else { return };
        self.ended.retain(|e| e.conn != conn);
        if self.ended.len() == ENDED_MEMORY {
            self.ended.pop_front();
        }
        self.ended.push_back(Ended {
            conn,
            key,
            local,
            at: None,
        });
    }

    /// The key and local address of a connection that ended here recently.
    pub fn ended(&self, conn: ConnId) -> Option<(&SecretKey, IpAddr)> {
        self.ended
            .iter()
            .find_map(|e| (e.conn == conn).then_some((&e.key, e.local)))
    }

    /// Forgets connections that ended more than [`LINGER`] ago; returns whether the peer is
    /// still needed (a connection, or a recent end).
    pub fn expire(&mut self, now: Instant) -> bool {
        for e in &mut self.ended {
            e.at.get_or_insert(now);
        }
        self.ended
            .retain(|e| e.at.is_some_and(|t| now.duration_since(t) < LINGER));
        !self.conns.is_empty() || !self.ended.is_empty()
    }

    /// A live connection, round-robin; else the connection that ended last.
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
        next.or_else(|| self.ended.back().map(|e| e.conn))
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

    /// Both directions were just shown to work (outside of beats).
    pub fn proven(&mut self, now: Instant) {
        self.last_rx = now;
        self.confirmed_sent = now;
        self.confirm_after = None;
        self.up = true;
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
