//! Every ordering of the in-band handshake, with packets built by hand.

use super::*;
use edp::crypto::DeterministicEntropy;
use edp::identity::PeerTrust;
use edp::init::{self, LocalParams};
use edp::message::{ConnId, Init};

const CLIENT_ISN: SeqNum = SeqNum(1_000_000);
const SERVER_ISN: SeqNum = SeqNum(u32::MAX - 300); // the server's stream wraps
const SYN_TSVAL: u32 = 1000;
const SYN_ACK_TSVAL: u32 = 5000;

fn client() -> SocketAddr {
    "192.0.2.2:40000".parse().unwrap()
}

fn server() -> SocketAddr {
    "198.51.100.2:7000".parse().unwrap()
}

fn local_syn() -> Vec<u8> {
    let opts = [
        TcpOption::Mss(1460),
        TcpOption::SackPermitted,
        TcpOption::Timestamps {
            tsval: SYN_TSVAL,
            tsecr: 0,
        },
        TcpOption::Nop,
        TcpOption::WindowScale(7),
    ];
    Segment::syn(client(), server(), CLIENT_ISN, 64240, &opts)
        .to_vec()
        .unwrap()
}

fn syn_ack(ack: SeqNum, mss: Option<u16>) -> Vec<u8> {
    let mut opts = vec![
        TcpOption::SackPermitted,
        TcpOption::Timestamps {
            tsval: SYN_ACK_TSVAL,
            tsecr: SYN_TSVAL,
        },
        TcpOption::Nop,
        TcpOption::WindowScale(7),
    ];
    if let Some(m) = mss {
        opts.insert(0, TcpOption::Mss(m));
    }
    Segment::syn_ack(server(), client(), SERVER_ISN, ack, 65160, &opts)
        .to_vec()
        .unwrap()
}

/// A server segment at `offset` of its stream, acknowledging `acked` bytes of ours.
fn from_server(h: &Handshake, offset: u32, acked: u32, payload: &[u8], fin: bool) -> Vec<u8> {
    let mut flags = Flags::ACK | Flags::PSH;
    if fin {
        flags = flags | Flags::FIN;
    }
    Segment::new(
        server(),
        client(),
        SERVER_ISN + 1 + offset,
        h.wire_isn + 1 + acked,
        flags,
    )
    .with_window(509)
    .with_payload(payload)
    .to_vec()
    .unwrap()
}

struct Handshake {
    ib: InBand,
    now: Instant,
    init: Init,
    /// The SYN rackd sends: the socket's, moved back by D.
    syn: Vec<u8>,
    wire_isn: SeqNum,
    out: Vec<u8>,
}

/// Probe answered positively; the rewritten SYN is out.
fn started() -> Handshake {
    let now = Instant::now();
    let mut rng = DeterministicEntropy::new(7);
    let (initiator, init) = Initiator::start(
        &mut rng,
        Some(ConnId(0x1111_2222_3333_4444)),
        &LocalParams::default(),
    )
    .unwrap();
    let frame = Message::Init(init.clone()).encode();
    let mut ib = InBand::new(now, local_syn()).unwrap();
    assert!(ib.is_probing());
    assert_eq!(ib.on_local_syn(), None, "nothing is sent while probing");
    let syn = ib.start(now, &frame, initiator);
    let mut out = ANNOUNCEMENT.to_vec();
    out.extend_from_slice(&frame);
    let wire_isn = CLIENT_ISN - out.len() as u32;
    Handshake {
        ib,
        now,
        init,
        syn,
        wire_isn,
        out,
    }
}

/// The server's answer to our Init.
fn init_ack(init: &Init) -> Vec<u8> {
    let (ack, _) = init::respond(
        &mut DeterministicEntropy::new(9),
        init,
        &LocalParams::default(),
        "client",
        &mut PeerTrust::Opportunistic,
    )
    .unwrap();
    Message::InitAck(ack).encode()
}

/// Payload bytes of `segments`, checking that they are contiguous from `start`.
fn stream_of(segments: &[Vec<u8>], start: SeqNum) -> Vec<u8> {
    let mut bytes = Vec::new();
    for s in segments {
        let p = TcpIpPacket::new_checked(&s[..]).unwrap();
        assert!(p.checksums_ok());
        assert_eq!(p.tcp().seq(), start + bytes.len() as u32);
        bytes.extend_from_slice(p.tcp_payload());
    }
    bytes
}

