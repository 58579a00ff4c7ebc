use super::*;
use crate::crypto::DeterministicEntropy;
use crate::identity::HostIdentity;
use crate::message::{Capabilities, ErrorCode, Message};
use std::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client(now: Instant) -> EdpClient {
    let config = ClientConfig {
        params: crate::init::LocalParams {
            capabilities: Capabilities::ALL,
            ..Default::default()
        },
        ..Default::default()
    };
    EdpClient::new(now, config, &mut DeterministicEntropy::new(1)).unwrap()
}

fn server(now: Instant) -> ServerConn {
    let config = ServerConfig {
        params: crate::init::LocalParams {
            capabilities: Capabilities::RESUME,
            ..Default::default()
        },
        ..Default::default()
    };
    ServerConn::new(now, config, "client")
}

fn actions(c: &mut EdpClient) -> Vec<ClientAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn server_actions(s: &mut ServerConn) -> Vec<ServerAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// A client whose probe is half-closed, connect time 10 ms.
fn probing(t0: Instant) -> EdpClient {
    let mut c = client(t0);
    assert_eq!(actions(&mut c), [ClientAction::Connect(Channel::Probe)]);
    c.handle(t0 + ms(10), ClientEvent::Connected(Channel::Probe));
    assert_eq!(
        actions(&mut c),
        [ClientAction::ShutdownWrite(Channel::Probe)]
    );
    c
}

/// A client that saw the announcement and connected its main connection.
fn announcing(t0: Instant) -> (EdpClient, Vec<u8>) {
    let mut c = probing(t0);
    c.handle(
        t0 + ms(20),
        ClientEvent::Data(Channel::Probe, &ANNOUNCEMENT),
    );
    assert_eq!(
        actions(&mut c),
        [
            ClientAction::Close(Channel::Probe),
            ClientAction::Connect(Channel::Main)
        ]
    );
    c.handle(t0 + ms(30), ClientEvent::Connected(Channel::Main));
    let [ClientAction::Send(Channel::Main, bytes)] = &actions(&mut c)[..] else {
        panic!("expected one send on main");
    };
    (c, bytes.clone())
}

fn fallback(c: &mut EdpClient) -> Fallback {
    assert!(c.is_done());
    assert_eq!(c.poll_timeout(), None);
    match c.outcome() {
        Some(ClientOutcome::Plain(reason)) => reason,
        other => panic!("expected plain fallback, got {other:?}"),
    }
}

// ---- timing ----

#[test]
fn probe_timeout_scales_with_connect_time_within_bounds() {
    let t = ProbeTiming::default();
    assert_eq!(t.timeout(Duration::ZERO), ms(200));
    assert_eq!(t.timeout(ms(100)), ms(400));
    assert_eq!(t.timeout(Duration::from_secs(10)), Duration::from_secs(3));
    assert_eq!(t.timeout(Duration::MAX), Duration::from_secs(3));
    let odd = ProbeTiming {
        multiplier: 2,
        floor: ms(500),
        ceiling: ms(100),
    };
    assert_eq!(
        odd.timeout(ms(1)),
        ms(500),
        "a ceiling below the floor yields the floor"
    );
}

#[test]
fn announcement_is_the_committed_constant() {
    let digest = ring::digest::digest(&ring::digest::SHA256, &ANNOUNCEMENT);
    assert_eq!(
        crate::identity::hex(digest.as_ref()),
        "9fd97277dc6eeb77da5917195d1e0dbbded8be26398cdecbae81ff90f0408419"
    );
}

// ---- client: probe ----

#[test]
fn client_starts_by_connecting_the_probe() {
    let t0 = Instant::now();
    let mut c = client(t0);
    assert_eq!(c.state(), ClientState::ConnectingProbe);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(actions(&mut c), [ClientAction::Connect(Channel::Probe)]);
}

#[test]
fn probe_wait_is_derived_from_the_measured_connect_time() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle(t0 + ms(150), ClientEvent::Connected(Channel::Probe));
    assert_eq!(c.state(), ClientState::ExpectAnnouncement { matched: 0 });
    assert_eq!(c.poll_timeout(), Some(t0 + ms(150) + ms(600)));
}

