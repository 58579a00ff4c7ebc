//! nfnetlink_queue messages as bytes: building requests and parsing what the kernel sends.
//!
//! Pure code, no sockets, so every message shape is a unit test. Layouts follow
//! `include/uapi/linux/netfilter/nfnetlink_queue.h`; multi-byte attribute payloads are big-endian,
//! netlink headers are host order.
//!
//! Contract: [`Messages`] never panics on any input; a malformed message ends iteration with an
//! error and the rest of the datagram is ignored (the kernel never sends one; a corrupt datagram
//! is reported, not guessed at).

use std::fmt;

pub const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLMSG_OVERRUN: u16 = 0x4;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_SKB_INFO: u16 = 14;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;

/// Queue flags (`NFQA_CFG_F_*`).
pub const CFG_F_FAIL_OPEN: u32 = 0x1;
pub const CFG_F_GSO: u32 = 0x4;

/// `NFQA_SKB_*` bits describing the queued skb.
pub const SKB_CSUMNOTREADY: u32 = 0x1;
pub const SKB_GSO: u32 = 0x2;

/// Netfilter hook numbers as reported in the packet header.
pub const HOOK_PRE_ROUTING: u8 = 0;
pub const HOOK_LOCAL_OUT: u8 = 3;

/// What to do with a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
}

/// One packet handed to user space.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct QueuedPacket<'a> {
    pub queue: u16,
    pub id: u32,
    pub hw_protocol: u16,
    pub hook: u8,
    pub mark: u32,
    pub indev: u32,
    pub outdev: u32,
    /// `NFQA_SKB_*` bits.
    pub skb_info: u32,
    /// Original length when the kernel truncated the copy (`NFQA_CAP_LEN`).
    pub cap_len: Option<u32>,
    /// The L3 packet (IPv4 or IPv6 header first).
    pub payload: &'a [u8],
}

impl QueuedPacket<'_> {
    /// The TCP checksum field holds only the pseudo-header sum (offloaded checksum).
    pub fn checksum_partial(&self) -> bool {
        self.skb_info & SKB_CSUMNOTREADY != 0
    }

    /// The copy is shorter than the packet: it must not be rewritten.
    pub fn truncated(&self) -> bool {
        self.cap_len
            .is_some_and(|l| l as usize != self.payload.len())
    }
}

impl fmt::Debug for QueuedPacket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedPacket")
            .field("queue", &self.queue)
            .field("id", &self.id)
            .field("hook", &self.hook)
            .field("mark", &self.mark)
            .field("skb_info", &self.skb_info)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// A message received from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Packet(QueuedPacket<'a>),
    /// An acknowledgement (`errno == 0`) or a failure of the request with sequence `seq`.
    Ack {
        seq: u32,
        errno: i32,
    },
    /// The kernel dropped messages (`NLMSG_OVERRUN`).
    Overrun,
    /// Any other message type; ignored by callers.
    Other(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("netlink message truncated: header says {claimed} bytes, {available} available")]
    Truncated { claimed: usize, available: usize },
    #[error("netlink attribute {kind} has impossible length {len}")]
    BadAttribute { kind: u16, len: usize },
    #[error("queued packet message without {0}")]
    Missing(&'static str),
}

/// Iterator over the netlink messages of one received datagram.
#[derive(Debug)]
pub struct Messages<'a> {
    buf: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(self.buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            let err = WireError::Truncated {
                claimed: len,
                available: self.buf.len(),
            };
            self.buf = &[];
            return Some(Err(err));
        }
        let msg = &self.buf[..len];
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        Some(parse_message(msg))
    }
}

fn parse_message(msg: &[u8]) -> Result<Message<'_>, WireError> {
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    let seq = u32::from_ne_bytes(msg[8..12].try_into().unwrap());
    let body = &msg[NLMSG_HDRLEN..];
    match kind {
        NLMSG_ERROR => {
            let errno = body
                .get(0..4)
                .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                .ok_or(WireError::Truncated {
                    claimed: 4,
                    available: body.len(),
                })?;
            Ok(Message::Ack { seq, errno: -errno })
        }
        NLMSG_OVERRUN => Ok(Message::Overrun),
        NLMSG_DONE => Ok(Message::Other(kind)),
        k if k == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) => {
            parse_packet(body).map(Message::Packet)
        }
        k => Ok(Message::Other(k)),
    }
}

