//! The packet handler: turns queued packets into engine events and engine verdicts into
//! packet edits. Parsing and rewriting are `tcpseq`'s; this module only decides.

use std::time::Instant;

use edp::option::{SynFlags, SynOption, EXID, KIND};
use tcpseq::{Checksum, TcpIpPacket, TcpOption};

use crate::engine::{Dir, Engine, FlowKey, SegmentSeen, SegmentVerdict, SynSeen, SynVerdict};
use crate::queue::wire::MAX_VERDICT_PAYLOAD;
use crate::queue::{Decision, PacketHandler, QueuedPacket};

/// Netfilter hook numbers (`enum nf_inet_hooks`).
const HOOK_PRE_ROUTING: u8 = 0;
const HOOK_LOCAL_OUT: u8 = 3;

/// Per-wake-up handler borrowing the engine from the event loop.
#[derive(Debug)]
pub struct Handler<'a> {
    engine: &'a mut Engine,
}

impl<'a> Handler<'a> {
    pub fn new(engine: &'a mut Engine) -> Self {
        Self { engine }
    }
}

impl PacketHandler for Handler<'_> {
    fn on_packet(
        &mut self,
        now: Instant,
        pkt: &QueuedPacket<'_>,
        scratch: &mut Vec<u8>,
    ) -> Decision {
        let dir = match pkt.hook {
            HOOK_LOCAL_OUT => Dir::Out,
            HOOK_PRE_ROUTING => Dir::In,
            _ => return Decision::Accept,
        };
        let mode = if pkt.checksum_partial() {
            Checksum::Partial
        } else {
            Checksum::Complete
        };
        // Whatever rackd cannot understand passes untouched: it is not rackd's to judge.
        let Ok(view) = TcpIpPacket::new_checked(pkt.payload) else {
            return Decision::Accept;
        };
        let view = view.with_checksum_mode(mode);
        let tcp = view.tcp();
        let flags = tcp.flags();
        let key = FlowKey::of_packet(dir, view.src(), view.dst());
        if !flags.syn() || flags.rst() {
            let seg = SegmentSeen::of(&view);
            let copy = || complete_copy(pkt, mode);
            return match self.engine.on_segment(now, dir, key, &seg, copy) {
                SegmentVerdict::Accept => Decision::Accept,
                SegmentVerdict::Drop => Decision::Drop,
                // Too long for a verdict: dropped rather than passed untranslated (the sender
                // retransmits it).
                SegmentVerdict::Rewrite(p) if p.is_empty() || p.len() > MAX_VERDICT_PAYLOAD => {
                    Decision::Drop
                }
                SegmentVerdict::Rewrite(p) => {
                    *scratch = p;
                    Decision::AcceptRewritten
                }
            };
        }
        let hello = view
            .tcp_options()
            .map_while(Result::ok)
            .find_map(|o| match o {
                TcpOption::Experimental { exid, data, .. } if exid == EXID => {
                    SynOption::decode_body(data).ok().and_then(|o| o.token)
                }
                _ => None,
            });
        let seen = SynSeen {
            dir,
            key,
            ack: flags.ack(),
            hello,
            seq: tcp.seq(),
        };
        let copy = || complete_copy(pkt, mode);
        match self.engine.on_syn_packet(now, seen, copy) {
            SynVerdict::Pass => Decision::Accept,
            SynVerdict::Drop => Decision::Drop,
            SynVerdict::AddHello { token } => {
                if pkt.truncated() {
                    return Decision::Accept;
                }
                match with_hello(pkt.payload, mode, token, std::mem::take(scratch)) {
                    Ok(rewritten) => {
                        *scratch = rewritten;
                        Decision::AcceptRewritten
                    }
                    Err(e) => {
                        // No room for the option: the peer cannot learn of us through it.
                        tracing::debug!(flow = %key, "cannot add the rackd option: {e}");
                        Decision::Accept
                    }
                }
            }
        }
    }
}

/// The packet as a standalone copy with a complete checksum (none for a truncated one).
fn complete_copy(pkt: &QueuedPacket<'_>, mode: Checksum) -> Option<Vec<u8>> {
    if pkt.truncated() {
        return None;
    }
    let mut copy = TcpIpPacket::new_checked(pkt.payload.to_vec())
        .ok()?
        .with_checksum_mode(mode);
    if mode == Checksum::Partial {
        copy.complete_partial();
    }
    Some(copy.into_inner())
}

/// The SYN with the rackd option added, in `buf` (reused). A rewritten packet leaves the queue
/// with a complete checksum: the kernel forgets a partial one when a verdict carries a payload.
pub(crate) fn with_hello(
    packet: &[u8],
    mode: Checksum,
    token: u32,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, tcpseq::Error> {
    buf.clear();
    buf.extend_from_slice(packet);
    let body = SynOption::new(SynFlags::default(), Some(token)).encode_body();
    let mut pkt = TcpIpPacket::new_checked(buf)?.with_checksum_mode(mode);
    pkt.insert_option_growing(&TcpOption::Experimental {
        kind: KIND,
        exid: EXID,
        data: &body,
    })?;
    if mode == Checksum::Partial {
        pkt.complete_partial();
    }
    Ok(pkt.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpseq::{Segment, SeqNum};

    #[test]
    fn hello_is_added_with_valid_checksums_in_both_checksum_modes() {
        let (c, s) = (
            "192.0.2.2:40000".parse().unwrap(),
            "198.51.100.2:5000".parse().unwrap(),
        );
        let opts = [
            TcpOption::Mss(1460),
            TcpOption::SackPermitted,
            TcpOption::Timestamps { tsval: 1, tsecr: 0 },
            TcpOption::Nop,
            TcpOption::WindowScale(7),
        ];
        let syn = Segment::syn(c, s, SeqNum(77), 64240, &opts)
            .to_vec()
            .unwrap();
        let out = with_hello(&syn, Checksum::Complete, 0xAABB_CCDD, Vec::new()).unwrap();
        let pkt = TcpIpPacket::new_checked(&out[..]).unwrap();
        assert!(pkt.checksums_ok());
        let found = pkt
            .tcp_options()
            .map_while(Result::ok)
            .find_map(|o| match o {
                TcpOption::Experimental { exid, data, .. } if exid == EXID => {
                    SynOption::decode_body(data).ok()?.token
                }
                _ => None,
            });
        assert_eq!(found, Some(0xAABB_CCDD));
        assert_eq!(pkt.tcp().seq(), SeqNum(77));
    }
}
