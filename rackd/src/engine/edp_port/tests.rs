//! Every ordering of a connection from a user-level EDP client to a listed port, with packets
//! built by hand: the client's side is the edp crate's own initiator.

use super::*;
use edp::crypto::DeterministicEntropy;
use edp::init::Initiator;
use edp::message::{ConnId, ErrorCode, InitAck, Message};
use tcpseq::SackBlocks;

const CLIENT_ISN: SeqNum = SeqNum(u32::MAX - 700); // the client's stream wraps
const SERVER_ISN: SeqNum = SeqNum(2_000_000);
const CLIENT_TSVAL: u32 = 1000;
const SERVER_TSVAL: u32 = 9000;

fn client() -> SocketAddr {
    "198.51.100.7:45000".parse().unwrap()
}

fn server() -> SocketAddr {
    "192.0.2.1:8080".parse().unwrap()
}

fn syn(mss: u16) -> Vec<u8> {
    let opts = [
        TcpOption::Mss(mss),
        TcpOption::SackPermitted,
        TcpOption::Timestamps {
            tsval: CLIENT_TSVAL,
            tsecr: 0,
        },
        TcpOption::Nop,
        TcpOption::WindowScale(7),
    ];
    Segment::syn(client(), server(), CLIENT_ISN, 64240, &opts)
        .to_vec()
        .unwrap()
}

fn syn_ack() -> Vec<u8> {
    let opts = [
        TcpOption::Mss(1460),
        TcpOption::SackPermitted,
        TcpOption::Timestamps {
            tsval: SERVER_TSVAL,
            tsecr: CLIENT_TSVAL,
        },
        TcpOption::Nop,
        TcpOption::WindowScale(7),
    ];
    Segment::syn_ack(server(), client(), SERVER_ISN, CLIENT_ISN + 1, 65160, &opts)
        .to_vec()
        .unwrap()
}

/// A client segment at `offset` of its stream, acknowledging `acked` bytes of the server's
/// stream as the client sees it.
fn from_client(offset: u32, acked: u32, payload: &[u8], flags: Flags) -> Vec<u8> {
    Segment::new(
        client(),
        server(),
        CLIENT_ISN + 1 + offset,
        SERVER_ISN + 1 + acked,
        flags,
    )
    .with_window(502)
    .with_payload(payload)
    .to_vec()
    .unwrap()
}

/// A socket segment at `offset` of its stream, acknowledging `acked` bytes it received.
fn from_server(offset: u32, acked: u32, payload: &[u8], flags: Flags) -> Vec<u8> {
    Segment::new(
        server(),
        client(),
        SERVER_ISN + 1 + offset,
        CLIENT_ISN + 1 + acked,
        flags,
    )
    .with_window(510)
    .with_payload(payload)
    .to_vec()
    .unwrap()
}

fn data() -> Flags {
    Flags::ACK | Flags::PSH
}

struct Conn {
    port: EdpPort,
    now: Instant,
    rng: DeterministicEntropy,
}

impl Conn {
    fn new(mss: u16) -> Conn {
        let now = Instant::now();
        let mut port = EdpPort::new(now, &syn(mss), &LocalParams::default()).unwrap();
        port.on_syn_ack(&syn_ack());
        assert!(port.is_classifying());
        Conn {
            port,
            now,
            rng: DeterministicEntropy::new(3),
        }
    }

    fn client(&mut self, packet: Vec<u8>) -> Output {
        self.port.on_client(self.now, packet, &mut self.rng)
    }
}

/// What an EDP client sends first on its main connection, and its initiator.
fn announced(id: u64) -> (Vec<u8>, Initiator) {
    let (initiator, init) = Initiator::start(
        &mut DeterministicEntropy::new(11),
        Some(ConnId(id)),
        &LocalParams::default(),
    )
    .unwrap();
    let mut bytes = ANNOUNCEMENT.to_vec();
    bytes.extend_from_slice(&Message::Init(init).encode());
    (bytes, initiator)
}

