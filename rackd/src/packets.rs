//! The packet handler: turns queued packets into engine events and engine verdicts into
//! packet edits. Parsing and rewriting are `tcpseq`'s; this module only decides.

use std::net::SocketAddr;
use std::time::Instant;

use edp::option::{SynFlags, SynOption, EXID};
use tcpseq::rewrite;
use tcpseq::TcpOption;

use crate::engine::{Dir, Engine, FlowKey, SynSeen, SynVerdict};
use crate::queue::{Decision, PacketHandler, QueuedPacket};

/// Netfilter hook numbers (`enum nf_inet_hooks`).
const HOOK_PRE_ROUTING: u8 = 0;
const HOOK_LOCAL_OUT: u8 = 3;

/// Per-wake-up handler borrowing the engine from the event loop.
#[derive(Debug)]
pub struct SynHandler<'a> {
    engine: &'a mut Engine,
}

impl<'a> SynHandler<'a> {
    pub fn new(engine: &'a mut Engine) -> Self {
        Self { engine }
    }
}

impl PacketHandler for SynHandler<'_> {
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
        // Whatever rackd cannot understand passes untouched: it is not rackd's to judge.
        let Ok(ip) = tcpseq::parse(pkt.payload) else {
            return Decision::Accept;
        };
        let tcp = ip.tcp(pkt.payload);
        let flags = tcp.flags();
        if !flags.syn() || flags.rst() {
            return Decision::Accept;
        }
        let src = SocketAddr::new(ip.src, tcp.src_port());
        let dst = SocketAddr::new(ip.dst, tcp.dst_port());
        let hello = tcp
            .options()
            .map_while(Result::ok)
            .find_map(|(_, o)| match o {
                TcpOption::Experimental { exid, data, .. } if exid == EXID => {
                    SynOption::decode_body(data).ok().and_then(|o| o.token)
                }
                _ => None,
            });
        let seen = SynSeen {
            dir,
            key: FlowKey::of_packet(dir, src, dst),
            ack: flags.ack(),
            hello,
        };
        match self.engine.on_syn(now, seen) {
            SynVerdict::Pass => Decision::Accept,
            SynVerdict::AddHello { token } => {
                if pkt.truncated() {
                    return Decision::Accept;
                }
                scratch.extend_from_slice(&pkt.payload[..ip.end()]);
                match rewrite::add_option(
                    scratch,
                    &ip,
                    &SynOption::new(SynFlags::default(), Some(token)).encode(),
                ) {
                    Ok(_) => Decision::AcceptRewritten,
                    Err(e) => {
                        // No room for the option: the peer cannot learn of us through it.
                        tracing::debug!(flow = %seen.key, "cannot add the rackd option: {e}");
                        Decision::Accept
                    }
                }
            }
        }
    }
}