#[test]
fn probe_connect_failure_and_timeout_fall_back() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle(t0, ClientEvent::ConnectFailed(Channel::Probe));
    assert!(matches!(fallback(&mut c), Fallback::ProbeConnectFailed));

    let mut c = client(t0);
    actions(&mut c);
    c.handle_timeout(t0 + ms(4999));
    assert_eq!(c.state(), ClientState::ConnectingProbe);
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(actions(&mut c), [ClientAction::Close(Channel::Probe)]);
    assert!(matches!(fallback(&mut c), Fallback::ProbeConnectTimeout));
}

#[test]
fn announcement_in_pieces_is_recognised() {
    let t0 = Instant::now();
    let mut c = probing(t0);
    for (i, chunk) in ANNOUNCEMENT.chunks(100).enumerate() {
        assert_eq!(
            c.state(),
            ClientState::ExpectAnnouncement { matched: i * 100 }
        );
        c.handle(t0 + ms(11), ClientEvent::Data(Channel::Probe, chunk));
    }
    assert_eq!(c.state(), ClientState::ConnectingMain);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(11) + Duration::from_secs(5)));
}

#[test]
fn any_other_answer_to_the_probe_means_plain() {
    let t0 = Instant::now();
    // An HTTP server's error page.
    let mut c = probing(t0);
    c.handle(
        t0,
        ClientEvent::Data(Channel::Probe, b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    );
    assert_eq!(actions(&mut c), [ClientAction::Close(Channel::Probe)]);
    assert!(matches!(fallback(&mut c), Fallback::UnexpectedData));
    // The announcement followed by more bytes.
    let mut c = probing(t0);
    let mut long = ANNOUNCEMENT.to_vec();
    long.push(0);
    c.handle(t0, ClientEvent::Data(Channel::Probe, &long));
    assert!(matches!(fallback(&mut c), Fallback::UnexpectedData));
    // A correct prefix, then a wrong byte.
    let mut c = probing(t0);
    c.handle(t0, ClientEvent::Data(Channel::Probe, &ANNOUNCEMENT[..500]));
    c.handle(t0, ClientEvent::Data(Channel::Probe, &[!ANNOUNCEMENT[500]]));
    assert!(matches!(fallback(&mut c), Fallback::UnexpectedData));
}

#[test]
fn probe_closed_early_means_plain() {
    let t0 = Instant::now();
    // An echo server: nothing to echo, closes when the client does.
    let mut c = probing(t0);
    c.handle(t0, ClientEvent::Eof(Channel::Probe));
    assert!(matches!(
        fallback(&mut c),
        Fallback::ClosedEarly { received: 0 }
    ));
    let mut c = probing(t0);
    c.handle(t0, ClientEvent::Data(Channel::Probe, &ANNOUNCEMENT[..1023]));
    c.handle(t0, ClientEvent::Eof(Channel::Probe));
    assert!(matches!(
        fallback(&mut c),
        Fallback::ClosedEarly { received: 1023 }
    ));
}

#[test]
fn silent_server_times_out_the_probe() {
    let t0 = Instant::now();
    let mut c = probing(t0);
    let deadline = t0 + ms(10) + ms(200);
    assert_eq!(c.poll_timeout(), Some(deadline));
    c.handle_timeout(deadline - ms(1));
    assert!(!c.is_done());
    c.handle_timeout(deadline);
    assert_eq!(actions(&mut c), [ClientAction::Close(Channel::Probe)]);
    assert!(matches!(fallback(&mut c), Fallback::ProbeTimeout(d) if d == ms(200)));
}

// ---- client: main connection ----

#[test]
fn main_connection_sends_announcement_then_init() {
    let t0 = Instant::now();
    let (c, bytes) = announcing(t0);
    assert_eq!(c.state(), ClientState::ExpectInitAck);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(30) + Duration::from_secs(5)));
    assert_eq!(bytes[..ANNOUNCEMENT_LEN], ANNOUNCEMENT);
    let (message, used) = Message::decode(&bytes[ANNOUNCEMENT_LEN..])
        .unwrap()
        .unwrap();
    assert!(matches!(message, Message::Init(_)));
    assert_eq!(ANNOUNCEMENT_LEN + used, bytes.len());
}