fn parse_packet(body: &[u8]) -> Result<QueuedPacket<'_>, WireError> {
    if body.len() < NFGENMSG_LEN {
        return Err(WireError::Truncated {
            claimed: NFGENMSG_LEN,
            available: body.len(),
        });
    }
    let queue = u16::from_be_bytes([body[2], body[3]]);
    let mut pkt = QueuedPacket {
        queue,
        id: 0,
        hw_protocol: 0,
        hook: 0,
        mark: 0,
        indev: 0,
        outdev: 0,
        skb_info: 0,
        cap_len: None,
        payload: &[],
    };
    let mut have_hdr = false;
    let mut have_payload = false;
    for attr in attributes(&body[NFGENMSG_LEN..]) {
        let (kind, data) = attr?;
        match kind {
            NFQA_PACKET_HDR if data.len() >= 7 => {
                pkt.id = be32(data);
                pkt.hw_protocol = u16::from_be_bytes([data[4], data[5]]);
                pkt.hook = data[6];
                have_hdr = true;
            }
            NFQA_MARK if data.len() >= 4 => pkt.mark = be32(data),
            NFQA_IFINDEX_INDEV if data.len() >= 4 => pkt.indev = be32(data),
            NFQA_IFINDEX_OUTDEV if data.len() >= 4 => pkt.outdev = be32(data),
            NFQA_SKB_INFO if data.len() >= 4 => pkt.skb_info = be32(data),
            NFQA_CAP_LEN if data.len() >= 4 => pkt.cap_len = Some(be32(data)),
            NFQA_PAYLOAD => {
                pkt.payload = data;
                have_payload = true;
            }
            _ => {}
        }
    }
    if !have_hdr {
        return Err(WireError::Missing("NFQA_PACKET_HDR"));
    }
    if !have_payload {
        return Err(WireError::Missing("NFQA_PAYLOAD"));
    }
    Ok(pkt)
}

/// Iterates `(type, payload)` over netlink attributes, flags masked off.
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), WireError>> {
    std::iter::from_fn(move || {
        if buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < NLA_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(Err(WireError::BadAttribute { kind, len }));
        }
        let data = &buf[NLA_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((kind, data)))
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends netlink messages to one buffer so several go to the kernel in a single `send`.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    next_seq: u32,
}

impl Batch {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            next_seq: 1,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Binds this socket to `queue` (kernel ≥ 3.8 needs no per-family bind).
    pub fn bind(&mut self, queue: u16) -> u32 {
        self.config_cmd(queue, NFQNL_CFG_CMD_BIND)
    }

    pub fn unbind(&mut self, queue: u16) -> u32 {
        self.config_cmd(queue, NFQNL_CFG_CMD_UNBIND)
    }

    fn config_cmd(&mut self, queue: u16, cmd: u8) -> u32 {
        let start = self.begin(NFQNL_MSG_CONFIG, queue, NLM_F_REQUEST | NLM_F_ACK);
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; __be16 pf; }
        self.attr(NFQA_CFG_CMD, &[cmd, 0, 0, 0]);
        self.finish(start)
    }

    /// Copy whole packets (up to `copy_range`), with queue length and flags.
    pub fn params(&mut self, queue: u16, copy_range: u32, max_len: u32, flags: u32) -> u32 {
        let start = self.begin(NFQNL_MSG_CONFIG, queue, NLM_F_REQUEST | NLM_F_ACK);
        let mut p = [0u8; 5];
        p[..4].copy_from_slice(&copy_range.to_be_bytes());
        p[4] = NFQNL_COPY_PACKET;
        self.attr(NFQA_CFG_PARAMS, &p);
        self.attr(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes());
        self.attr(NFQA_CFG_MASK, &flags.to_be_bytes());
        self.attr(NFQA_CFG_FLAGS, &flags.to_be_bytes());
        self.finish(start)
    }

    /// A verdict for one packet, optionally with a new mark and a replacement packet.
    pub fn verdict(
        &mut self,
        queue: u16,
        id: u32,
        verdict: Verdict,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) {
        let start = self.begin(NFQNL_MSG_VERDICT, queue, NLM_F_REQUEST);
        self.verdict_hdr(verdict, id);
        if let Some(mark) = mark {
            self.attr(NFQA_MARK, &mark.to_be_bytes());
        }
        if let Some(p) = payload {
            self.attr(NFQA_PAYLOAD, p);
        }
        self.finish(start);
    }

    /// One verdict for every pending packet with an id up to and including `max_id`.
    pub fn verdict_batch(&mut self, queue: u16, max_id: u32, verdict: Verdict) {
        let start = self.begin(NFQNL_MSG_VERDICT_BATCH, queue, NLM_F_REQUEST);
        self.verdict_hdr(verdict, max_id);
        self.finish(start);
    }

    fn verdict_hdr(&mut self, verdict: Verdict, id: u32) {
        let mut v = [0u8; 8];
        v[..4].copy_from_slice(&(verdict as u32).to_be_bytes());
        v[4..].copy_from_slice(&id.to_be_bytes());
        self.attr(NFQA_VERDICT_HDR, &v);
    }

    fn begin(&mut self, msg: u16, queue: u16, flags: u16) -> usize {
        let start = self.buf.len();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish
        self.buf
            .extend_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | msg).to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel
                                                         // struct nfgenmsg { u8 family; u8 version; __be16 res_id; }
        self.buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        self.buf.extend_from_slice(&queue.to_be_bytes());
        start
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        // Attribute lengths are u16: callers never pass more than a 64 KiB packet.
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn finish(&mut self, start: usize) -> u32 {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        u32::from_ne_bytes(self.buf[start + 8..start + 12].try_into().unwrap())
    }
}

