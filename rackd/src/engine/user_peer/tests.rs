//! The engine with a listed user-level EDP server: the verdicts, queueing and injections of a
//! whole in-band handshake, a negative probe, and a refused InitAck.

use super::*;
use edp::crypto::DeterministicEntropy;
use edp::identity::PeerTrust;
use tcpseq::{Segment, TcpIpPacket, TcpOption};

const CLIENT_ISN: SeqNum = SeqNum(70_000);
const SERVER_ISN: SeqNum = SeqNum(9_000_000);

fn key() -> FlowKey {
    FlowKey {
        local: "192.0.2.2:40000".parse().unwrap(),
        remote: "198.51.100.2:7000".parse().unwrap(),
    }
}

fn engine() -> Engine {
    let cfg = EngineConfig {
        edp_servers: vec!["198.51.100.0/24".parse().unwrap()],
        ..EngineConfig::default()
    };
    Engine::new(5, Box::new(DeterministicEntropy::new(5)), cfg)
}

fn local_syn() -> Vec<u8> {
    let opts = [
        TcpOption::Mss(1460),
        TcpOption::Timestamps { tsval: 7, tsecr: 0 },
    ];
    Segment::syn(key().local, key().remote, CLIENT_ISN, 64240, &opts)
        .to_vec()
        .unwrap()
}

fn syn(ack: bool, seq: SeqNum) -> SynSeen {
    SynSeen {
        dir: if ack { Dir::In } else { Dir::Out },
        key: key(),
        ack,
        hello: None,
        seq,
    }
}

fn seen(packet: &[u8]) -> SegmentSeen {
    SegmentSeen::of(&TcpIpPacket::new_checked(packet).unwrap())
}

fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

fn injected(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Inject(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn queued(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Queue { on, .. } => Some(*on),
            _ => None,
        })
        .collect()
}

/// Up to the server's SYN-ACK: returns the Init rackd sent and the wire ISN.
fn handshake(e: &mut Engine, now: Instant) -> (edp::message::Init, SeqNum) {
    let v = e.on_syn_packet(now, syn(false, CLIENT_ISN), || Some(local_syn()));
    assert_eq!(v, SynVerdict::Drop);
    assert_eq!(drain(e), vec![Action::ProbeEdp { key: key() }]);
    // The socket's retransmission during the probe: dropped, nothing sent.
    let v = e.on_syn_packet(now, syn(false, CLIENT_ISN), || Some(local_syn()));
    assert_eq!(v, SynVerdict::Drop);
    assert!(drain(e).is_empty());
    assert_eq!(e.flows().count(), 1, "listed while negotiating");

    e.on_edp_probe(now, key(), true);
    let actions = drain(e);
    assert_eq!(queued(&actions), vec![true]);
    let sent = injected(&actions);
    assert_eq!(sent.len(), 1);
    let wire_isn = TcpIpPacket::new_checked(&sent[0][..]).unwrap().tcp().seq();
    // A retransmission now sends rackd's SYN again.
    e.on_syn_packet(now, syn(false, CLIENT_ISN), || Some(local_syn()));
    assert_eq!(injected(&drain(e)), sent);

    let syn_ack = Segment::syn_ack(
        key().remote,
        key().local,
        SERVER_ISN,
        wire_isn + 1,
        65000,
        &[TcpOption::Mss(1460)],
    )
    .to_vec()
    .unwrap();
    let v = e.on_syn_packet(now, syn(true, SERVER_ISN), || Some(syn_ack));
    assert_eq!(v, SynVerdict::Drop);
    let mut stream = Vec::new();
    for p in injected(&drain(e)) {
        stream.extend_from_slice(TcpIpPacket::new_checked(&p[..]).unwrap().tcp_payload());
    }
    assert_eq!(wire_isn + stream.len() as u32, CLIENT_ISN);
    assert_eq!(stream[..1024], edp::edp::ANNOUNCEMENT[..]);
    let Ok(Some((Message::Init(init), _))) = Message::decode(&stream[1024..]) else {
        panic!("no Init after the announcement");
    };
    (init, wire_isn)
}

fn answer(e: &mut Engine, now: Instant, frame: &[u8]) -> SegmentVerdict {
    let p = Segment::data(
        key().remote,
        key().local,
        SERVER_ISN + 1,
        CLIENT_ISN + 1,
        500,
        frame,
    )
    .to_vec()
    .unwrap();
    e.on_segment(now, Dir::In, key(), &seen(&p), || Some(p.clone()))
}

fn init_ack(init: &edp::message::Init) -> edp::message::InitAck {
    let (ack, _) = init::respond(
        &mut DeterministicEntropy::new(11),
        init,
        &LocalParams::default(),
        "client",
        &mut PeerTrust::Opportunistic,
    )
    .unwrap();
    ack
}

