//! In-band EDP towards a user-level peer (`edp::net`, e.g. `edp-server`) on a host without rackd,
//! for one connection opened by an unmodified local client.
//!
//! Such a server expects the client to open its main connection with `ANNOUNCEMENT ‖ Init` and
//! answers with an `InitAck` before the application's bytes. rackd speaks those bytes in the
//! local socket's place, before the socket sees the connection established, and arranges the
//! sequence numbers so that afterwards nothing needs translating:
//!
//! ```text
//! local socket          rackd                                  server
//!  SYN isn_c ──▶ dropped; SYN isn_c−D ──────────────────────▶   (D = 1024 + Init frame)
//!                 dropped ◀──────────────────────── SYN-ACK isn_s, ack isn_c−D+1
//!                 ACK+data isn_c−D+1.. (ANNOUNCEMENT ‖ Init) ──▶
//!                 reassembled, dropped ◀───────────── InitAck (L bytes) [‖ data]
//!  ◀── SYN-ACK isn_s+L, ack isn_c+1 (the saved one, rewritten) [‖ the kept data]
//!  ACK isn_c+1, ack isn_s+L+1 ───────────────────────────────▶  acknowledges the InitAck
//! ```
//!
//! The socket's send sequence starts right after the Init and its receive sequence right after
//! the InitAck: both line up with the wire, so the flow leaves the queue at once.
//!
//! [`InBand`] is sans-IO: the engine feeds it the packets it saved or saw with the current time
//! and injects what it returns.

use super::reassembly::Reassembly;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use edp::edp::ANNOUNCEMENT;
use edp::init::Initiator;
use edp::message::{InitAck, Message};
use tcpseq::{Flags, Segment, SeqNum, TcpIpPacket, TcpOption};

/// First retransmission interval of the announcement and Init; doubles each time.
const RETRANSMIT_FIRST: Duration = Duration::from_millis(200);
/// From the rewritten SYN to the InitAck: beyond this both ends are reset.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);
/// The daemon reports every probe within its own deadlines (connect, then the announcement);
/// this only covers a report that never comes.
const PROBE_LIMIT: Duration = Duration::from_secs(10);
/// MSS assumed when the SYN-ACK has none (RFC 9293).
const DEFAULT_MSS: u16 = 536;
/// Bytes of the timestamps option as sent (two NOPs, then the option).
const TIMESTAMPS_LEN: u16 = 12;
/// Limits on what a misbehaving server can make rackd hold before the InitAck.
const MAX_BUFFERED: usize = 16 * 1024;
const MAX_KEPT: usize = 64;

/// Why the in-band handshake failed (then both ends are reset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InBandError {
    #[error("no InitAck within {0:?}")]
    Timeout(Duration),
    #[error("the server reset the connection")]
    Reset,
    #[error("the server closed the connection before its InitAck")]
    Closed,
    #[error("the SYN-ACK acknowledges {got}, expected {expected}")]
    BadSynAck { expected: SeqNum, got: SeqNum },
    #[error("the server sent {0} instead of an InitAck")]
    Unexpected(String),
    #[error("the server's answer is not a valid frame: {0}")]
    Frame(String),
    #[error("the server sent more than {MAX_BUFFERED} bytes without a complete InitAck")]
    TooMuch,
    #[error("the InitAck does not verify: {0}")]
    BadInitAck(String),
}

/// The parts of the local socket's SYN the handshake needs.
#[derive(Debug, Clone, Copy)]
struct SynFacts {
    src: SocketAddr,
    dst: SocketAddr,
    isn: SeqNum,
    window: u16,
    mss: Option<u16>,
    wscale: Option<u8>,
    tsval: Option<u32>,
}

/// The parts of the server's SYN-ACK the handshake needs.
#[derive(Debug, Clone, Copy)]
struct SynAckFacts {
    isn: SeqNum,
    mss: u16,
    wscale: bool,
    tsval: Option<u32>,
}