/// SYN-ACK in, announcement and Init out.
fn answered(h: &mut Handshake, mss: Option<u16>) -> Vec<Vec<u8>> {
    h.ib.on_syn_ack(h.now, syn_ack(h.wire_isn + 1, mss))
        .unwrap()
}

fn seq_ack(packet: &[u8]) -> (SeqNum, SeqNum, Flags) {
    let p = TcpIpPacket::new_checked(packet).unwrap();
    assert!(p.checksums_ok());
    (p.tcp().seq(), p.tcp().ack(), p.tcp().flags())
}

#[test]
fn the_syn_moves_back_by_the_announcement_and_init() {
    let h = started();
    let (seq, _, flags) = seq_ack(&h.syn);
    assert!(flags.syn() && !flags.ack());
    assert_eq!(seq, h.wire_isn);
    assert_eq!(
        h.out.len(),
        1024 + Message::Init(h.init.clone()).encode().len()
    );
    // The socket's retransmitted SYN is replaced by rackd's until the server answers.
    assert_eq!(h.ib.on_local_syn(), Some(h.syn.clone()));
}

#[test]
fn announcement_and_init_follow_the_syn_ack_with_the_sockets_timestamps_and_window() {
    let mut h = started();
    let segments = answered(&mut h, Some(1460));
    assert_eq!(stream_of(&segments, h.wire_isn + 1), h.out);
    for s in &segments {
        let p = TcpIpPacket::new_checked(&s[..]).unwrap();
        assert_eq!(p.tcp().ack(), SERVER_ISN + 1);
        assert!(p.tcp().flags().ack() && !p.tcp().flags().syn());
        assert_eq!(p.tcp().window(), 64240 >> 7);
        let ts = p.tcp_options().map_while(Result::ok).find_map(|o| match o {
            TcpOption::Timestamps { tsval, tsecr } => Some((tsval, tsecr)),
            _ => None,
        });
        assert_eq!(ts, Some((SYN_TSVAL, SYN_ACK_TSVAL)));
        assert!(p.tcp_payload().len() <= 1460 - 12);
    }
    // Answered: no more SYNs from rackd, the socket's are still dropped.
    assert_eq!(h.ib.on_local_syn(), None);
}

#[test]
fn without_an_mss_option_segments_are_at_most_536_bytes() {
    let mut h = started();
    let segments = answered(&mut h, None);
    assert_eq!(stream_of(&segments, h.wire_isn + 1), h.out);
    let sizes: Vec<usize> = segments
        .iter()
        .map(|s| {
            TcpIpPacket::new_checked(&s[..])
                .unwrap()
                .tcp_payload()
                .len()
        })
        .collect();
    assert!(sizes.iter().all(|n| *n <= 536 - 12), "{sizes:?}");
    assert_eq!(sizes.len(), h.out.len().div_ceil(536 - 12));
}

#[test]
fn a_syn_ack_for_another_isn_fails() {
    let mut h = started();
    let err =
        h.ib.on_syn_ack(h.now, syn_ack(CLIENT_ISN + 1, Some(1460)))
            .unwrap_err();
    assert!(matches!(err, InBandError::BadSynAck { .. }), "{err}");
}

#[test]
fn the_init_ack_completes_and_the_socket_gets_a_moved_syn_ack() {
    let mut h = started();
    answered(&mut h, Some(1460));
    let ack = init_ack(&h.init);
    let seg = from_server(&h, 0, h.out.len() as u32, &ack, false);
    let got = h.ib.on_remote(seg).unwrap().expect("complete InitAck");
    assert_eq!(got.conn_id, ConnId(0x1111_2222_3333_4444));
    let done = h.ib.completion();
    assert_eq!(done.len(), 2, "nothing behind the InitAck");
    let conntrack = TcpIpPacket::new_checked(&done[0][..]).unwrap();
    assert!(!conntrack.checksums_ok(), "only for local conntrack");
    assert_eq!(conntrack.tcp().seq(), CLIENT_ISN);
    assert_eq!((conntrack.src(), conntrack.dst()), (client(), server()));
    let (seq, ackn, flags) = seq_ack(&done[1]);
    assert!(flags.syn() && flags.ack());
    assert_eq!(seq, SERVER_ISN + ack.len() as u32);
    assert_eq!(ackn, CLIENT_ISN + 1);
    assert_eq!(h.ib.socket_isn_peer(), Some(SERVER_ISN + ack.len() as u32));
    // Options of the server's SYN-ACK are the socket's to see (timestamps, window scale).
    let p = TcpIpPacket::new_checked(&done[1][..]).unwrap();
    assert!(p
        .tcp_options()
        .map_while(Result::ok)
        .any(|o| matches!(o, TcpOption::WindowScale(7))));
}

