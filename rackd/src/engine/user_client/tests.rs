//! The engine with `edp_ports`: which SYNs are looked at, the queueing, and the flow a plain
//! or an enhanced client leaves behind.

use super::*;
use edp::crypto::DeterministicEntropy;
use edp::edp::ANNOUNCEMENT;
use edp::init::Initiator;
use tcpseq::{Flags, Segment, TcpIpPacket, TcpOption};

const CLIENT_ISN: SeqNum = SeqNum(5_000);
const SERVER_ISN: SeqNum = SeqNum(80_000);

/// The server socket's view: local is the listening port.
fn key() -> FlowKey {
    FlowKey {
        local: "192.0.2.1:8080".parse().unwrap(),
        remote: "198.51.100.7:45000".parse().unwrap(),
    }
}

fn engine(ports: Vec<u16>) -> Engine {
    let cfg = EngineConfig {
        edp_ports: ports,
        ..EngineConfig::default()
    };
    Engine::new(5, Box::new(DeterministicEntropy::new(5)), cfg)
}

fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

/// The queue changes among `actions`: an `edp_ports` flow is only ever queued strictly (its
/// packets must not pass unrewritten while rackd is gone).
fn queued(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::QueueStrictly { on, .. } => Some(*on),
            Action::Queue { .. } => panic!("queued with bypass: {a:?}"),
            _ => None,
        })
        .collect()
}

fn seen(packet: &[u8]) -> SegmentSeen {
    SegmentSeen::of(&TcpIpPacket::new_checked(packet).unwrap())
}

/// The client's SYN and the socket's SYN-ACK, both passing.
fn handshake(e: &mut Engine, now: Instant, hello: Option<u32>) -> Vec<Action> {
    let opts = [TcpOption::Mss(1460)];
    let syn = Segment::syn(key().remote, key().local, CLIENT_ISN, 64240, &opts)
        .to_vec()
        .unwrap();
    let seen_syn = SynSeen {
        dir: Dir::In,
        key: key(),
        ack: false,
        hello,
        seq: CLIENT_ISN,
    };
    assert_eq!(
        e.on_syn_packet(now, seen_syn, || Some(syn)),
        SynVerdict::Pass
    );
    let syn_ack = Segment::syn_ack(
        key().local,
        key().remote,
        SERVER_ISN,
        CLIENT_ISN + 1,
        65000,
        &opts,
    )
    .to_vec()
    .unwrap();
    let seen_syn_ack = SynSeen {
        dir: Dir::Out,
        key: key(),
        ack: true,
        hello: None,
        seq: SERVER_ISN,
    };
    let v = e.on_syn_packet(now, seen_syn_ack, || Some(syn_ack));
    let echoed = matches!(v, SynVerdict::AddHello { .. });
    assert!(
        v == SynVerdict::Pass || (hello.is_some() && echoed),
        "{v:?}"
    );
    drain(e)
}

fn client_data(offset: u32, payload: &[u8]) -> Vec<u8> {
    Segment::new(
        key().remote,
        key().local,
        CLIENT_ISN + 1 + offset,
        SERVER_ISN + 1,
        Flags::ACK | Flags::PSH,
    )
    .with_payload(payload)
    .to_vec()
    .unwrap()
}

fn from_client(e: &mut Engine, now: Instant, p: Vec<u8>) -> SegmentVerdict {
    e.on_segment(now, Dir::In, key(), &seen(&p), || Some(p.clone()))
}

#[test]
fn without_edp_ports_an_option_less_syn_is_not_queued() {
    let (mut e, now) = (engine(Vec::new()), Instant::now());
    let actions = handshake(&mut e, now, None);
    assert!(queued(&actions).is_empty(), "{actions:?}");
    assert!(e.flow(&key()).is_none_or(|f| f.edp_port.is_none()));
}

#[test]
fn a_rackd_peer_on_an_edp_port_negotiates_as_usual() {
    let (mut e, now) = (engine(vec![8080]), Instant::now());
    let actions = handshake(&mut e, now, Some(0xabcd));
    assert!(queued(&actions).is_empty(), "{actions:?}");
    assert!(e.flow(&key()).is_some_and(|f| f.edp_port.is_none()));
}

#[test]
fn a_plain_client_is_released_with_its_bytes() {
    let (mut e, now) = (engine(vec![8080]), Instant::now());
    assert_eq!(queued(&handshake(&mut e, now, None)), [true]);
    assert_eq!(e.flows().count(), 0, "not listed while classifying");
    let get = client_data(0, b"GET /");
    assert_eq!(from_client(&mut e, now, get.clone()), SegmentVerdict::Drop);
    let actions = drain(&mut e);
    assert_eq!(queued(&actions), [false]);
    assert!(actions.contains(&Action::Inject(get)));
    assert!(actions.contains(&Action::Released { key: key() }));
    assert!(e.flow(&key()).is_none());
}

#[test]
fn an_edp_client_is_connected_with_its_id_and_translated_until_its_socket_goes() {
    let (mut e, now) = (engine(vec![8080]), Instant::now());
    handshake(&mut e, now, None);
    let id = edp::message::ConnId(0x1234_5678_9abc_def0);
    let (_, init) = Initiator::start(
        &mut DeterministicEntropy::new(1),
        Some(id),
        &edp::init::LocalParams::default(),
    )
    .unwrap();
    let mut bytes = ANNOUNCEMENT.to_vec();
    bytes.extend_from_slice(&Message::Init(init).encode());
    assert_eq!(
        from_client(&mut e, now, client_data(0, &bytes)),
        SegmentVerdict::Drop
    );
    let actions = drain(&mut e);
    assert!(queued(&actions).is_empty(), "stays queued: {actions:?}");
    let flow = e.flow(&key()).unwrap();
    assert_eq!(flow.state, State::Connected);
    assert!(flow.user_peer && flow.session.is_some());
    assert_eq!(flow.id_hex(), id.to_string());
    assert!(e.flows().any(|f| f.key == key()), "listed in status");
    // The id is the client's choice, so it indexes nothing: commands cannot reach the flow by
    // it, and one client cannot take another's id.
    let refused = e.suspend_by_id(now, &id.to_string());
    assert!(
        matches!(refused, Err(CommandError::UnknownId(_))),
        "{refused:?}"
    );
    assert!(
        e.pin(now, key()).is_err(),
        "a hold would speak untranslated"
    );
    let refused = e.checkpoint_flow(now, &key());
    assert!(
        matches!(refused, Err(CommandError::NotManaged { .. })),
        "{refused:?}"
    );
    assert_eq!(e.flow(&key()).unwrap().state, State::Connected);
    let v = from_client(&mut e, now, client_data(bytes.len() as u32, b"x"));
    let SegmentVerdict::Rewrite(p) = v else {
        panic!("{v:?}");
    };
    assert_eq!(
        TcpIpPacket::new_checked(&p[..]).unwrap().tcp().seq(),
        CLIENT_ISN + 1
    );
    // The socket ends: translation lingers, then the flow is gone and out of the queue.
    e.on_socket_gone(now, &key());
    assert!(e.flow(&key()).is_some());
    e.handle_timeout(now + Duration::from_secs(3));
    assert!(e.flow(&key()).is_none());
    assert_eq!(queued(&drain(&mut e)), [false]);
}