#[derive(Debug)]
enum Phase {
    /// The daemon probes the server; the SYN waits.
    Probing { until: Instant },
    /// The rewritten SYN is out.
    AwaitSynAck,
    /// Announcement and Init sent (and re-sent); the InitAck is being reassembled.
    Sending,
    /// The InitAck arrived: the local socket may have its SYN-ACK.
    Done,
}

/// One connection's in-band handshake.
#[derive(Debug)]
pub struct InBand {
    phase: Phase,
    syn: Vec<u8>,
    facts: SynFacts,
    /// `ANNOUNCEMENT ‖ Init`, starting at `isn_c − D + 1` on the wire.
    out: Vec<u8>,
    initiator: Option<Box<Initiator>>,
    syn_ack: Option<(Vec<u8>, SynAckFacts)>,
    /// Bytes of `out` the server acknowledged.
    acked: usize,
    /// The server's stream from `isn_s + 1`, in order, and pieces that arrived early.
    rcv: Reassembly,
    /// Length of the InitAck frame once complete.
    init_ack_len: Option<usize>,
    /// Copies of the server's packets with payload or FIN: those reaching past the InitAck are
    /// delivered to the socket after its SYN-ACK.
    kept: Vec<Vec<u8>>,
    deadline: Instant,
    next_send: Option<Instant>,
    interval: Duration,
}

impl InBand {
    /// Starts with the local socket's SYN (a complete copy); `None` if it cannot be read.
    pub fn new(now: Instant, syn: Vec<u8>) -> Option<Self> {
        let facts = syn_facts(&syn)?;
        Some(InBand {
            phase: Phase::Probing {
                until: now + PROBE_LIMIT,
            },
            syn,
            facts,
            out: Vec::new(),
            initiator: None,
            syn_ack: None,
            acked: 0,
            rcv: Reassembly::default(),
            init_ack_len: None,
            kept: Vec::new(),
            deadline: now + PROBE_LIMIT,
            next_send: None,
            interval: RETRANSMIT_FIRST,
        })
    }

    pub fn is_probing(&self) -> bool {
        matches!(self.phase, Phase::Probing { .. })
    }

    /// The SYN as the local socket sent it (for the plain path after a negative probe).
    pub fn into_syn(self) -> Vec<u8> {
        self.syn
    }

    /// Bytes rackd sends before the socket's first byte: `1024 + Init frame`.
    fn offset(&self) -> u32 {
        self.out.len() as u32
    }

    /// Where `out` starts on the wire: one past the rewritten SYN's sequence number.
    fn wire_isn(&self) -> SeqNum {
        self.facts.isn - self.offset()
    }

    /// The probe found an EDP server: the SYN to inject, moved back by `D` bytes.
    pub fn start(&mut self, now: Instant, init_frame: &[u8], initiator: Initiator) -> Vec<u8> {
        self.out = ANNOUNCEMENT.to_vec();
        self.out.extend_from_slice(init_frame);
        self.initiator = Some(Box::new(initiator));
        self.phase = Phase::AwaitSynAck;
        self.deadline = now + HANDSHAKE_LIMIT;
        self.rewritten_syn()
    }

    fn rewritten_syn(&self) -> Vec<u8> {
        let mut syn = self.syn.clone();
        if let Ok(mut p) = TcpIpPacket::new_checked(&mut syn[..]) {
            p.set_seq(self.wire_isn());
        }
        syn
    }

    /// The socket retransmitted its SYN: dropped; while the server has not answered, rackd's
    /// own SYN goes again in its place.
    pub fn on_local_syn(&self) -> Option<Vec<u8>> {
        matches!(self.phase, Phase::AwaitSynAck).then(|| self.rewritten_syn())
    }