#[test]
fn main_connect_failure_and_timeout_fall_back() {
    let t0 = Instant::now();
    let mut c = probing(t0);
    c.handle(t0, ClientEvent::Data(Channel::Probe, &ANNOUNCEMENT));
    actions(&mut c);
    c.handle(t0, ClientEvent::ConnectFailed(Channel::Main));
    assert_eq!(actions(&mut c), [ClientAction::Close(Channel::Main)]);
    assert!(matches!(fallback(&mut c), Fallback::MainConnectFailed));

    let mut c = probing(t0);
    c.handle(t0, ClientEvent::Data(Channel::Probe, &ANNOUNCEMENT));
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert!(matches!(fallback(&mut c), Fallback::MainConnectTimeout));
}

#[test]
fn init_ack_problems_fall_back() {
    let t0 = Instant::now();
    let error = Message::Error {
        conn_id: None,
        code: ErrorCode::Refused,
    }
    .encode();
    let cases: [(&str, &[u8]); 3] = [
        ("error", &error),
        ("garbage", &[0xFF, 0xFF, 0]),
        ("version", &[0, 1, 9]),
    ];
    for (name, reply) in cases {
        let (mut c, _) = announcing(t0);
        c.handle(t0, ClientEvent::Data(Channel::Main, reply));
        assert_eq!(
            actions(&mut c),
            [ClientAction::Close(Channel::Main)],
            "{name}"
        );
        assert!(
            matches!(fallback(&mut c), Fallback::InitFailed(_)),
            "{name}"
        );
    }
    let (mut c, _) = announcing(t0);
    c.handle(t0, ClientEvent::Eof(Channel::Main));
    assert!(matches!(fallback(&mut c), Fallback::InitFailed(_)));
    let (mut c, _) = announcing(t0);
    c.handle(t0, ClientEvent::Data(Channel::Main, &[0, 40]));
    assert!(!c.is_done(), "a partial frame waits for more");
    c.handle_timeout(t0 + ms(30) + Duration::from_secs(5));
    assert!(matches!(fallback(&mut c), Fallback::InitTimeout));
}

#[test]
fn events_after_the_outcome_change_nothing() {
    let t0 = Instant::now();
    let mut c = probing(t0);
    c.handle(t0, ClientEvent::Eof(Channel::Probe));
    let _ = fallback(&mut c);
    actions(&mut c);
    c.handle(t0, ClientEvent::Data(Channel::Probe, &ANNOUNCEMENT));
    c.handle(t0, ClientEvent::Connected(Channel::Main));
    c.handle_timeout(t0 + Duration::from_secs(100));
    assert_eq!(actions(&mut c), []);
    assert!(c.outcome().is_none());
    // Events for the wrong channel are ignored too.
    let mut c = probing(t0);
    c.handle(t0, ClientEvent::Data(Channel::Main, b"x"));
    assert_eq!(c.state(), ClientState::ExpectAnnouncement { matched: 0 });
}

// ---- server ----

#[test]
fn server_answers_a_probe_with_the_announcement_and_closes() {
    let t0 = Instant::now();
    let mut s = server(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + ms(500)));
    s.handle(t0, ServerEvent::Eof, &mut DeterministicEntropy::new(2));
    assert_eq!(
        server_actions(&mut s),
        [
            ServerAction::Send(ANNOUNCEMENT.to_vec()),
            ServerAction::Close
        ]
    );
    assert!(matches!(s.outcome(), Some(ServerOutcome::ProbeAnswered)));
    assert_eq!(s.poll_timeout(), None);
}