fn view(p: &[u8]) -> TcpIpPacket<&[u8]> {
    let v = TcpIpPacket::new_checked(p).unwrap();
    assert!(
        v.checksums_ok(),
        "checksums of a packet rackd built or rewrote"
    );
    v
}

fn rewritten(out: &Output) -> TcpIpPacket<&[u8]> {
    match &out.verdict {
        Verdict::Rewrite(p) => view(p),
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

/// Payload bytes of the segments rackd sent to the client, contiguous from `start`.
fn stream_to_client(segments: &[Vec<u8>], start: SeqNum, mss: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for s in segments {
        let p = view(s);
        assert_eq!((p.src(), p.dst()), (server(), client()));
        assert_eq!(p.tcp().seq(), start + bytes.len() as u32);
        assert!(p.tcp_payload().len() + 12 <= mss, "segment over the MSS");
        let ts = p.tcp_options().map_while(Result::ok).find_map(|o| match o {
            TcpOption::Timestamps { tsval, tsecr } => Some((tsval, tsecr)),
            _ => None,
        });
        assert_eq!(ts, Some((SERVER_TSVAL, CLIENT_TSVAL)));
        bytes.extend_from_slice(p.tcp_payload());
    }
    bytes
}

/// Announcement and Init in `mss`-sized pieces, fed in `order`; returns the InitAck segments
/// and the initiator.
fn initialise(c: &mut Conn, mss: usize, order: &[usize]) -> (Output, Initiator, u32) {
    let (bytes, initiator) = announced(0x0102_0304_0506_0708);
    let pieces: Vec<(usize, &[u8])> = bytes
        .chunks(mss - 12)
        .enumerate()
        .map(|(i, p)| (i * (mss - 12), p))
        .collect();
    assert_eq!(order.len(), pieces.len());
    let mut last = None;
    for (n, &i) in order.iter().enumerate() {
        let (at, piece) = pieces[i];
        let out = c.client(from_client(at as u32, 0, piece, data()));
        assert_eq!(
            out.verdict,
            Verdict::Drop,
            "the program never sees these bytes"
        );
        if n + 1 < order.len() {
            assert!(out.event.is_none() && out.inject.is_empty(), "{out:?}");
        }
        last = Some(out);
    }
    (last.unwrap(), initiator, bytes.len() as u32)
}

fn init_ack_of(bytes: &[u8]) -> InitAck {
    match Message::decode(bytes) {
        Ok(Some((Message::InitAck(ack), used))) => {
            assert_eq!(used, bytes.len());
            ack
        }
        other => panic!("not an InitAck: {other:?}"),
    }
}

#[test]
fn a_probe_is_answered_with_the_announcement_and_then_offset() {
    let mut c = Conn::new(1460);
    // The socket's ACK and window updates travel while the client says nothing.
    let out = c.client(from_client(0, 0, &[], Flags::ACK));
    assert_eq!(out.verdict, Verdict::Accept);
    let out = c.client(from_client(0, 0, &[], Flags::ACK | Flags::FIN));
    assert!(matches!(out.event, Some(Event::Probed)), "{out:?}");
    assert_eq!(out.verdict, Verdict::Accept, "the FIN reaches the program");
    let sent = stream_to_client(&out.inject, SERVER_ISN + 1, 1460);
    assert_eq!(sent, ANNOUNCEMENT);
    assert!(view(&out.inject[0]).tcp().ack() == CLIENT_ISN + 1);

    // The program's own FIN (and its ACK of the client's) lands after the announcement.
    let out = c
        .port
        .on_server(c.now, from_server(0, 1, &[], Flags::ACK | Flags::FIN));
    assert_eq!(rewritten(&out).tcp().seq(), SERVER_ISN + 1 + 1024);
    assert_eq!(rewritten(&out).tcp().ack(), CLIENT_ISN + 2);
    // The client's acknowledgements move back; one inside the announcement means nothing yet.
    let out = c.client(from_client(1, 1025, &[], Flags::ACK));
    assert_eq!(rewritten(&out).tcp().ack(), SERVER_ISN + 2);
    let out = c.client(from_client(1, 500, &[], Flags::ACK));
    assert_eq!(rewritten(&out).tcp().ack(), SERVER_ISN + 1);
    // Both FINs: removed after lingering.
    let until = c.port.poll_timeout().expect("a linger timer");
    assert!(until <= c.now + LINGER);
    let out = c.port.handle_timeout(until);
    assert!(matches!(out.event, Some(Event::Ended)));
}

#[test]
fn main_connection_split_at_mss_536_is_initialised_and_translated() {
    let mut c = Conn::new(536);
    let (out, initiator, d) = initialise(&mut c, 536, &[0, 1, 2]);
    let Some(Event::Enhanced(session)) = out.event else {
        panic!("{out:?}");
    };
    let init_ack = stream_to_client(&out.inject, SERVER_ISN + 1, 536);
    assert!(!out.inject.is_empty());
    for p in &out.inject {
        assert_eq!(
            view(p).tcp().ack(),
            CLIENT_ISN + 1 + d,
            "rackd acknowledges them"
        );
    }
    let l = init_ack.len() as u32;
    let client_session = initiator
        .finish(
            &init_ack_of(&init_ack),
            "server",
            &mut PeerTrust::Opportunistic,
        )
        .unwrap();
    assert_eq!(client_session.conn_id, session.conn_id);
    assert_eq!(
        client_session.key_id(),
        session.key_id(),
        "the same key on both ends"
    );

    // Application bytes: client → socket moved back by D, socket → client on by L.
    let out = c.client(from_client(d, l, b"hello", data()));
    let p = rewritten(&out);
    assert_eq!(p.tcp().seq(), CLIENT_ISN + 1);
    assert_eq!(p.tcp().ack(), SERVER_ISN + 1);
    assert_eq!(p.tcp_payload(), b"hello");
    let out = c.port.on_server(c.now, from_server(0, 5, b"HELLO", data()));
    let p = rewritten(&out);
    assert_eq!(p.tcp().seq(), SERVER_ISN + 1 + l);
    assert_eq!(p.tcp().ack(), CLIENT_ISN + 1 + d + 5);

    // SACK blocks from the client name the wire's server stream: moved back too.
    let mut raw = [0u8; 32];
    let edges = (SERVER_ISN + 1 + l + 100, SERVER_ISN + 1 + l + 200);
    let blocks = SackBlocks::encode(&[edges], &mut raw).unwrap();
    let opts = [TcpOption::Nop, TcpOption::Nop, TcpOption::Sack(blocks)];
    let sack = Segment::new(
        client(),
        server(),
        CLIENT_ISN + 1 + d + 5,
        SERVER_ISN + 1 + l,
        Flags::ACK,
    )
    .with_options(&opts)
    .to_vec()
    .unwrap();
    let out = c.client(sack);
    let p = rewritten(&out);
    let got: Vec<_> = p
        .tcp_options()
        .map_while(Result::ok)
        .find_map(|o| match o {
            TcpOption::Sack(b) => Some(b.iter().collect::<Vec<_>>()),
            _ => None,
        })
        .unwrap();
    assert_eq!(got, [(SERVER_ISN + 101, SERVER_ISN + 201)]);
}

#[test]
fn reordered_and_duplicated_pieces_are_reassembled() {
    let mut c = Conn::new(536);
    let (bytes, _) = announced(0x0102_0304_0506_0708);
    let second = from_client(524, 0, &bytes[524..1048], data());
    assert_eq!(c.client(second.clone()).verdict, Verdict::Drop);
    assert_eq!(c.client(second).verdict, Verdict::Drop, "a duplicate");
    let out = c.client(from_client(1048, 0, &bytes[1048..], data()));
    assert!(out.event.is_none());
    // The first piece completes the stream.
    let out = c.client(from_client(0, 0, &bytes[..524], data()));
    assert!(matches!(out.event, Some(Event::Enhanced(_))), "{out:?}");
}

#[test]
fn a_lost_init_ack_is_sent_again_on_the_timer_and_on_a_retransmitted_init() {
    let mut c = Conn::new(1460);
    let (out, _, d) = initialise(&mut c, 1460, &[0]);
    let first = out.inject.clone();
    // The client retransmits its Init: dropped, the InitAck goes again.
    let (bytes, _) = announced(0x0102_0304_0506_0708);
    let out = c.client(from_client(0, 0, &bytes, data()));
    assert_eq!(out.verdict, Verdict::Drop);
    assert_eq!(out.inject, first);
    // Nothing acknowledged: the timer re-sends it too.
    let at = c.port.poll_timeout().unwrap();
    assert_eq!(at, c.now + RETRANSMIT_FIRST);
    let out = c.port.handle_timeout(at);
    assert_eq!(out.inject, first);
    // Acknowledged: no more re-sends; a late Init copy draws a bare ACK.
    let l = stream_to_client(&first, SERVER_ISN + 1, 1460).len() as u32;
    let out = c.client(from_client(d, l, &[], Flags::ACK));
    assert_eq!(rewritten(&out).tcp().ack(), SERVER_ISN + 1);
    assert_eq!(c.port.poll_timeout(), None);
    let out = c.client(from_client(0, l, &bytes, data()));
    assert_eq!(out.verdict, Verdict::Drop);
    assert_eq!(out.inject.len(), 1);
    let p = view(&out.inject[0]);
    assert!(p.tcp_payload().is_empty());
    assert_eq!(p.tcp().ack(), CLIENT_ISN + 1 + d);
}

#[test]
fn a_client_whose_first_byte_matches_then_diverges_is_plain_and_gets_its_bytes() {
    let mut c = Conn::new(1460);
    let first = from_client(0, 0, &ANNOUNCEMENT[..1], data());
    assert_eq!(c.client(first.clone()).verdict, Verdict::Drop);
    // The socket answered with a banner meanwhile: kept.
    let banner = from_server(0, 0, b"220 ready\r\n", data());
    assert_eq!(
        c.port.on_server(c.now, banner.clone()).verdict,
        Verdict::Drop
    );
    let mut other = ANNOUNCEMENT[1..4].to_vec();
    other[2] ^= 0xff;
    let second = from_client(1, 0, &other, data());
    let out = c.client(second.clone());
    assert!(matches!(out.event, Some(Event::Plain)), "{out:?}");
    assert_eq!(out.verdict, Verdict::Drop);
    // Untouched and complete: the client's two pieces, then the banner.
    assert_eq!(out.inject, [first, second, banner]);
    // Nothing more is looked at.
    assert_eq!(c.port.poll_timeout(), None);
    let late = from_client(4, 0, b"x", data());
    assert_eq!(c.client(late).verdict, Verdict::Accept);
}

#[test]
fn a_plain_client_is_released_at_its_first_segment() {
    let mut c = Conn::new(1460);
    let get = from_client(0, 0, b"GET / HTTP/1.0\r\n\r\n", data());
    let out = c.client(get.clone());
    assert!(matches!(out.event, Some(Event::Plain)));
    assert_eq!(out.inject, [get]);
}

#[test]
fn a_silent_client_is_plain_after_the_limit_and_gets_the_banner() {
    let mut c = Conn::new(1460);
    let banner = from_server(0, 0, b"SSH-2.0-x\r\n", data());
    assert_eq!(
        c.port.on_server(c.now, banner.clone()).verdict,
        Verdict::Drop
    );
    let at = c.port.poll_timeout().unwrap();
    assert_eq!(at, c.now + SILENT_LIMIT);
    let out = c.port.handle_timeout(at - Duration::from_millis(1));
    assert!(out.event.is_none());
    let out = c.port.handle_timeout(at);
    assert!(matches!(out.event, Some(Event::Plain)), "{out:?}");
    assert_eq!(out.inject, [banner]);
}

#[test]
fn a_banner_sent_before_the_announcement_follows_the_init_ack() {
    let mut c = Conn::new(1460);
    let banner = from_server(0, 0, b"hi\r\n", data());
    assert_eq!(c.port.on_server(c.now, banner).verdict, Verdict::Drop);
    let (out, _, d) = initialise(&mut c, 1460, &[0]);
    let (init_ack, rest) = out.inject.split_at(out.inject.len() - 1);
    let l = stream_to_client(init_ack, SERVER_ISN + 1, 1460).len() as u32;
    let p = view(&rest[0]);
    assert_eq!(p.tcp().seq(), SERVER_ISN + 1 + l);
    assert_eq!(p.tcp().ack(), CLIENT_ISN + 1 + d);
    assert_eq!(p.tcp_payload(), b"hi\r\n");
}

#[test]
fn a_reset_during_initialisation_ends_the_flow() {
    let mut c = Conn::new(1460);
    assert_eq!(
        c.client(from_client(0, 0, &ANNOUNCEMENT[..100], data()))
            .verdict,
        Verdict::Drop
    );
    let out = c.client(from_client(100, 0, &[], Flags::RST));
    assert!(matches!(out.event, Some(Event::Ended)));
    assert_eq!(out.verdict, Verdict::Accept, "the socket learns of it");
    assert!(
        out.inject.is_empty(),
        "the announcement's start is never delivered"
    );
}

#[test]
fn a_bad_init_resets_both_ends_and_delivers_nothing() {
    let mut c = Conn::new(1460);
    let mut bytes = ANNOUNCEMENT.to_vec();
    bytes.extend_from_slice(
        &Message::Error {
            conn_id: None,
            code: ErrorCode::Refused,
        }
        .encode(),
    );
    let out = c.client(from_client(0, 0, &bytes, data()));
    assert!(matches!(out.event, Some(Event::Failed(_))), "{out:?}");
    assert_eq!(out.verdict, Verdict::Drop);
    assert_eq!(out.inject.len(), 2);
    let to_client = view(&out.inject[0]);
    assert_eq!((to_client.src(), to_client.dst()), (server(), client()));
    assert!(to_client.tcp().flags().rst());
    let to_socket = view(&out.inject[1]);
    assert_eq!((to_socket.src(), to_socket.dst()), (client(), server()));
    assert!(to_socket.tcp().flags().rst());
    assert_eq!(
        to_socket.tcp().seq(),
        CLIENT_ISN + 1,
        "at the socket's next byte"
    );
    assert!(to_socket.tcp_payload().is_empty());
}

#[test]
fn an_init_that_never_completes_fails_after_the_limit() {
    let mut c = Conn::new(1460);
    let out = c.client(from_client(0, 0, &ANNOUNCEMENT, data()));
    assert!(out.event.is_none());
    let at = c.port.poll_timeout().unwrap();
    assert_eq!(at, c.now + INIT_LIMIT);
    let out = c.port.handle_timeout(at);
    assert!(matches!(out.event, Some(Event::Failed(_))), "{out:?}");
}

#[test]
fn resets_end_a_translated_flow_and_are_translated() {
    let mut c = Conn::new(1460);
    let (_, _, d) = initialise(&mut c, 1460, &[0]);
    let out = c
        .port
        .on_server(c.now, from_server(0, 0, &[], Flags::RST | Flags::ACK));
    assert!(matches!(out.event, Some(Event::Ended)));
    let p = rewritten(&out);
    assert_eq!(p.tcp().ack(), CLIENT_ISN + 1 + d);
    assert!(p.tcp().seq() > SERVER_ISN + 1);
}

#[test]
fn the_socket_ending_lingers_a_translated_flow_but_ends_a_classifying_one() {
    let mut c = Conn::new(1460);
    assert!(c.port.socket_gone(c.now), "nothing to translate yet");
    let mut c = Conn::new(1460);
    initialise(&mut c, 1460, &[0]);
    assert!(!c.port.socket_gone(c.now));
    let out = c.port.handle_timeout(c.now + LINGER);
    assert!(matches!(out.event, Some(Event::Ended)));
}