    /// The server's SYN-ACK (always dropped): the announcement and Init to send.
    pub fn on_syn_ack(
        &mut self,
        now: Instant,
        packet: Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, InBandError> {
        match self.phase {
            Phase::AwaitSynAck => {}
            // Our first segment was lost or is late: the server repeats its SYN-ACK.
            Phase::Sending => return Ok(self.unacked_segments()),
            Phase::Probing { .. } | Phase::Done => return Ok(Vec::new()),
        }
        let Some(facts) = syn_ack_facts(&packet) else {
            return Ok(Vec::new());
        };
        let view = TcpIpPacket::new_checked(&packet[..]).map_err(|_| InBandError::Reset)?;
        let expected = self.wire_isn() + 1;
        if view.tcp().ack() != expected {
            return Err(InBandError::BadSynAck {
                expected,
                got: view.tcp().ack(),
            });
        }
        self.syn_ack = Some((packet, facts));
        self.phase = Phase::Sending;
        self.interval = RETRANSMIT_FIRST;
        self.next_send = Some(now + self.interval);
        Ok(self.unacked_segments())
    }

    /// The segments carrying `out` from the first byte the server has not acknowledged.
    fn unacked_segments(&self) -> Vec<Vec<u8>> {
        let Some((_, sa)) = &self.syn_ack else {
            return Vec::new();
        };
        let f = &self.facts;
        let timestamps = match (f.tsval, sa.tsval) {
            (Some(tsval), Some(tsecr)) => Some(TcpOption::Timestamps { tsval, tsecr }),
            _ => None,
        };
        let options: Vec<TcpOption<'_>> = timestamps
            .map(|ts| vec![TcpOption::Nop, TcpOption::Nop, ts])
            .unwrap_or_default();
        let mss = sa.mss.min(f.mss.unwrap_or(u16::MAX));
        let room = usize::from(mss.saturating_sub(if timestamps.is_some() {
            TIMESTAMPS_LEN
        } else {
            0
        }))
        .max(1);
        let window = match (f.wscale, sa.wscale) {
            (Some(s), true) => f.window >> s.min(14),
            _ => f.window,
        };
        let mut segments = Vec::new();
        let mut at = self.acked;
        while at < self.out.len() {
            let end = (at + room).min(self.out.len());
            let mut flags = Flags::ACK;
            if end == self.out.len() {
                flags = flags | Flags::PSH;
            }
            let seg = Segment::new(
                f.src,
                f.dst,
                self.wire_isn() + 1 + at as u32,
                sa.isn + 1,
                flags,
            )
            .with_window(window)
            .with_options(&options)
            .with_payload(&self.out[at..end]);
            if let Ok(p) = seg.to_vec() {
                segments.push(p);
            }
            at = end;
        }
        segments
    }

    /// A packet from the server other than a SYN-ACK (always dropped). `Ok(Some(ack))` once the
    /// InitAck is complete: the engine checks it, then asks for [`InBand::completion`].
    pub fn on_remote(&mut self, packet: Vec<u8>) -> Result<Option<InitAck>, InBandError> {
        if !matches!(self.phase, Phase::Sending) {
            return Ok(None);
        }
        let Some((_, sa)) = self.syn_ack else {
            return Ok(None);
        };
        let Ok(view) = TcpIpPacket::new_checked(&packet[..]) else {
            return Ok(None);
        };
        let tcp = view.tcp();
        let flags = tcp.flags();
        if flags.rst() {
            return Err(InBandError::Reset);
        }
        if flags.ack() {
            let acked = tcp.ack() - (self.wire_isn() + 1);
            if let Ok(n) = usize::try_from(acked) {
                if n <= self.out.len() && n > self.acked {
                    self.acked = n;
                }
            }
        }
        let payload = view.tcp_payload();
        let fin = flags.fin();
        if payload.is_empty() && !fin {
            return Ok(None);
        }
        // Offset of the payload in the server's stream (negative: a retransmission from
        // before the stream, which cannot happen here; ignored).
        let offset = tcp.seq() - (sa.isn + 1);
        let Ok(offset) = usize::try_from(offset) else {
            return Ok(None);
        };
        if offset > MAX_BUFFERED || offset + payload.len() > MAX_BUFFERED {
            return Err(InBandError::TooMuch);
        }
        self.rcv.place(offset, payload);
        let fin_in_order = fin && offset + payload.len() == self.rcv.len();
        if self.kept.len() < MAX_KEPT {
            self.kept.push(packet.clone());
        }
        match Message::decode(self.rcv.bytes()) {
            Ok(Some((Message::InitAck(ack), used))) => {
                self.init_ack_len = Some(used);
                self.phase = Phase::Done;
                self.next_send = None;
                Ok(Some(ack))
            }
            Ok(Some((other, _))) => Err(InBandError::Unexpected(message_name(&other))),
            Ok(None) if fin_in_order => Err(InBandError::Closed),
            Ok(None) => Ok(None),
            Err(e) => Err(InBandError::Frame(e.to_string())),
        }
    }

    /// The initiator, for checking the InitAck (once).
    pub fn take_initiator(&mut self) -> Option<Initiator> {
        self.initiator.take().map(|b| *b)
    }

    /// After a valid InitAck: a SYN for local conntrack only (see [`InBand::conntrack_syn`]),
    /// then the saved SYN-ACK for the local socket, moved so that its
    /// receive sequence starts after the InitAck and its send sequence after the Init, then the
    /// server's packets that reach past the InitAck.
    pub fn completion(&self) -> Vec<Vec<u8>> {
        let (Some((syn_ack, sa)), Some(len)) = (&self.syn_ack, self.init_ack_len) else {
            return Vec::new();
        };
        let next = self.facts.isn + 1;
        let mut out = Vec::with_capacity(2 + self.kept.len());
        out.push(self.conntrack_syn());
        let mut first = syn_ack.clone();
        if let Ok(mut p) = TcpIpPacket::new_checked(&mut first[..]) {
            p.set_seq(sa.isn + len as u32);
            p.set_ack(next);
        }
        out.push(first);
        let after = sa.isn + 1 + len as u32;
        let mut later: Vec<(SeqNum, Vec<u8>)> = Vec::new();
        for packet in &self.kept {
            let mut copy = packet.clone();
            let Ok(mut p) = TcpIpPacket::new_checked(&mut copy[..]) else {
                continue;
            };
            let (seq, flags) = (p.tcp().seq(), p.tcp().flags());
            let end = seq + p.tcp_payload().len() as u32 + u32::from(flags.fin());
            if end <= after {
                continue;
            }
            // An acknowledgement of the announcement is one of bytes the socket never sent.
            if flags.ack() && p.tcp().ack() < next {
                p.set_ack(next);
            }
            later.push((seq, copy));
        }
        later.sort_by_key(|(seq, _)| *seq);
        out.extend(later.into_iter().map(|(_, p)| p));
        out
    }

    /// The socket's own SYN with a broken TCP checksum, sent just before its SYN-ACK: local
    /// conntrack (which checks checksums only of arriving packets) takes it as a new SYN of the
    /// connection and moves its idea of the socket's sequence to the socket's own, so that the
    /// SYN-ACK and everything after it is in window (with `ct state invalid drop` the transfer
    /// stalls otherwise); the server, and any checksum-checking box on the way, drops it.
    fn conntrack_syn(&self) -> Vec<u8> {
        let mut syn = self.syn.clone();
        if let Ok(p) = TcpIpPacket::new_checked(&syn[..]) {
            let at = p.tcp_offset() + 16;
            syn[at] ^= 0xff;
        }
        syn
    }

    /// The server's ISN as the local socket sees it (after [`InBand::completion`]'s SYN-ACK).
    pub fn socket_isn_peer(&self) -> Option<SeqNum> {
        let (_, sa) = self.syn_ack.as_ref()?;
        Some(sa.isn + self.init_ack_len? as u32)
    }

    /// Resets for both ends after a failure: the server's (once it answered) at the next byte
    /// it expects, and the local socket's, which is still in SYN-SENT (connection refused).
    pub fn resets(&self, server_reset: bool) -> Vec<Vec<u8>> {
        let f = &self.facts;
        let mut out = Vec::new();
        if self.syn_ack.is_some() && !server_reset {
            let seq = self.wire_isn() + 1 + self.acked as u32;
            out.extend(Segment::rst(f.src, f.dst, seq).to_vec());
        }
        out.extend(Segment::rst_ack(f.dst, f.src, SeqNum(0), f.isn + 1).to_vec());
        out
    }

    /// When [`InBand::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Instant {
        self.next_send
            .map_or(self.deadline, |t| t.min(self.deadline))
    }

