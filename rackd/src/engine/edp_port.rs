//! In-band EDP for an unmodified server program on this host, answering user-level EDP clients
//! (`edp::net`, e.g. `edp-client`) on hosts without rackd: one accepted connection to a port
//! listed in `peer.edp_ports`.
//!
//! The handshake reaches the socket unchanged. Until the client's first byte or FIN the flow
//! is queued both ways and the client's stream is read, not delivered; the edp crate's own
//! server machine ([`ServerConn`]) decides what the client is:
//!
//! ```text
//! client                         rackd                                  socket (program)
//!  FIN (a probe) ─────────▶ ANNOUNCEMENT to the client from isn_s+1; FIN ──▶ (EOF at once)
//!                           then server → client seq + 1024, acks − 1024
//!  ANNOUNCEMENT ‖ Init ──▶ kept, acknowledged by rackd; InitAck (L bytes) to the client
//!                           then client → server seq − D, server → client seq + L
//!  anything else ────────▶ the kept packets delivered untouched; plain TCP, out of the queue
//!  nothing for 1 s ──────▶ plain TCP, out of the queue
//! ```
//!
//! Offsets are `tcpseq::SeqAdjust` maps, applied to every later packet (sequence numbers,
//! acknowledgements, SACK blocks): such a flow stays in user space for its whole life. What
//! the socket sends before the offsets exist is kept and sent once they do (or, for a plain
//! client, untouched).
//!
//! [`EdpPort`] is sans-IO: the engine feeds it packet copies with the current time and carries
//! out the returned [`Output`].

use super::reassembly::Reassembly;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edp::crypto::Entropy;
use edp::edp::{ServerAction, ServerConfig, ServerConn, ServerEvent, ServerOutcome, ANNOUNCEMENT};
use edp::identity::PeerTrust;
use edp::init::{LocalParams, Session};
use tcpseq::{Flags, Segment, SeqAdjust, SeqNum, TcpIpPacket, TcpOption};

/// How long a connection may stay silent before it is plain TCP. An EDP client sends its
/// announcement (or probe FIN) right after the handshake, one round trip in; clients of
/// server-speaks-first protocols send nothing and wait for the banner, which is held meanwhile,
/// so this is also the delay such a banner takes. 1 s leaves room for a slow path while
/// keeping that delay below the socket's own first retransmission backoff (1 s + 200 ms).
pub const SILENT_LIMIT: Duration = Duration::from_secs(1);
/// From the announcement to a complete `Init`.
const INIT_LIMIT: Duration = Duration::from_secs(5);
/// First retransmission interval of the bytes rackd inserts; doubles up to the maximum.
const RETRANSMIT_FIRST: Duration = Duration::from_millis(200);
const RETRANSMIT_MAX: Duration = Duration::from_secs(3);
/// After both FINs (or the socket's end), translation goes on this long for the last
/// acknowledgements and retransmitted FINs, then the flow is removed.
const LINGER: Duration = Duration::from_secs(2);
/// MSS assumed when the SYN has none (RFC 9293).
const DEFAULT_MSS: u16 = 536;
/// Bytes of the timestamps option as sent (two NOPs, then the option).
const TIMESTAMPS_LEN: u16 = 12;
/// Limits on what a client can make rackd keep while classifying: the announcement and an
/// `Init` fit many times over.
const MAX_STREAM: usize = 16 * 1024;
const MAX_KEPT: usize = 64;

/// What to do with the packet that was fed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Send this rewritten copy instead.
    Rewrite(Vec<u8>),
}

/// What the connection turned out to be, when it is decided.
#[derive(Debug)]
pub enum Event {
    /// Not an EDP client: plain TCP from now on, nothing more to see.
    Plain,
    /// A probe, answered with the announcement.
    Probed,
    /// An EDP client initialised; translation goes on.
    Enhanced(Box<Session>),
    /// The client announced itself but its `Init` was bad or missing: both ends were reset.
    Failed(String),
    /// The connection is over (reset, or closed and lingered): remove the flow.
    Ended,
}

