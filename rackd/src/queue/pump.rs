//! Moves packets between the queue socket and a packet handler: reads every datagram waiting,
//! asks the handler for a verdict per packet, and sends all verdicts of one wake-up together.

use std::io;
use std::time::Instant;

use super::socket::QueueSocket;
use super::wire::{self, Batch, Message, QueuedPacket, Verdict, MAX_VERDICT_PAYLOAD};

/// What the handler wants done with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Accept the packet the handler wrote into the scratch buffer instead.
    AcceptRewritten,
    Drop,
}

/// Decides the fate of queued packets. `scratch` is a buffer the handler may fill with a
/// rewritten packet (then it returns [`Decision::AcceptRewritten`]).
pub trait PacketHandler {
    fn on_packet(
        &mut self,
        now: Instant,
        pkt: &QueuedPacket<'_>,
        scratch: &mut Vec<u8>,
    ) -> Decision;
}

/// Counters shown in `rackctl status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PumpStats {
    pub packets: u64,
    pub rewritten: u64,
    pub dropped_by_rackd: u64,
    /// Datagrams the kernel could not deliver because the receive buffer was full.
    pub overruns: u64,
    /// Malformed messages from the kernel (never expected).
    pub malformed: u64,
    /// Verdicts the kernel refused (for example a packet id it no longer holds).
    pub verdict_errors: u64,
}

#[derive(Debug)]
pub struct Pump {
    recv_buf: Vec<u8>,
    scratch: Vec<u8>,
    batch: Batch,
    pub stats: PumpStats,
}

impl Default for Pump {
    fn default() -> Self {
        Self::new()
    }
}

/// Packets handled per call of [`Pump::run_once`] before the event loop gets a turn.
pub const ROUND_LIMIT: usize = 2048;

impl Pump {
    pub fn new() -> Self {
        Self {
            // One GSO packet plus netlink headers fits; the kernel packs smaller ones together.
            recv_buf: vec![0; 256 * 1024],
            scratch: Vec::with_capacity(64 * 1024),
            batch: Batch::new(),
            stats: PumpStats::default(),
        }
    }

    /// Handles what is waiting on `sock` without blocking, up to [`ROUND_LIMIT`] packets, so a
    /// flood cannot starve the daemon's other work. Returns how many packets it saw and whether
    /// the socket was drained (`WouldBlock` reached); if not, call again soon.
    pub fn run_once(
        &mut self,
        sock: &QueueSocket,
        handler: &mut impl PacketHandler,
        now: Instant,
    ) -> io::Result<(usize, bool)> {
        let mut seen = 0;
        let mut drained = false;
        while seen < ROUND_LIMIT {
            let n = match sock.recv(&mut self.recv_buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                // The kernel dropped messages: the packets it dropped were accepted by
                // fail-open or will be retransmitted; count and carry on.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.stats.overruns += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Self {
                recv_buf,
                scratch,
                batch,
                stats,
            } = self;
            for msg in wire::messages(&recv_buf[..n]) {
                match msg {
                    Ok(Message::Packet(pkt)) => {
                        seen += 1;
                        stats.packets += 1;
                        scratch.clear();
                        let decision = handler.on_packet(now, &pkt, scratch);
                        queue_verdict(batch, stats, &pkt, decision, scratch);
                    }
                    Ok(Message::Ack { errno, .. }) if errno != 0 => stats.verdict_errors += 1,
                    Ok(Message::Overrun) => stats.overruns += 1,
                    Ok(_) => {}
                    Err(_) => stats.malformed += 1,
                }
            }
            if self.batch.as_bytes().len() > 192 * 1024 {
                self.flush(sock)?;
            }
        }
        self.flush(sock)?;
        Ok((seen, drained))
    }

    fn flush(&mut self, sock: &QueueSocket) -> io::Result<()> {
        let r = sock.send(&self.batch);
        self.batch.clear();
        r
    }
}

fn queue_verdict(
    batch: &mut Batch,
    stats: &mut PumpStats,
    pkt: &QueuedPacket<'_>,
    decision: Decision,
    scratch: &[u8],
) {
    match decision {
        Decision::AcceptRewritten
            if !scratch.is_empty() && scratch.len() <= MAX_VERDICT_PAYLOAD =>
        {
            stats.rewritten += 1;
            batch.verdict(pkt.queue, pkt.id, Verdict::Accept, None, Some(scratch));
        }
        // A rewrite that cannot be carried is a bug in the handler; passing the original packet
        // unchanged is safer for the connection than dropping it.
        Decision::Accept | Decision::AcceptRewritten => {
            batch.verdict(pkt.queue, pkt.id, Verdict::Accept, None, None)
        }
        Decision::Drop => {
            stats.dropped_by_rackd += 1;
            batch.verdict(pkt.queue, pkt.id, Verdict::Drop, None, None);
        }
    }
}