    /// `Ok(packets)` to re-send; `Err(Timeout)` past the limit. A probe without a report by its
    /// limit is `Ok` and [`InBand::probe_overdue`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<Vec<Vec<u8>>, InBandError> {
        match self.phase {
            Phase::Probing { .. } | Phase::Done => return Ok(Vec::new()),
            Phase::AwaitSynAck | Phase::Sending => {}
        }
        if self.deadline <= now {
            return Err(InBandError::Timeout(HANDSHAKE_LIMIT));
        }
        match self.next_send {
            Some(t) if t <= now => {
                self.interval *= 2;
                self.next_send = Some(now + self.interval);
                Ok(self.unacked_segments())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The probe's report is overdue (treated as negative).
    pub fn probe_overdue(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Probing { until } if until <= now)
    }
}

/// A destination rackd speaks in-band EDP to (configuration `peer.edp_servers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdpServer {
    /// One address and port.
    Addr(SocketAddr),
    /// Any port of any address in the prefix.
    Prefix { addr: IpAddr, len: u8 },
}

impl EdpServer {
    pub fn matches(&self, to: SocketAddr) -> bool {
        match *self {
            EdpServer::Addr(a) => a == to,
            EdpServer::Prefix { addr, len } => in_prefix(to.ip(), addr, len),
        }
    }
}