/// The result of feeding one packet or timeout.
#[derive(Debug)]
pub struct Output {
    pub verdict: Verdict,
    /// Packets to inject, in order (towards either end).
    pub inject: Vec<Vec<u8>>,
    pub event: Option<Event>,
}

impl Output {
    fn verdict(verdict: Verdict) -> Self {
        Output {
            verdict,
            inject: Vec::new(),
            event: None,
        }
    }
}

/// The socket's SYN-ACK, as far as rackd speaks in its place.
#[derive(Debug, Clone, Copy)]
struct SynAck {
    isn: SeqNum,
    mss: u16,
    /// The window the socket offers, unscaled.
    window: u16,
    timestamps: bool,
}

/// Offsets in place for the rest of the connection.
#[derive(Debug)]
struct Translation {
    /// Client wire → socket (`−D` after an `Init`, none after a probe).
    c2s: SeqAdjust,
    /// Socket → client wire (`+1024` or `+L` from `isn_s + 1` on).
    s2c: SeqAdjust,
    /// The bytes rackd put in front of the socket's stream; `removed` client bytes were taken.
    inserted: Vec<u8>,
    removed: u32,
    /// The client acknowledged all of `inserted`.
    acked: bool,
    next_send: Option<Instant>,
    interval: Duration,
    client_fin: bool,
    server_fin: bool,
    /// When the flow is removed (after both FINs or the socket's end).
    until: Option<Instant>,
}

#[derive(Debug)]
enum Phase {
    Classifying,
    Translating(Box<Translation>),
    Done,
}

/// One accepted connection to an EDP port.
#[derive(Debug)]
pub struct EdpPort {
    /// The server socket's address and the client's.
    server: SocketAddr,
    client: SocketAddr,
    isn_c: SeqNum,
    client_mss: u16,
    client_tsval: Option<u32>,
    syn_ack: Option<SynAck>,
    server_tsval: Option<u32>,
    conn: ServerConn,
    phase: Phase,
    /// The client's stream from `isn_c + 1`, in order, and pieces that arrived early.
    rcv: Reassembly,
    /// Offset of the client's FIN in its stream.
    fin: Option<usize>,
    /// Bytes (and the FIN) given to `conn` so far.
    fed: usize,
    eof_fed: bool,
    /// Copies of packets not delivered while classifying: the client's with payload or FIN, the
    /// socket's with payload or FIN.
    kept_in: Vec<Vec<u8>>,
    kept_out: Vec<Vec<u8>>,
}

impl EdpPort {
    /// Starts with the client's SYN (a complete copy); `None` if it cannot be read.
    pub fn new(now: Instant, syn: &[u8], params: &LocalParams) -> Option<Self> {
        let p = TcpIpPacket::new_checked(syn).ok()?;
        let (mut mss, mut tsval) = (DEFAULT_MSS, None);
        for o in p.tcp_options().map_while(Result::ok) {
            match o {
                TcpOption::Mss(m) => mss = m,
                TcpOption::Timestamps { tsval: v, .. } => tsval = Some(v),
                _ => {}
            }
        }
        let config = ServerConfig {
            classify_timeout: SILENT_LIMIT,
            init_timeout: INIT_LIMIT,
            params: params.clone(),
            trust: Arc::new(Mutex::new(PeerTrust::Opportunistic)),
        };
        Some(EdpPort {
            server: p.dst(),
            client: p.src(),
            isn_c: p.tcp().seq(),
            client_mss: mss,
            client_tsval: tsval,
            syn_ack: None,
            server_tsval: None,
            conn: ServerConn::new(now, config, p.src().ip().to_string()),
            phase: Phase::Classifying,
            rcv: Reassembly::default(),
            fin: None,
            fed: 0,
            eof_fed: false,
            kept_in: Vec::new(),
            kept_out: Vec::new(),
        })
    }

    /// The client's ISN (a retransmitted SYN carries the same).
    pub fn client_isn(&self) -> SeqNum {
        self.isn_c
    }