#[test]
fn an_init_ack_split_across_segments_out_of_order_and_duplicated() {
    let mut h = started();
    answered(&mut h, Some(1460));
    let ack = init_ack(&h.init);
    let (a, c) = (&ack[..10], &ack[30..]);
    // The last piece first, the first one twice, then the middle, overlapping the first.
    let late = from_server(&h, 30, 0, c, false);
    assert_eq!(h.ib.on_remote(late).unwrap(), None);
    let first = from_server(&h, 0, 0, a, false);
    assert_eq!(h.ib.on_remote(first.clone()).unwrap(), None);
    assert_eq!(h.ib.on_remote(first).unwrap(), None);
    let overlap = from_server(&h, 5, 0, &ack[5..30], false);
    let got = h.ib.on_remote(overlap).unwrap();
    assert!(got.is_some(), "the middle piece completes the InitAck");
    assert_eq!(h.ib.completion().len(), 2);
}

#[test]
fn server_data_behind_the_init_ack_is_delivered_after_the_syn_ack() {
    let mut h = started();
    answered(&mut h, Some(1460));
    let mut bytes = init_ack(&h.init);
    let l = bytes.len() as u32;
    bytes.extend_from_slice(b"hello from the server");
    // Acknowledges only part of the announcement: the socket must not see that.
    let seg = from_server(&h, 0, 100, &bytes, false);
    assert!(h.ib.on_remote(seg).unwrap().is_some());
    let done = h.ib.completion();
    assert_eq!(done.len(), 3);
    let (seq, ack, flags) = seq_ack(&done[2]);
    assert!(!flags.syn());
    assert_eq!(
        seq,
        SERVER_ISN + 1,
        "the socket trims what it has from the kept packet"
    );
    assert_eq!(
        ack,
        CLIENT_ISN + 1,
        "never acknowledges less than the socket's SYN"
    );
    assert_eq!(h.ib.socket_isn_peer(), Some(SERVER_ISN + l));
}

#[test]
fn a_later_segment_kept_while_the_init_ack_is_incomplete_is_delivered_too() {
    let mut h = started();
    answered(&mut h, Some(1460));
    let ack = init_ack(&h.init);
    let l = ack.len() as u32;
    let later = from_server(&h, l, h.out.len() as u32, b"more", true);
    assert_eq!(h.ib.on_remote(later).unwrap(), None);
    assert!(h
        .ib
        .on_remote(from_server(&h, 0, h.out.len() as u32, &ack, false))
        .unwrap()
        .is_some());
    let done = h.ib.completion();
    assert_eq!(done.len(), 3);
    let (seq, _, flags) = seq_ack(&done[2]);
    assert_eq!(seq, SERVER_ISN + 1 + l);
    assert!(flags.fin());
}

#[test]
fn a_lost_init_is_sent_again_from_the_first_unacknowledged_byte() {
    let mut h = started();
    let first = answered(&mut h, Some(1460));
    assert!(!first.is_empty());
    let t = h.ib.poll_timeout();
    assert_eq!(t, h.now + RETRANSMIT_FIRST);
    assert!(
        h.ib.handle_timeout(h.now).unwrap().is_empty(),
        "not due yet"
    );
    let again = h.ib.handle_timeout(t).unwrap();
    assert_eq!(stream_of(&again, h.wire_isn + 1), h.out);
    // The server acknowledged the announcement only: the Init goes again, alone.
    let ack_only = from_server(&h, 0, 1024, &[], false);
    assert_eq!(h.ib.on_remote(ack_only).unwrap(), None);
    let t2 = h.ib.poll_timeout();
    assert_eq!(t2, t + RETRANSMIT_FIRST * 2, "the interval doubles");
    let again = h.ib.handle_timeout(t2).unwrap();
    assert_eq!(stream_of(&again, h.wire_isn + 1 + 1024), h.out[1024..]);
    // A repeated SYN-ACK (our first segment was lost) is answered at once.
    let repeat =
        h.ib.on_syn_ack(t2, syn_ack(h.wire_isn + 1, Some(1460)))
            .unwrap();
    assert_eq!(stream_of(&repeat, h.wire_isn + 1 + 1024), h.out[1024..]);
}