impl std::str::FromStr for EdpServer {
    type Err = &'static str;
    /// `ADDR:PORT` (`[V6]:PORT`), or a prefix `ADDR/LEN` for any port.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHY: &str = "expected ADDRESS:PORT, [IPV6]:PORT or a prefix ADDRESS/LENGTH";
        if let Some((addr, len)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| WHY)?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = len.parse::<u8>().ok().filter(|l| *l <= max).ok_or(WHY)?;
            return Ok(EdpServer::Prefix { addr, len });
        }
        match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(EdpServer::Addr(a)),
            _ => Err(WHY),
        }
    }
}

fn in_prefix(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn message_name(m: &Message) -> String {
    let debug = format!("{m:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("a message")
        .to_owned()
}

fn syn_facts(packet: &[u8]) -> Option<SynFacts> {
    let p = TcpIpPacket::new_checked(packet).ok()?;
    let (mut mss, mut wscale, mut tsval) = (None, None, None);
    for o in p.tcp_options().map_while(Result::ok) {
        match o {
            TcpOption::Mss(m) => mss = Some(m),
            TcpOption::WindowScale(s) => wscale = Some(s),
            TcpOption::Timestamps { tsval: v, .. } => tsval = Some(v),
            _ => {}
        }
    }
    Some(SynFacts {
        src: p.src(),
        dst: p.dst(),
        isn: p.tcp().seq(),
        window: p.tcp().window(),
        mss,
        wscale,
        tsval,
    })
}

fn syn_ack_facts(packet: &[u8]) -> Option<SynAckFacts> {
    let p = TcpIpPacket::new_checked(packet).ok()?;
    let (mut mss, mut wscale, mut tsval) = (DEFAULT_MSS, false, None);
    for o in p.tcp_options().map_while(Result::ok) {
        match o {
            TcpOption::Mss(m) => mss = m,
            TcpOption::WindowScale(_) => wscale = true,
            TcpOption::Timestamps { tsval: v, .. } => tsval = Some(v),
            _ => {}
        }
    }
    Some(SynAckFacts {
        isn: p.tcp().seq(),
        mss,
        wscale,
        tsval,
    })
}

#[cfg(test)]
mod tests;