    pub fn is_classifying(&self) -> bool {
        matches!(self.phase, Phase::Classifying)
    }

    /// The socket's SYN-ACK (it travels unchanged).
    pub fn on_syn_ack(&mut self, packet: &[u8]) {
        let Ok(p) = TcpIpPacket::new_checked(packet) else {
            return;
        };
        let (mut mss, mut shift, mut tsval) = (DEFAULT_MSS, 0, None);
        for o in p.tcp_options().map_while(Result::ok) {
            match o {
                TcpOption::Mss(m) => mss = m,
                TcpOption::WindowScale(s) => shift = s.min(14),
                TcpOption::Timestamps { tsval: v, .. } => tsval = Some(v),
                _ => {}
            }
        }
        self.server_tsval = tsval.or(self.server_tsval);
        self.syn_ack = Some(SynAck {
            isn: p.tcp().seq(),
            mss,
            window: p.tcp().window() >> shift,
            timestamps: tsval.is_some() && self.client_tsval.is_some(),
        });
    }

    /// A packet from the client (not a SYN).
    pub fn on_client(&mut self, now: Instant, packet: Vec<u8>, rng: &mut dyn Entropy) -> Output {
        let Ok(p) = TcpIpPacket::new_checked(&packet[..]) else {
            return Output::verdict(Verdict::Accept);
        };
        if let Some(v) = tsval(&p) {
            self.client_tsval = Some(v);
        }
        match self.phase {
            Phase::Classifying => self.classify(now, packet, rng),
            Phase::Translating(_) => self.translate_client(now, packet),
            Phase::Done => Output::verdict(Verdict::Accept),
        }
    }

    /// A packet from the socket (not a SYN-ACK).
    pub fn on_server(&mut self, now: Instant, packet: Vec<u8>) -> Output {
        let Ok(p) = TcpIpPacket::new_checked(&packet[..]) else {
            return Output::verdict(Verdict::Accept);
        };
        if let Some(v) = tsval(&p) {
            self.server_tsval = Some(v);
        }
        let flags = p.tcp().flags();
        let carries = !p.tcp_payload().is_empty() || flags.fin();
        let window = p.tcp().window();
        match &mut self.phase {
            Phase::Classifying => {
                if let Some(sa) = &mut self.syn_ack {
                    sa.window = window;
                }
                if flags.rst() {
                    self.phase = Phase::Done;
                    return ended(Verdict::Accept, Vec::new());
                }
                if carries && self.kept_out.len() < MAX_KEPT {
                    // Sent before the client showed what it is: kept until it has.
                    self.kept_out.push(packet);
                }
                // Beyond the limit the socket retransmits it.
                Output::verdict(if carries {
                    Verdict::Drop
                } else {
                    Verdict::Accept
                })
            }
            Phase::Translating(t) => {
                if let Some(sa) = &mut self.syn_ack {
                    sa.window = window;
                }
                if flags.fin() {
                    t.server_fin = true;
                    if t.client_fin {
                        t.until.get_or_insert(now + LINGER);
                    }
                }
                let rewritten = rewrite(packet, &t.s2c, &t.c2s);
                if flags.rst() {
                    self.phase = Phase::Done;
                    return ended(Verdict::Rewrite(rewritten), Vec::new());
                }
                Output::verdict(Verdict::Rewrite(rewritten))
            }
            Phase::Done => Output::verdict(Verdict::Accept),
        }
    }

