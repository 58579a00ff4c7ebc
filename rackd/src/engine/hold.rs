//! Holding a connection open while its path is down: rackd speaks for each end to the other.
//!
//! Towards the local socket rackd plays the peer: ACKs that acknowledge exactly what the peer
//! acknowledged (`snd_una`) and advertise a zero window. Linux then treats retransmissions as
//! window probes and never aborts the socket while the probes are answered
//! (`tcp_retransmit_timer`, `tcp_probe_timer`). When the peer's packets still arrive (suspension
//! by command) rackd plays the local socket towards the peer the same way.
//!
//! Resuming: a socket whose data was lost in the outage has been retransmitting for a long time;
//! the first retransmission timeout it meets with a nonzero window checks `tcp_retries2` against
//! the whole outage and aborts it. So the window is never reopened by rackd while data is
//! outstanding. Instead rackd re-sends the socket's own latest retransmission of its oldest
//! unacknowledged segment (captured during the hold) to the peer, whose real ACK advances
//! `snd_una` (which clears the retransmission count) and reopens the window; it repeats that
//! until the peer's ACK is seen (the peer's daemon may resume a moment later than this one).
//!
//! Timestamps: a segment that carries them must have a TSval the receiver accepts (PAWS), which
//! only the socket's own packets reveal (their TSecr is the `ts_recent` the socket holds). The
//! first zero-window ACK goes without (Linux accepts that); every answer after it echoes what the
//! socket last showed.

use std::time::{Duration, Instant};

use tcpseq::{Flags, Segment, SeqNum, TcpIpPacket, TcpOption};

use super::flow::{FlowKey, Role};

/// Answers to one side are at most this frequent: probes come seconds apart, so this only
/// stops pathological loops.
const MIN_ANSWER_GAP: Duration = Duration::from_millis(10);
/// Longest the local socket goes without an ACK from rackd during a hold (see
/// [`Hold::keepalive`]). Its window probes back off from 200 ms; each ACK clears their count.
pub const KEEPALIVE: Duration = Duration::from_secs(1);

/// The local socket's counters from the kernel's socket table (`tcp_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketCounters {
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// The peer's last advertised window, in bytes.
    pub snd_wnd: u32,
    /// The scale the peer applies to the windows it advertises.
    pub snd_wscale: u8,
    pub timestamps: bool,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
}

/// The local socket's sequence state, derived from its counters and the ISNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqState {
    pub snd_una: SeqNum,
    pub rcv_nxt: SeqNum,
}

impl SeqState {
    /// `tcpi_bytes_acked` counts the client's SYN (acknowledged by the SYN-ACK) but not the
    /// server's (its socket is born with the SYN-ACK already acknowledged); both counters include
    /// FINs, as the sequence space does. Measured on Linux 6.18; the live suspension tests fail
    /// if this drifts.
    pub fn derive(role: Role, isn_local: SeqNum, isn_peer: SeqNum, c: &SocketCounters) -> Self {
        let syn_counted = match role {
            Role::Client => 0,
            Role::Server => 1,
        };
        let snd_una = isn_local + syn_counted + c.bytes_acked as u32;
        let rcv_nxt = isn_peer + 1 + c.bytes_received as u32;
        SeqState { snd_una, rcv_nxt }
    }
}

/// A packet summarised for the hold: what it reveals about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSeen {
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub flags: Flags,
    /// The raw window field.
    pub window: u16,
    /// (TSval, TSecr)
    pub timestamps: Option<(u32, u32)>,
    pub payload_len: u32,
}

impl SegmentSeen {
    pub fn of<T: AsRef<[u8]>>(p: &TcpIpPacket<T>) -> Self {
        let tcp = p.tcp();
        SegmentSeen {
            seq: tcp.seq(),
            ack: tcp.ack(),
            flags: tcp.flags(),
            window: tcp.window(),
            timestamps: p.tcp_options().map_while(Result::ok).find_map(|o| match o {
                TcpOption::Timestamps { tsval, tsecr } => Some((tsval, tsecr)),
                _ => None,
            }),
            payload_len: p.tcp_payload().len() as u32,
        }
    }
}

