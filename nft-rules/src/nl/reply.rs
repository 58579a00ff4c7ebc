//! Parsing of the kernel's replies to a batch: one `NLMSG_ERROR` per acknowledged message,
//! carrying the sequence number of the message it answers and an errno (0 = success).
//!
//! Input is untrusted bytes; nothing here panics on malformed input.

/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// Reply flag: extended-ack attributes follow the echoed header.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// Reply flag: only the header of the original message is echoed.
const NLM_F_CAPPED: u16 = 0x100;
/// Extended ack attribute holding a human-readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;
const HDR_LEN: usize = 16;

/// The kernel's answer to one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// Sequence number of the message answered.
    pub(crate) seq: u32,
    /// Positive errno, or 0 for success.
    pub(crate) errno: i32,
    /// Extended-ack text, when the kernel gave one.
    pub(crate) message: Option<String>,
}

/// Netlink reply bytes that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed netlink reply at byte {offset}: {what}")]
pub struct MalformedReply {
    /// Byte offset of the problem in the datagram.
    pub offset: usize,
    /// What was wrong.
    pub what: &'static str,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Parses one received datagram into the acknowledgements it carries; other message types
/// are skipped.
pub(crate) fn parse_acks(datagram: &[u8]) -> Result<Vec<Ack>, MalformedReply> {
    let mut acks = Vec::new();
    let mut at = 0;
    while at < datagram.len() {
        let bad = |what| MalformedReply { offset: at, what };
        let len = u32_at(datagram, at).ok_or(bad("truncated header"))? as usize;
        if len < HDR_LEN || at + len > datagram.len() {
            return Err(bad("message length out of bounds"));
        }
        let msg = &datagram[at..at + len];
        let ty = u16_at(msg, 4).ok_or(bad("truncated header"))?;
        let flags = u16_at(msg, 6).ok_or(bad("truncated header"))?;
        let seq = u32_at(msg, 8).ok_or(bad("truncated header"))?;
        if ty == NLMSG_ERROR {
            let error = u32_at(msg, HDR_LEN).ok_or(bad("truncated error code"))? as i32;
            let message = if flags & NLM_F_ACK_TLVS != 0 {
                // Attributes follow the echoed message (only its header if capped).
                let echoed = if flags & NLM_F_CAPPED != 0 {
                    HDR_LEN
                } else {
                    u32_at(msg, HDR_LEN + 4).ok_or(bad("truncated echoed header"))? as usize
                };
                ext_ack_message(msg.get(HDR_LEN + 4 + align4(echoed)..).unwrap_or(&[]))
            } else {
                None
            };
            acks.push(Ack {
                seq,
                errno: error.saturating_neg(),
                message,
            });
        }
        at += align4(len);
    }
    Ok(acks)
}

/// Finds the `NLMSGERR_ATTR_MSG` string among extended-ack attributes.
fn ext_ack_message(mut attrs: &[u8]) -> Option<String> {
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let ty = u16_at(attrs, 2)?;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == NLMSGERR_ATTR_MSG {
            let text = &attrs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        attrs = attrs.get(align4(len)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_msg(seq: u32, errno: i32, flags: u16, tail: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let len = (HDR_LEN + 4 + HDR_LEN + tail.len()) as u32;
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-errno).to_ne_bytes());
        // echoed header (capped): length 16 claims only itself
        m.extend_from_slice(&16u32.to_ne_bytes());
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(tail);
        m
    }

    #[test]
    fn success_and_failure_acks() {
        let mut d = error_msg(7, 0, NLM_F_CAPPED, &[]);
        d.extend(error_msg(8, libc::ENOENT, NLM_F_CAPPED, &[]));
        let acks = parse_acks(&d).unwrap();
        assert_eq!(acks.len(), 2);
        assert_eq!((acks[0].seq, acks[0].errno), (7, 0));
        assert_eq!((acks[1].seq, acks[1].errno), (8, libc::ENOENT));
    }

    #[test]
    fn extended_ack_message_is_read() {
        let mut attr = Vec::new();
        attr.extend_from_slice(&9u16.to_ne_bytes());
        attr.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        attr.extend_from_slice(b"oops\0\0\0\0");
        let d = error_msg(3, libc::EINVAL, NLM_F_CAPPED | NLM_F_ACK_TLVS, &attr);
        let acks = parse_acks(&d).unwrap();
        assert_eq!(acks[0].message.as_deref(), Some("oops"));
    }

    #[test]
    fn truncated_and_lying_lengths_are_errors_not_panics() {
        let d = error_msg(1, 0, 0, &[]);
        for cut in 0..d.len() {
            let _ = parse_acks(&d[..cut]);
        }
        let mut lying = d.clone();
        lying[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_acks(&lying).is_err());
        let mut tiny = d;
        tiny[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse_acks(&tiny).is_err());
    }
}