    fn classify(&mut self, now: Instant, packet: Vec<u8>, rng: &mut dyn Entropy) -> Output {
        let Ok(p) = TcpIpPacket::new_checked(&packet[..]) else {
            return Output::verdict(Verdict::Accept);
        };
        let tcp = p.tcp();
        let flags = tcp.flags();
        if flags.rst() {
            self.phase = Phase::Done;
            return ended(Verdict::Accept, Vec::new());
        }
        let len = p.tcp_payload().len();
        if len == 0 && !flags.fin() {
            return Output::verdict(Verdict::Accept); // the handshake's ACK, window updates
        }
        let Ok(offset) = usize::try_from(tcp.seq() - (self.isn_c + 1)) else {
            return Output::verdict(Verdict::Drop); // before the stream: nothing to deliver
        };
        if offset + len > MAX_STREAM || self.kept_in.len() >= MAX_KEPT {
            // Far more than an announcement and an Init: not EDP.
            self.kept_in.push(packet);
            return self.plain();
        }
        let payload = p.tcp_payload().to_vec();
        if flags.fin() {
            self.fin = Some(offset + len);
        }
        self.rcv.place(offset, &payload);
        self.kept_in.push(packet);
        if self.rcv.len() > self.fed {
            let new = self.rcv.bytes()[self.fed..].to_vec();
            self.fed = self.rcv.len();
            self.conn.handle(now, ServerEvent::Data(&new), rng);
        }
        if self.fin == Some(self.rcv.len()) && !self.eof_fed && !self.conn.is_done() {
            self.eof_fed = true;
            self.conn.handle(now, ServerEvent::Eof, rng);
        }
        self.decided(now)
    }

    /// Acts on the server machine's outcome, if it has one.
    fn decided(&mut self, now: Instant) -> Output {
        let Some(outcome) = self.conn.outcome() else {
            return Output::verdict(Verdict::Drop);
        };
        match outcome {
            ServerOutcome::Plain { .. } => self.plain(),
            ServerOutcome::Failed(why) => self.fail(why),
            ServerOutcome::ProbeAnswered => {
                // The FIN is this packet: it goes on to the socket (the program sees its EOF),
                // after the announcement.
                self.kept_in.clear();
                let mut out =
                    self.translate_from(now, ANNOUNCEMENT.to_vec(), 0, Some(Event::Probed));
                if let Phase::Translating(t) = &mut self.phase {
                    t.client_fin = true;
                }
                out.verdict = Verdict::Accept;
                out
            }
            ServerOutcome::Enhanced { session, leftover } => {
                let init_ack = self
                    .conn
                    .poll_action()
                    .and_then(|a| match a {
                        ServerAction::Send(bytes) => Some(bytes),
                        ServerAction::Close => None,
                    })
                    .unwrap_or_default();
                let removed = (self.fed - leftover.len()) as u32;
                let mut out = self.translate_from(
                    now,
                    init_ack,
                    removed,
                    Some(Event::Enhanced(Box::new(session))),
                );
                out.verdict = Verdict::Drop;
                out
            }
        }
    }

    /// Translation from now on: `inserted` goes to the client in the socket's place, the first
    /// `removed` client bytes never reach the socket. What was kept and reaches past them
    /// follows, translated.
    fn translate_from(
        &mut self,
        now: Instant,
        inserted: Vec<u8>,
        removed: u32,
        event: Option<Event>,
    ) -> Output {
        let Some(sa) = self.syn_ack else {
            return self.plain(); // cannot happen: data comes after the SYN-ACK
        };
        let s2c = SeqAdjust {
            correction_pos: sa.isn + 1,
            before: 0,
            after: inserted.len() as i32,
        };
        let c2s = SeqAdjust::constant((removed as i32).wrapping_neg());
        let t = Translation {
            c2s,
            s2c,
            inserted,
            removed,
            acked: false,
            next_send: Some(now + RETRANSMIT_FIRST),
            interval: RETRANSMIT_FIRST,
            client_fin: false,
            server_fin: false,
            until: None,
        };
        let past = self.isn_c + 1 + removed;
        let kept_in = std::mem::take(&mut self.kept_in);
        let kept_out = std::mem::take(&mut self.kept_out);
        let mut inject = Vec::new();
        for p in kept_in {
            if segment_end(&p).is_some_and(|end| end > past) {
                inject.push(rewrite(p, &t.c2s, &t.s2c));
            }
        }
        for p in kept_out {
            inject.push(rewrite(p, &t.s2c, &t.c2s));
        }
        self.phase = Phase::Translating(Box::new(t));
        let mut out = self.inserted_segments();
        out.append(&mut inject);
        Output {
            verdict: Verdict::Drop,
            inject: out,
            event,
        }
    }