/// What one end has shown of itself in its packets during the hold.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// Its ACK field: what it has received.
    rcv_nxt: Option<SeqNum>,
    /// Its latest TSval, and the TSecr it echoes (its `ts_recent`).
    tsval: Option<u32>,
    ts_recent: Option<u32>,
    window: Option<u16>,
    last_answer: Option<Instant>,
}

impl Seen {
    fn learn(&mut self, seg: &SegmentSeen) {
        if seg.flags.ack() {
            self.rcv_nxt = Some(seg.ack);
            self.window = Some(seg.window);
        }
        if let Some((val, ecr)) = seg.timestamps {
            self.tsval = Some(val);
            self.ts_recent = Some(ecr);
        }
    }

    fn may_answer(&mut self, now: Instant) -> bool {
        let ok = self
            .last_answer
            .is_none_or(|t| now.duration_since(t) >= MIN_ANSWER_GAP);
        if ok {
            self.last_answer = Some(now);
        }
        ok
    }
}

/// A suspended connection's state as rackd maintains it.
#[derive(Debug, Clone)]
pub struct Hold {
    key: FlowKey,
    /// What the peer had acknowledged of the local socket's data when the hold began.
    snd_una: SeqNum,
    /// What the local socket has received (it only changes through its own packets' ACKs).
    local_rcv_nxt: SeqNum,
    /// The window the peer last offered, to give back on resume.
    peer_window: u32,
    peer_wscale: u8,
    timestamps: bool,
    local: Seen,
    remote: Seen,
    /// The socket's latest retransmission of its oldest unacknowledged segment, checksum
    /// complete, ready to be sent to the peer on resume.
    head: Option<Vec<u8>>,
    /// The socket had data in flight when the hold began.
    outstanding: bool,
    /// When rackd last sent the local socket an ACK.
    last_to_local: Option<Instant>,
}

impl Hold {
    pub fn new(key: FlowKey, seq: SeqState, c: &SocketCounters) -> Self {
        Hold {
            key,
            snd_una: seq.snd_una,
            local_rcv_nxt: seq.rcv_nxt,
            peer_window: c.snd_wnd,
            peer_wscale: c.snd_wscale.min(14),
            timestamps: c.timestamps,
            local: Seen::default(),
            remote: Seen::default(),
            head: None,
            outstanding: c.unacked > 0,
            last_to_local: None,
        }
    }

    /// The first packet of a hold: the zero-window ACK. Its timestamps are not known yet, and
    /// Linux accepts a window update without them (measured, docs/decisions.md); later answers
    /// carry the timestamps the socket's own packets reveal.
    pub fn start(&mut self, now: Instant) -> Vec<u8> {
        self.last_to_local = Some(now);
        self.to_local(0)
    }

    /// A packet the local socket sent (`Dir::Out`) during the hold: returns the answer.
    /// `packet` is the whole packet, with a complete checksum.
    pub fn on_local(
        &mut self,
        now: Instant,
        seg: &SegmentSeen,
        packet: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        self.observe_local(seg, packet);
        if seg.flags.rst() || !self.local.may_answer(now) {
            return None;
        }
        if self.timestamps && seg.timestamps.is_none() {
            return None; // cannot pass PAWS without its timestamps
        }
        self.last_to_local = Some(now);
        Some(self.to_local(0))
    }

    /// What a packet of the local socket shows: its receive position and timestamps, and its
    /// retransmission of `snd_una` if it is one. Also while resuming, when the packet travels.
    pub fn observe_local(&mut self, seg: &SegmentSeen, packet: impl FnOnce() -> Option<Vec<u8>>) {
        self.local.learn(seg);
        if seg.payload_len > 0 && seg.seq == self.snd_una {
            if let Some(p) = packet() {
                self.head = Some(p);
            }
        }
        if seg.flags.ack() {
            self.local_rcv_nxt = seg.ack;
        }
    }

    /// An ACK for the local socket when none of its packets was answered for [`KEEPALIVE`].
    /// Without a route to the peer (its link is down) the socket's probes fail before any
    /// netfilter hook, so rackd never sees them, yet the kernel counts each towards
    /// `tcp_retries2` and aborts the socket; any acceptable ACK resets that count (and the
    /// timestamp the retransmission timer measures silence from).
    pub fn keepalive(&mut self, now: Instant) -> Option<Vec<u8>> {
        let quiet = self
            .last_to_local
            .is_none_or(|t| now.duration_since(t) >= KEEPALIVE);
        if !quiet {
            return None;
        }
        self.last_to_local = Some(now);
        Some(self.to_local(0))
    }