/// The largest packet a verdict can carry: an attribute length is 16 bits.
pub const MAX_VERDICT_PAYLOAD: usize = u16::MAX as usize - NLA_HDRLEN;

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_msg(queue: u16, id: u32, hook: u8, payload: &[u8], skb_info: Option<u32>) -> Vec<u8> {
        let mut b = Batch::new();
        let start = b.begin(NFQNL_MSG_PACKET, queue, 0);
        let mut hdr = [0u8; 7];
        hdr[..4].copy_from_slice(&id.to_be_bytes());
        hdr[4..6].copy_from_slice(&0x0800u16.to_be_bytes());
        hdr[6] = hook;
        b.attr(NFQA_PACKET_HDR, &hdr);
        b.attr(NFQA_MARK, &7u32.to_be_bytes());
        if let Some(i) = skb_info {
            b.attr(NFQA_SKB_INFO, &i.to_be_bytes());
        }
        b.attr(NFQA_PAYLOAD, payload);
        b.finish(start);
        b.buf
    }

    #[test]
    fn parses_a_packet_message() {
        let bytes = packet_msg(
            5,
            42,
            HOOK_LOCAL_OUT,
            &[0x45, 1, 2, 3, 4],
            Some(SKB_CSUMNOTREADY),
        );
        let msgs: Vec<_> = messages(&bytes).collect();
        assert_eq!(msgs.len(), 1);
        let Message::Packet(p) = msgs[0].clone().unwrap() else {
            panic!("not a packet")
        };
        assert_eq!((p.queue, p.id, p.hook, p.mark), (5, 42, HOOK_LOCAL_OUT, 7));
        assert_eq!(p.payload, &[0x45, 1, 2, 3, 4]);
        assert!(p.checksum_partial());
        assert!(!p.truncated());
    }

    #[test]
    fn parses_several_messages_in_one_datagram() {
        let mut bytes = packet_msg(0, 1, 0, &[1; 3], None);
        bytes.extend(packet_msg(0, 2, 0, &[2; 9], None));
        let ids: Vec<u32> = messages(&bytes)
            .map(|m| match m.unwrap() {
                Message::Packet(p) => p.id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn error_message_reports_errno_and_seq() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&9u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        msg.extend_from_slice(&[0u8; 16]);
        let m: Vec<_> = messages(&msg).collect();
        assert_eq!(
            m,
            [Ok(Message::Ack {
                seq: 9,
                errno: libc::EPERM
            })]
        );
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let bytes = packet_msg(0, 1, 0, &[1; 20], None);
        for cut in 0..bytes.len() {
            for m in messages(&bytes[..cut]) {
                let _ = m; // any result is fine; it must not panic
            }
        }
        let mut bad = bytes.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(
            messages(&bad).next(),
            Some(Err(WireError::Truncated { .. }))
        ));
        // An attribute claiming more than the message holds.
        let mut bad_attr = bytes;
        bad_attr[NLMSG_HDRLEN + NFGENMSG_LEN..][..2].copy_from_slice(&500u16.to_ne_bytes());
        assert!(matches!(
            messages(&bad_attr).next(),
            Some(Err(WireError::BadAttribute { .. }))
        ));
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; 256];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Make the first length plausible so parsing goes deeper than the header.
            let n = (x as usize % 240) + 16;
            buf[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
            buf[4..6].copy_from_slice(&(NFNL_SUBSYS_QUEUE << 8).to_ne_bytes());
            for m in messages(&buf) {
                let _ = m;
            }
        }
    }

    #[test]
    fn verdict_with_payload_layout() {
        let mut b = Batch::new();
        b.verdict(3, 77, Verdict::Accept, Some(0x10), Some(&[9, 9, 9]));
        let bytes = b.as_bytes();
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(
            u16::from_ne_bytes([bytes[4], bytes[5]]),
            NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT
        );
        assert_eq!(&bytes[18..20], &3u16.to_be_bytes());
        let attrs: Vec<_> = attributes(&bytes[20..]).map(Result::unwrap).collect();
        assert_eq!(attrs[0].0, NFQA_VERDICT_HDR);
        assert_eq!(attrs[0].1, [0, 0, 0, 1, 0, 0, 0, 77]);
        assert_eq!(attrs[1], (NFQA_MARK, &[0, 0, 0, 0x10][..]));
        assert_eq!(attrs[2], (NFQA_PAYLOAD, &[9, 9, 9][..]));
    }

    #[test]
    fn batched_messages_have_increasing_sequence_numbers() {
        let mut b = Batch::new();
        let s1 = b.bind(1);
        let s2 = b.params(1, 0xffff, 4096, CFG_F_FAIL_OPEN | CFG_F_GSO);
        assert_eq!(s2, s1 + 1);
        let n = messages(b.as_bytes()).count();
        assert_eq!(n, 2);
    }
}