    /// Not EDP: everything kept is delivered untouched and the flow leaves the queue.
    fn plain(&mut self) -> Output {
        self.phase = Phase::Done;
        let mut inject = std::mem::take(&mut self.kept_in);
        inject.append(&mut self.kept_out);
        Output {
            verdict: Verdict::Drop,
            inject,
            event: Some(Event::Plain),
        }
    }

    /// A bad or missing `Init`: both ends are reset; the program never saw a byte.
    fn fail(&mut self, why: String) -> Output {
        self.phase = Phase::Done;
        let mut inject = Vec::new();
        if let Some(sa) = self.syn_ack {
            let ack = self.isn_c + 1 + self.rcv.len() as u32;
            inject.extend(Segment::rst_ack(self.server, self.client, sa.isn + 1, ack).to_vec());
        }
        inject.extend(Segment::rst(self.client, self.server, self.isn_c + 1).to_vec());
        Output {
            verdict: Verdict::Drop,
            inject,
            event: Some(Event::Failed(why)),
        }
    }

    fn translate_client(&mut self, now: Instant, packet: Vec<u8>) -> Output {
        let Some(sa) = self.syn_ack else {
            return Output::verdict(Verdict::Accept);
        };
        let Ok(p) = TcpIpPacket::new_checked(&packet[..]) else {
            return Output::verdict(Verdict::Accept);
        };
        let (flags, ack) = (p.tcp().flags(), p.tcp().ack());
        let carries = !p.tcp_payload().is_empty() || flags.fin();
        let end = segment_end(&packet);
        let isn_c = self.isn_c;
        let Phase::Translating(t) = &mut self.phase else {
            return Output::verdict(Verdict::Accept);
        };
        if flags.ack() && ack >= sa.isn + 1 + t.inserted.len() as u32 {
            t.acked = true;
            t.next_send = None;
        }
        if carries && t.removed > 0 && end.is_some_and(|e| e <= isn_c + 1 + t.removed) {
            // The announcement or Init again: our answer was lost.
            let inject = if t.acked {
                self.ack_to_client()
            } else {
                self.inserted_segments()
            };
            return Output {
                verdict: Verdict::Drop,
                inject,
                event: None,
            };
        }
        if flags.fin() {
            t.client_fin = true;
            if t.server_fin {
                t.until.get_or_insert(now + LINGER);
            }
        }
        let rewritten = rewrite(packet, &t.c2s, &t.s2c);
        if flags.rst() {
            self.phase = Phase::Done;
            return ended(Verdict::Rewrite(rewritten), Vec::new());
        }
        Output::verdict(Verdict::Rewrite(rewritten))
    }

    /// A bare acknowledgement of everything rackd took and gave, in the socket's place.
    fn ack_to_client(&self) -> Vec<Vec<u8>> {
        let (Some(sa), Phase::Translating(t)) = (self.syn_ack, &self.phase) else {
            return Vec::new();
        };
        let seq = sa.isn + 1 + t.inserted.len() as u32;
        let ack = self.isn_c + 1 + t.removed;
        self.to_client(seq, ack, Flags::ACK, &[])
            .into_iter()
            .collect()
    }

    /// The inserted bytes as segments to the client, from `isn_s + 1`.
    fn inserted_segments(&self) -> Vec<Vec<u8>> {
        let (Some(sa), Phase::Translating(t)) = (self.syn_ack, &self.phase) else {
            return Vec::new();
        };
        let ts_room = if sa.timestamps { TIMESTAMPS_LEN } else { 0 };
        let room = usize::from(self.client_mss.min(sa.mss).saturating_sub(ts_room)).max(1);
        let ack = self.isn_c + 1 + t.removed;
        let mut out = Vec::new();
        let mut at = 0;
        while at < t.inserted.len() {
            let end = (at + room).min(t.inserted.len());
            let flags = if end == t.inserted.len() {
                Flags::ACK | Flags::PSH
            } else {
                Flags::ACK
            };
            let seq = sa.isn + 1 + at as u32;
            out.extend(self.to_client(seq, ack, flags, &t.inserted[at..end]));
            at = end;
        }
        out
    }