#[test]
fn a_valid_init_ack_connects_without_heartbeats() {
    let (mut e, now) = (engine(), Instant::now());
    let (init, _) = handshake(&mut e, now);
    let frame = Message::InitAck(init_ack(&init)).encode();
    assert_eq!(answer(&mut e, now, &frame), SegmentVerdict::Drop);
    let actions = drain(&mut e);
    assert_eq!(
        queued(&actions),
        vec![false],
        "out of the queue once in step"
    );
    let sent = injected(&actions);
    let p = TcpIpPacket::new_checked(&sent[1][..]).unwrap();
    assert!(p.tcp().flags().syn() && p.tcp().flags().ack());
    assert_eq!(p.tcp().seq(), SERVER_ISN + frame.len() as u32);
    assert_eq!(p.tcp().ack(), CLIENT_ISN + 1);
    let flow = e.flow(&key()).unwrap();
    assert_eq!(flow.state, State::Connected);
    assert!(flow.user_peer);
    assert_eq!(flow.id_hex(), init.conn_id.to_string());
    assert!(
        e.peers.is_empty(),
        "no heartbeats to a peer without a daemon"
    );
    assert_eq!(e.last_heartbeat(flow), None);
    assert!(e.saved_flows().is_empty(), "a restart cannot resume it");
    // Later packets pass untouched.
    let later = Segment::data(
        key().remote,
        key().local,
        SERVER_ISN + 99,
        CLIENT_ISN + 1,
        1,
        b"x",
    )
    .to_vec()
    .unwrap();
    let v = e.on_segment(now, Dir::In, key(), &seen(&later), || None);
    assert_eq!(v, SegmentVerdict::Accept);
    e.handle_timeout(now + Duration::from_secs(30));
    assert!(
        !drain(&mut e)
            .iter()
            .any(|a| matches!(a, Action::Send { .. })),
        "nothing is sent on the daemon channel"
    );
}

#[test]
fn a_bad_init_ack_resets_both_ends() {
    let (mut e, now) = (engine(), Instant::now());
    let (init, _) = handshake(&mut e, now);
    let mut ack = init_ack(&init);
    ack.confirm[0] ^= 1;
    let frame = Message::InitAck(ack).encode();
    answer(&mut e, now, &frame);
    let actions = drain(&mut e);
    assert_eq!(queued(&actions), vec![false]);
    let resets = injected(&actions);
    assert_eq!(resets.len(), 2);
    for r in &resets {
        assert!(TcpIpPacket::new_checked(&r[..])
            .unwrap()
            .tcp()
            .flags()
            .rst());
    }
    assert!(e.flow(&key()).is_none());
    assert_eq!(e.counters.init_failures, 1);

    // Another connection id is refused the same way.
    let (mut e, now) = (engine(), Instant::now());
    let (init, _) = handshake(&mut e, now);
    let mut ack = init_ack(&init);
    ack.conn_id = ConnId(ack.conn_id.0 ^ 1);
    answer(&mut e, now, &Message::InitAck(ack).encode());
    assert_eq!(injected(&drain(&mut e)).len(), 2);
    assert!(e.flow(&key()).is_none());
}

#[test]
fn a_negative_probe_sends_the_syn_with_the_option() {
    let (mut e, now) = (engine(), Instant::now());
    e.on_syn_packet(now, syn(false, CLIENT_ISN), || Some(local_syn()));
    drain(&mut e);
    e.on_edp_probe(now, key(), false);
    let sent = injected(&drain(&mut e));
    assert_eq!(sent.len(), 1);
    let p = TcpIpPacket::new_checked(&sent[0][..]).unwrap();
    assert!(p.checksums_ok());
    assert_eq!(p.tcp().seq(), CLIENT_ISN, "the socket's own SYN");
    assert!(p
        .tcp_options()
        .map_while(Result::ok)
        .any(|o| matches!(o, TcpOption::Experimental { exid, .. } if exid == edp::option::EXID)));
    // From here on it is an ordinary negotiation.
    let v = e.on_syn_packet(now, syn(false, CLIENT_ISN), || Some(local_syn()));
    assert!(matches!(v, SynVerdict::AddHello { .. }));
}

#[test]
fn a_probe_that_never_reports_falls_back_to_the_plain_path() {
    let (mut e, now) = (engine(), Instant::now());
    e.on_syn_packet(now, syn(false, CLIENT_ISN), || Some(local_syn()));
    drain(&mut e);
    let mut t = now;
    while injected(&drain(&mut e)).is_empty() {
        t = e.poll_timeout().expect("a timer while probing");
        assert!(t <= now + Duration::from_secs(11), "the probe is given up");
        e.handle_timeout(t);
    }
    assert!(t >= now + Duration::from_secs(10));
    let v = e.on_syn_packet(t, syn(false, CLIENT_ISN), || Some(local_syn()));
    assert!(matches!(v, SynVerdict::AddHello { .. }));
}

#[test]
fn unlisted_destinations_are_not_probed() {
    let (mut e, now) = (engine(), Instant::now());
    let mut s = syn(false, CLIENT_ISN);
    s.key.remote = "203.0.113.9:7000".parse().unwrap();
    let v = e.on_syn_packet(now, s, || Some(local_syn()));
    assert!(matches!(v, SynVerdict::AddHello { .. }));
    assert!(drain(&mut e).is_empty());
}

#[test]
fn a_socket_that_ends_during_the_handshake_leaves_the_queue() {
    let (mut e, now) = (engine(), Instant::now());
    handshake(&mut e, now);
    e.on_socket_gone(now, &key());
    assert_eq!(queued(&drain(&mut e)), vec![false]);
    assert!(e.flow(&key()).is_none());
}