    /// A packet from the peer (`Dir::In`) during the hold: returns the answer (rackd speaks for
    /// the local socket, which must not see the packet).
    pub fn on_remote(&mut self, now: Instant, seg: &SegmentSeen) -> Option<Vec<u8>> {
        self.remote.learn(seg);
        if seg.flags.rst() || !seg.flags.ack() || !self.remote.may_answer(now) {
            return None;
        }
        self.to_remote(0)
    }

    /// The local socket's retransmission to re-send to the peer, if it has data outstanding,
    /// with the acknowledgement and window the socket shows now: the peer may have sent more
    /// since it was captured, and refuses an ACK too far behind (RFC 5961).
    pub fn head(&self) -> Option<Vec<u8>> {
        let mut head = self.head.clone()?;
        if let Ok(mut p) = tcpseq::TcpIpPacket::new_checked(&mut head[..]) {
            p.set_ack(self.local_rcv_nxt);
            if let Some(w) = self.local.window {
                p.set_window(w);
            }
        }
        Some(head)
    }

    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    /// Whether the socket had data in flight when the hold began: then its window must stay
    /// closed until the peer acknowledges new data, re-sent head or not.
    pub fn outstanding(&self) -> bool {
        self.outstanding
    }

    /// Whether a packet from the peer acknowledges data beyond what was acknowledged when the
    /// hold began: the peer has the socket's retransmission and the socket is back in step.
    pub fn peer_caught_up(&self, seg: &SegmentSeen) -> bool {
        seg.flags.ack() && seg.ack > self.snd_una
    }

    /// Window updates that end the hold: to the local socket (`to_local`: only when it has no
    /// data outstanding, see the module comment) and to the peer if rackd zeroed its window.
    pub fn release(&self, to_local: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if to_local {
            let window = (self.peer_window >> self.peer_wscale).min(u32::from(u16::MAX)) as u16;
            out.push(self.to_local(window));
        }
        // The peer heard zero windows from rackd only if its packets arrived during the hold.
        if let Some(w) = self.remote.window.and(self.local.window) {
            out.extend(self.to_remote(w));
        }
        out
    }

    /// A reset to the local socket "from the peer", for when the peer never came back.
    pub fn reset_local(&self) -> Vec<u8> {
        build(Segment::rst(
            self.key.remote,
            self.key.local,
            self.local_rcv_nxt,
        ))
    }

    /// An ACK to the local socket "from the peer".
    fn to_local(&self, window: u16) -> Vec<u8> {
        let seg = Segment::new(
            self.key.remote,
            self.key.local,
            self.local_rcv_nxt,
            self.snd_una,
            Flags::ACK,
        )
        .with_window(window);
        let ts = self.local.ts_recent.map(|recent| TcpOption::Timestamps {
            tsval: recent,
            tsecr: self.local.tsval.unwrap_or(0),
        });
        match ts {
            Some(t) if self.timestamps => build(seg.with_options(&[t])),
            _ => build(seg),
        }
    }

    /// An ACK to the peer "from the local socket"; needs the peer's position from its packets.
    fn to_remote(&self, window: u16) -> Option<Vec<u8>> {
        let seq = self.remote.rcv_nxt?;
        let seg = Segment::new(
            self.key.local,
            self.key.remote,
            seq,
            self.local_rcv_nxt,
            Flags::ACK,
        )
        .with_window(window);
        if !self.timestamps {
            return Some(build(seg));
        }
        let recent = self.remote.ts_recent?;
        // The local clock as the peer last saw it, never below what the peer holds.
        let tsval = match self.local.tsval {
            Some(v) if (v.wrapping_sub(recent) as i32) > 0 => v,
            _ => recent,
        };
        let ts = [TcpOption::Timestamps {
            tsval,
            tsecr: self.remote.tsval.unwrap_or(0),
        }];
        Some(build(seg.with_options(&ts)))
    }
}

fn build(seg: Segment<'_>) -> Vec<u8> {
    // Only fails for options over 40 bytes, which these never have.
    seg.to_vec().unwrap_or_default()
}