    /// A segment from the socket's address to the client's, as the socket would send it.
    fn to_client(&self, seq: SeqNum, ack: SeqNum, flags: Flags, payload: &[u8]) -> Option<Vec<u8>> {
        let sa = self.syn_ack?;
        let ts = match (sa.timestamps, self.server_tsval, self.client_tsval) {
            (true, Some(tsval), Some(tsecr)) => Some(TcpOption::Timestamps { tsval, tsecr }),
            _ => None,
        };
        let options: Vec<TcpOption<'_>> = ts
            .map(|ts| vec![TcpOption::Nop, TcpOption::Nop, ts])
            .unwrap_or_default();
        Segment::new(self.server, self.client, seq, ack, flags)
            .with_window(sa.window)
            .with_options(&options)
            .with_payload(payload)
            .to_vec()
            .ok()
    }

    /// The socket ended: translation lingers a moment for the last packets, then the flow goes
    /// (at once while classifying: nothing was translated).
    pub fn socket_gone(&mut self, now: Instant) -> bool {
        match &mut self.phase {
            Phase::Translating(t) => {
                t.until = Some(t.until.map_or(now + LINGER, |u| u.min(now + LINGER)));
                false
            }
            _ => true,
        }
    }

    /// When [`EdpPort::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Classifying => self.conn.poll_timeout(),
            Phase::Translating(t) => match (t.next_send, t.until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            Phase::Done => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Output {
        match &mut self.phase {
            Phase::Classifying => {
                self.conn.handle_timeout(now);
                self.decided(now)
            }
            Phase::Translating(t) => {
                if t.until.is_some_and(|u| u <= now) {
                    self.phase = Phase::Done;
                    return ended(Verdict::Accept, Vec::new());
                }
                let mut inject = Vec::new();
                if t.next_send.is_some_and(|at| at <= now) {
                    t.interval = (t.interval * 2).min(RETRANSMIT_MAX);
                    t.next_send = Some(now + t.interval);
                    inject = self.inserted_segments();
                }
                Output {
                    verdict: Verdict::Accept,
                    inject,
                    event: None,
                }
            }
            Phase::Done => Output::verdict(Verdict::Accept),
        }
    }
}

fn ended(verdict: Verdict, inject: Vec<Vec<u8>>) -> Output {
    Output {
        verdict,
        inject,
        event: Some(Event::Ended),
    }
}

/// The packet with its sequence number moved by its own direction's map and its
/// acknowledgement (and SACK blocks) moved back by the other's.
fn rewrite(mut packet: Vec<u8>, own: &SeqAdjust, other: &SeqAdjust) -> Vec<u8> {
    if let Ok(mut p) = TcpIpPacket::new_checked(&mut packet[..]) {
        p.adjust_seq(own);
        // Malformed options: the acknowledgement alone is still moved.
        if p.adjust_ack(other).is_err() && p.tcp().flags().ack() {
            let ack = p.tcp().ack();
            p.set_ack(other.unmap(ack));
        }
    }
    packet
}

/// One past the last sequence number the packet occupies (payload and FIN).
fn segment_end(packet: &[u8]) -> Option<SeqNum> {
    let p = TcpIpPacket::new_checked(packet).ok()?;
    let tcp = p.tcp();
    Some(tcp.seq() + p.tcp_payload().len() as u32 + u32::from(tcp.flags().fin()))
}

fn tsval<T: AsRef<[u8]>>(p: &TcpIpPacket<T>) -> Option<u32> {
    p.tcp_options().map_while(Result::ok).find_map(|o| match o {
        TcpOption::Timestamps { tsval, .. } => Some(tsval),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