#[test]
fn no_init_ack_in_time_fails_with_resets_for_both_ends() {
    let mut h = started();
    answered(&mut h, Some(1460));
    let (now, err) = loop {
        let now = h.ib.poll_timeout();
        match h.ib.handle_timeout(now) {
            Ok(_) => continue,
            Err(e) => break (now, e),
        }
    };
    assert_eq!(err, InBandError::Timeout(HANDSHAKE_LIMIT));
    assert!(now >= h.now + HANDSHAKE_LIMIT);
    let resets = h.ib.resets(false);
    assert_eq!(resets.len(), 2);
    let (seq, _, flags) = seq_ack(&resets[0]);
    assert!(flags.rst());
    assert_eq!(seq, h.wire_isn + 1, "at the byte the server expects");
    let p = TcpIpPacket::new_checked(&resets[1][..]).unwrap();
    assert_eq!((p.src(), p.dst()), (server(), client()));
    assert!(p.tcp().flags().rst() && p.tcp().flags().ack());
    assert_eq!(
        p.tcp().ack(),
        CLIENT_ISN + 1,
        "acceptable to a socket in SYN-SENT"
    );
}

#[test]
fn before_the_syn_ack_a_timeout_resets_only_the_socket() {
    let mut h = started();
    let err = h.ib.handle_timeout(h.now + HANDSHAKE_LIMIT).unwrap_err();
    assert!(matches!(err, InBandError::Timeout(_)));
    assert_eq!(h.ib.resets(false).len(), 1);
}

#[test]
fn a_server_reset_or_close_or_other_message_fails() {
    let mut h = started();
    answered(&mut h, Some(1460));
    let rst = Segment::rst(server(), client(), SERVER_ISN + 1)
        .to_vec()
        .unwrap();
    assert_eq!(h.ib.on_remote(rst), Err(InBandError::Reset));
    assert_eq!(h.ib.resets(true).len(), 1, "the server is not reset again");

    let mut h = started();
    answered(&mut h, Some(1460));
    let fin = from_server(&h, 0, 0, &[], true);
    assert_eq!(h.ib.on_remote(fin), Err(InBandError::Closed));

    let mut h = started();
    answered(&mut h, Some(1460));
    let error = Message::Error {
        conn_id: None,
        code: edp::message::ErrorCode::Malformed,
    }
    .encode();
    let err =
        h.ib.on_remote(from_server(&h, 0, 0, &error, false))
            .unwrap_err();
    assert!(
        matches!(err, InBandError::Unexpected(ref m) if m == "Error"),
        "{err}"
    );

    let mut h = started();
    answered(&mut h, Some(1460));
    let err =
        h.ib.on_remote(from_server(
            &h,
            0,
            0,
            b"HTTP/1.1 400 Bad Request\r\n",
            false,
        ))
        .unwrap_err();
    assert!(matches!(err, InBandError::Frame(_)), "{err}");
}

#[test]
fn a_flood_before_the_init_ack_is_refused() {
    let mut h = started();
    answered(&mut h, Some(1460));
    let far = from_server(&h, MAX_BUFFERED as u32, 0, b"x", false);
    assert_eq!(h.ib.on_remote(far), Err(InBandError::TooMuch));
}

#[test]
fn edp_server_entries() {
    let a: EdpServer = "198.51.100.2:7000".parse().unwrap();
    assert!(a.matches(server()));
    let p: EdpServer = "2001:db8::/32".parse().unwrap();
    assert!(p.matches("[2001:db8::9]:1".parse().unwrap()));
    assert!(!p.matches(server()));
    let all: EdpServer = "0.0.0.0/0".parse().unwrap();
    assert!(all.matches(server()));
    assert!("2001:db8::2:7000".parse::<EdpServer>().is_err());
}