fn plain(s: &mut ServerConn) -> (Vec<u8>, bool) {
    assert_eq!(
        server_actions(s),
        [],
        "plain connections are not written to"
    );
    match s.outcome() {
        Some(ServerOutcome::Plain { prefix, eof }) => (prefix, eof),
        other => panic!("expected plain, got {other:?}"),
    }
}

#[test]
fn server_hands_other_connections_through_with_their_bytes() {
    let t0 = Instant::now();
    let rng = &mut DeterministicEntropy::new(3);
    let mut s = server(t0);
    s.handle(t0, ServerEvent::Data(b"GET / HTTP/1.0\r\n"), rng);
    assert_eq!(plain(&mut s), (b"GET / HTTP/1.0\r\n".to_vec(), false));

    let mut s = server(t0);
    s.handle(t0, ServerEvent::Data(&ANNOUNCEMENT[..10]), rng);
    assert_eq!(s.state(), ServerState::Classifying { matched: 10 });
    s.handle(t0, ServerEvent::Data(b"zz"), rng);
    let mut expected = ANNOUNCEMENT[..10].to_vec();
    expected.extend_from_slice(b"zz");
    assert_eq!(plain(&mut s), (expected, false));

    let mut s = server(t0);
    s.handle(t0, ServerEvent::Data(&ANNOUNCEMENT[..3]), rng);
    s.handle(t0, ServerEvent::Eof, rng);
    assert_eq!(plain(&mut s), (ANNOUNCEMENT[..3].to_vec(), true));
}

#[test]
fn silent_client_is_handed_through_after_the_classify_timeout() {
    let t0 = Instant::now();
    let mut s = server(t0);
    s.handle_timeout(t0 + ms(499));
    assert_eq!(s.state(), ServerState::Classifying { matched: 0 });
    s.handle_timeout(t0 + ms(500));
    assert_eq!(plain(&mut s), (vec![], false));
}

/// Client bytes for the main connection and the server's reaction to them, fed in `chunk`s until
/// the machine is done (like the I/O layer, which then hands the connection on). With an
/// Enhanced outcome, the bytes not fed are appended to its `leftover`.
fn serve(bytes: &[u8], chunk: usize) -> (ServerConn, Vec<ServerAction>, Option<ServerOutcome>) {
    let t0 = Instant::now();
    let mut s = server(t0);
    let rng = &mut DeterministicEntropy::new(4);
    let mut pieces = bytes.chunks(chunk);
    for piece in pieces.by_ref() {
        s.handle(t0, ServerEvent::Data(piece), rng);
        if s.is_done() {
            break;
        }
    }
    let actions = server_actions(&mut s);
    let mut outcome = s.outcome();
    if let Some(ServerOutcome::Enhanced { leftover, .. }) = &mut outcome {
        leftover.extend(pieces.flatten());
    }
    (s, actions, outcome)
}

#[test]
fn announced_client_is_initialised_with_one_or_many_reads() {
    for chunk in [1, 7, 1024, 100_000] {
        let t0 = Instant::now();
        let (mut c, mut bytes) = announcing(t0);
        bytes.extend_from_slice(b"app data");
        let (_, sent, outcome) = serve(&bytes, chunk);
        let Some(ServerOutcome::Enhanced {
            session: server_session,
            leftover,
        }) = outcome
        else {
            panic!("chunk {chunk}: expected enhanced, got {outcome:?}");
        };
        assert_eq!(leftover, b"app data");
        let [ServerAction::Send(ack)] = &sent[..] else {
            panic!("{sent:?}")
        };
        let mut reply = ack.clone();
        reply.extend_from_slice(b"server app data");
        c.handle(t0, ClientEvent::Data(Channel::Main, &reply));
        assert_eq!(actions(&mut c), []);
        let Some(ClientOutcome::Enhanced { session, leftover }) = c.outcome() else {
            panic!("client not enhanced");
        };
        assert_eq!(leftover, b"server app data");
        assert_eq!(session.key_id(), server_session.key_id());
        assert_eq!(session.capabilities, Capabilities::RESUME);
    }
}

#[test]
fn announced_client_with_bad_init_is_refused() {
    let mut bytes = ANNOUNCEMENT.to_vec();
    bytes.extend_from_slice(
        &Message::Heartbeat {
            conn_id: crate::message::ConnId(1),
            seq: 1,
            echo: 0,
            mac: [0; 16],
        }
        .encode(),
    );
    let (_, actions, outcome) = serve(&bytes, 4096);
    assert!(matches!(outcome, Some(ServerOutcome::Failed(_))));
    let error = Message::Error {
        conn_id: None,
        code: ErrorCode::Malformed,
    }
    .encode();
    assert_eq!(
        actions,
        [ServerAction::Send(error.clone()), ServerAction::Close]
    );

    let mut bytes = ANNOUNCEMENT.to_vec();
    bytes.extend_from_slice(&[0xFF, 0xFF, 1, 2, 3]);
    let (_, actions, outcome) = serve(&bytes, 4096);
    assert!(matches!(outcome, Some(ServerOutcome::Failed(reason)) if reason.contains("65535")));
    assert_eq!(actions, [ServerAction::Send(error), ServerAction::Close]);
}

#[test]
fn announced_client_that_stalls_or_closes_is_dropped() {
    let t0 = Instant::now();
    let (mut s, _, _) = serve(&ANNOUNCEMENT, 4096);
    assert_eq!(s.state(), ServerState::ExpectInit);
    let deadline = s.poll_timeout().unwrap();
    assert!(deadline >= t0 + Duration::from_secs(5));
    s.handle_timeout(deadline);
    assert_eq!(server_actions(&mut s), [ServerAction::Close]);
    assert!(matches!(s.outcome(), Some(ServerOutcome::Failed(_))));

    let (mut s, _, _) = serve(&ANNOUNCEMENT, 4096);
    s.handle(t0, ServerEvent::Eof, &mut DeterministicEntropy::new(5));
    assert_eq!(server_actions(&mut s), [ServerAction::Close]);
    assert!(matches!(s.outcome(), Some(ServerOutcome::Failed(_))));
    s.handle(
        t0,
        ServerEvent::Data(b"late"),
        &mut DeterministicEntropy::new(5),
    );
    assert_eq!(server_actions(&mut s), []);
}

#[test]
fn pinned_host_key_mismatch_makes_both_sides_give_up() {
    use crate::identity::{MemoryPinStore, PeerTrust, PinStore};
    let t0 = Instant::now();
    let rng = &mut DeterministicEntropy::new(6);
    let mut pins = MemoryPinStore::new();
    pins.pin("server", HostIdentity::generate(rng).unwrap().public_key())
        .unwrap();
    let config = ClientConfig {
        trust: std::sync::Arc::new(std::sync::Mutex::new(PeerTrust::TrustOnFirstUse(Box::new(
            pins,
        )))),
        ..Default::default()
    };
    let mut c = EdpClient::new(t0, config, rng).unwrap();
    actions(&mut c);
    c.handle(t0, ClientEvent::Connected(Channel::Probe));
    c.handle(t0, ClientEvent::Data(Channel::Probe, &ANNOUNCEMENT));
    c.handle(t0, ClientEvent::Connected(Channel::Main));
    let sent = actions(&mut c);
    let Some(ClientAction::Send(_, bytes)) = sent.last() else {
        panic!("{sent:?}")
    };
    // The server presents a different identity than the pinned one.
    let identity = std::sync::Arc::new(HostIdentity::generate(rng).unwrap());
    let mut s = ServerConn::new(
        t0,
        ServerConfig {
            params: crate::init::LocalParams {
                identity: Some(identity),
                ..Default::default()
            },
            ..Default::default()
        },
        "client",
    );
    s.handle(t0, ServerEvent::Data(bytes), rng);
    let [ServerAction::Send(ack)] = &server_actions(&mut s)[..] else {
        panic!()
    };
    c.handle(t0, ClientEvent::Data(Channel::Main, ack));
    assert!(matches!(fallback(&mut c), Fallback::InitFailed(e) if e.contains("pinned")));
}
