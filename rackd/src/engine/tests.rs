//! Two engines, one per host, with the wire between them simulated by hand.

use super::*;
use edp::crypto::{DeterministicEntropy, SecretKey};
use tcpseq::{Flags, TcpIpPacket};

const CLIENT_ISN: SeqNum = SeqNum(1_000);
const SERVER_ISN: SeqNum = SeqNum(u32::MAX - 10); // wraps during the test

fn key_at_client() -> FlowKey {
    FlowKey {
        local: "192.0.2.2:40000".parse().unwrap(),
        remote: "198.51.100.2:5000".parse().unwrap(),
    }
}

fn key_at_server() -> FlowKey {
    FlowKey {
        local: "198.51.100.2:5000".parse().unwrap(),
        remote: "192.0.2.2:40000".parse().unwrap(),
    }
}

fn cfg() -> EngineConfig {
    EngineConfig {
        heartbeat_interval: Duration::from_millis(250),
        detect_after: Duration::from_millis(1500),
        reconnect_window: Duration::from_secs(600),
        peer_port: 7113,
        fallback: true,
        beat_base: 0,
        edp_servers: Vec::new(),
        edp_ports: Vec::new(),
    }
}

fn engine(seed: u64) -> Engine {
    Engine::new(seed, Box::new(DeterministicEntropy::new(seed)), cfg())
}

fn syn(dir: Dir, key: FlowKey, ack: bool, hello: Option<u32>, seq: SeqNum) -> SynSeen {
    SynSeen {
        dir,
        key,
        ack,
        hello,
        seq,
    }
}

fn hello_of(v: SynVerdict) -> Option<u32> {
    match v {
        SynVerdict::AddHello { token } => Some(token),
        SynVerdict::Pass | SynVerdict::Drop => None,
    }
}

fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

/// Client and server hosts, a clock, and a path that can be cut per direction.
struct Net {
    c: Engine,
    s: Engine,
    now: Instant,
    c_to_s: bool,
    s_to_c: bool,
    /// The client host's address on the wire (it may move).
    c_addr: IpAddr,
    /// Non-datagram actions seen on each host since the last `take`.
    c_out: Vec<Action>,
    s_out: Vec<Action>,
}

impl Net {
    fn new() -> Self {
        Net {
            c: engine(1),
            s: engine(2),
            now: Instant::now(),
            c_to_s: true,
            s_to_c: true,
            c_addr: key_at_client().local.ip(),
            c_out: Vec::new(),
            s_out: Vec::new(),
        }
    }

    /// SYN and SYN-ACK through both engines; `strip` removes the option on the path.
    fn handshake(&mut self, strip: bool, server_has_rackd: bool) {
        let now = self.now;
        let wire = |h: Option<u32>| if strip { None } else { h };
        let h_syn = wire(hello_of(
            self.c
                .on_syn(now, syn(Dir::Out, key_at_client(), false, None, CLIENT_ISN)),
        ));
        let h_syn_ack = if server_has_rackd {
            let v = self
                .s
                .on_syn(now, syn(Dir::In, key_at_server(), false, h_syn, CLIENT_ISN));
            assert_eq!(v, SynVerdict::Pass);
            wire(hello_of(self.s.on_syn(
                now,
                syn(Dir::Out, key_at_server(), true, None, SERVER_ISN),
            )))
        } else {
            None
        };
        self.c.on_syn(
            now,
            syn(Dir::In, key_at_client(), true, h_syn_ack, SERVER_ISN),
        );
    }

    /// Delivers datagrams back and forth until both engines are quiet.
    fn settle(&mut self) {
        loop {
            let from_c = drain(&mut self.c);
            let from_s = drain(&mut self.s);
            if from_c.is_empty() && from_s.is_empty() {
                return;
            }
            for a in from_c {
                match a {
                    Action::Send { to, from, datagram } => {
                        assert_eq!(to, SocketAddr::new(key_at_client().remote.ip(), 7113));
                        if self.c_to_s {
                            let from = SocketAddr::new(from, 7113);
                            self.s.on_datagram(self.now, from, &datagram);
                        }
                    }
                    other => self.c_out.push(other),
                }
            }
            for a in from_s {
                match a {
                    Action::Send { to, datagram, .. } => {
                        assert_eq!(to.port(), 7113);
                        // Sent to an address the client no longer has: lost.
                        if self.s_to_c && to.ip() == self.c_addr {
                            let from = SocketAddr::new(key_at_server().local.ip(), 7113);
                            self.c.on_datagram(self.now, from, &datagram);
                        }
                    }
                    other => self.s_out.push(other),
                }
            }
        }
    }

    /// Advances time in small steps, running timers and delivering datagrams.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(10);
            self.c.handle_timeout(self.now);
            self.s.handle_timeout(self.now);
            self.settle();
        }
    }

    fn connected() -> Net {
        let mut net = Net::new();
        net.handshake(false, true);
        net.settle();
        net
    }

    fn state(&self, server: bool) -> &'static str {
        let (e, k) = if server {
            (&self.s, key_at_server())
        } else {
            (&self.c, key_at_client())
        };
        e.flow(&k).map_or("gone", |f| f.state.name())
    }
}

fn state_of(e: &Engine, k: FlowKey) -> &'static str {
    e.flow(&k).map_or("gone", |f| f.state.name())
}

// ----- negotiation and initialisation ------------------------------------------------------

#[test]
fn both_ends_with_rackd_initialise_and_agree_on_id_and_key() {
    let net = Net::connected();
    let (cf, sf) = (
        net.c.flow(&key_at_client()).unwrap(),
        net.s.flow(&key_at_server()).unwrap(),
    );
    assert_eq!(
        (cf.state.name(), sf.state.name()),
        ("connected", "connected")
    );
    assert_eq!(cf.id_hex(), sf.id_hex());
    assert_eq!(cf.conn_id(), sf.conn_id());
    assert_eq!(
        cf.session.as_ref().unwrap().key_id(),
        sf.session.as_ref().unwrap().key_id()
    );
    assert_eq!(cf.isn_local, Some(CLIENT_ISN));
    assert_eq!(cf.isn_peer, Some(SERVER_ISN));
    assert_eq!(sf.isn_local, Some(SERVER_ISN));
    assert_eq!(sf.isn_peer, Some(CLIENT_ISN));
}

#[test]
fn lost_init_is_resent_and_lost_init_ack_is_answered_again() {
    let mut net = Net::new();
    net.handshake(false, true);
    net.c_to_s = false;
    net.settle();
    net.run_for(Duration::from_millis(150));
    assert_eq!(net.state(false), "negotiating");
    // Init gets through, InitAck does not.
    net.c_to_s = true;
    net.s_to_c = false;
    net.run_for(Duration::from_millis(500));
    assert_eq!(
        (net.state(false), net.state(true)),
        ("negotiating", "connected")
    );
    // The server answers the repeated Init with the same InitAck.
    net.s_to_c = true;
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        (net.state(false), net.state(true)),
        ("connected", "connected")
    );
    assert_eq!(
        net.c
            .flow(&key_at_client())
            .unwrap()
            .session
            .as_ref()
            .unwrap()
            .key_id(),
        net.s
            .flow(&key_at_server())
            .unwrap()
            .session
            .as_ref()
            .unwrap()
            .key_id()
    );
}

#[test]
fn peer_without_rackd_is_released_and_forgotten() {
    let mut net = Net::new();
    net.handshake(false, false);
    // First the server's daemon is asked (the option may have been stripped on the path).
    let probe = drain(&mut net.c);
    assert!(
        matches!(&probe[..], [Action::Send { to, .. }] if to.ip() == key_at_client().remote.ip()),
        "{probe:?}"
    );
    net.c
        .handle_timeout(net.now + PROBE_LIMIT - Duration::from_millis(10));
    assert_eq!(net.state(false), "negotiating");
    // Released at the first scan after the limit (scans run every SCAN_BUSY meanwhile).
    net.c.handle_timeout(net.now + PROBE_LIMIT + SCAN_BUSY);
    let actions = drain(&mut net.c);
    assert!(actions.contains(&Action::Released {
        key: key_at_client()
    }));
    assert!(net.c.flow(&key_at_client()).is_none());
    assert_eq!(net.c.counters.released, 1);
    assert_eq!(net.c.state_counts()[4], 1);
}

#[test]
fn without_fallback_a_peer_without_rackd_is_released_at_once() {
    let mut net = Net::new();
    net.c = Engine::new(
        1,
        Box::new(DeterministicEntropy::new(1)),
        EngineConfig {
            fallback: false,
            ..cfg()
        },
    );
    net.handshake(false, false);
    assert_eq!(
        drain(&mut net.c),
        [Action::Released {
            key: key_at_client()
        }]
    );
}

#[test]
fn a_stripped_option_is_recovered_by_probing_the_servers_rackd() {
    let mut net = Net::new();
    net.handshake(true, true);
    net.settle();
    assert_eq!(
        (net.state(false), net.state(true)),
        ("connected", "connected")
    );
    let (cf, sf) = (
        net.c.flow(&key_at_client()).unwrap(),
        net.s.flow(&key_at_server()).unwrap(),
    );
    assert_eq!(cf.id_hex(), sf.id_hex());
    assert_eq!(
        cf.session.as_ref().unwrap().key_id(),
        sf.session.as_ref().unwrap().key_id()
    );
    assert_eq!(
        (cf.isn_local, cf.isn_peer),
        (Some(CLIENT_ISN), Some(SERVER_ISN))
    );
    assert_eq!(
        (sf.isn_local, sf.isn_peer),
        (Some(SERVER_ISN), Some(CLIENT_ISN))
    );
    // Monitored like any other: a cut suspends both ends.
    net.c_to_s = false;
    net.s_to_c = false;
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        (net.state(false), net.state(true)),
        ("suspended", "suspended")
    );
}

#[test]
fn a_probe_is_answered_only_from_the_connections_peer() {
    let mut net = Net::new();
    net.handshake(true, true);
    let probe = drain(&mut net.c);
    let [Action::Send { datagram, .. }] = &probe[..] else {
        panic!("{probe:?}")
    };
    let third: SocketAddr = "203.0.113.7:7113".parse().unwrap();
    net.s.on_datagram(net.now, third, datagram);
    assert!(drain(&mut net.s).is_empty());
    assert_eq!(net.s.counters.bad_datagrams, 1);
    assert_eq!(net.state(true), "negotiating");
}

#[test]
fn retransmitted_syn_reuses_the_token() {
    let now = Instant::now();
    let mut c = engine(7);
    let s1 = syn(Dir::Out, key_at_client(), false, None, CLIENT_ISN);
    let a = c.on_syn(now, s1);
    let b = c.on_syn(now + Duration::from_secs(1), s1);
    assert_eq!(a, b);
    assert_eq!(c.flows().count(), 1);
}

#[test]
fn server_syn_with_a_new_token_restarts_negotiation() {
    let now = Instant::now();
    let mut s = engine(3);
    s.on_syn(
        now,
        syn(Dir::In, key_at_server(), false, Some(11), CLIENT_ISN),
    );
    let first = s.flow(&key_at_server()).unwrap().id_hex();
    s.on_syn(
        now,
        syn(Dir::In, key_at_server(), false, Some(11), CLIENT_ISN),
    );
    assert_eq!(s.flow(&key_at_server()).unwrap().id_hex(), first);
    s.on_syn(
        now,
        syn(Dir::In, key_at_server(), false, Some(12), CLIENT_ISN),
    );
    let second = s.flow(&key_at_server()).unwrap().id_hex();
    assert!(second.starts_with("0000000c"), "{second}");
    assert_eq!(s.flows().count(), 1);
}

#[test]
fn a_syn_without_option_is_remembered_briefly_and_its_syn_ack_passes() {
    let now = Instant::now();
    let mut s = engine(3);
    let v = s.on_syn(now, syn(Dir::In, key_at_server(), false, None, CLIENT_ISN));
    assert_eq!(v, SynVerdict::Pass);
    let v = s.on_syn(now, syn(Dir::Out, key_at_server(), true, None, SERVER_ISN));
    assert_eq!(v, SynVerdict::Pass, "no option for a client that sent none");
    // Remembered, but not listed: nothing was offered to it yet.
    assert_eq!((s.flows.len(), s.flows().count()), (1, 0));
    assert_eq!(s.state_counts(), [0; 6]);
    s.handle_timeout(now + PROBE_WAIT);
    assert_eq!(s.flows.len(), 0);
    assert_eq!(s.counters.released, 0);
    assert!(!drain(&mut s)
        .iter()
        .any(|a| matches!(a, Action::Send { .. })));
}

#[test]
fn unsolicited_syn_ack_and_unknown_datagrams_are_ignored() {
    let now = Instant::now();
    let mut c = engine(3);
    c.on_syn(
        now,
        syn(Dir::In, key_at_client(), true, Some(5), SERVER_ISN),
    );
    assert_eq!(c.flows().count(), 0);
    let from = "203.0.113.2:7113".parse().unwrap();
    c.on_datagram(now, from, b"garbage");
    c.on_datagram(now, from, &[0, 2, 1, 6]);
    let stray = Message::heartbeat(
        &edp::crypto::SecretKey::from_bytes([1; 32]),
        ConnId(42),
        1,
        0,
    );
    c.on_datagram(now, from, &stray.encode());
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.counters.bad_datagrams, 2);
}

#[test]
fn stray_syn_does_not_disturb_a_connected_flow() {
    let mut net = Net::connected();
    let now = net.now;
    net.s.on_syn(
        now,
        syn(Dir::In, key_at_server(), false, Some(99), CLIENT_ISN),
    );
    assert_eq!(net.state(true), "connected");
}

#[test]
fn negotiation_times_out_into_release() {
    let now = Instant::now();
    let mut c = engine(1);
    c.on_syn(now, syn(Dir::Out, key_at_client(), false, None, CLIENT_ISN));
    c.handle_timeout(now + NEGOTIATE_TIMEOUT - Duration::from_millis(200));
    assert_eq!(c.flows().count(), 1);
    c.handle_timeout(now + NEGOTIATE_TIMEOUT);
    assert_eq!(c.flows().count(), 0);
    assert_eq!(c.counters.negotiation_timeouts, 1);
    assert_eq!(
        drain(&mut c),
        [Action::Released {
            key: key_at_client()
        }]
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn many_short_negotiations_leave_nothing_behind() {
    let now = Instant::now();
    let mut c = engine(1);
    for port in 0..100_000u32 {
        let mut key = key_at_client();
        key.local.set_port(1024 + (port % 60_000) as u16);
        key.remote.set_port(5000 + (port / 60_000) as u16);
        c.on_syn(now, syn(Dir::Out, key, false, None, CLIENT_ISN));
        c.on_syn(now, syn(Dir::In, key, true, None, SERVER_ISN));
    }
    // Each probes the server's daemon for a while; beyond the cap they are not offered.
    c.handle_timeout(now + PROBE_LIMIT);
    assert_eq!(c.flows().count(), 0);
    assert_eq!(c.counters.released + c.counters.not_offered, 100_000);
    c.handle_timeout(now + NEGOTIATE_TIMEOUT);
    assert_eq!(c.poll_timeout(), None);
    assert!(c.by_conn.is_empty());
    assert_eq!(c.negotiating, 0);
}

#[test]
fn a_syn_flood_is_bounded() {
    let now = Instant::now();
    let mut s = engine(1);
    for i in 0..(MAX_NEGOTIATING as u32 + 1000) {
        let mut key = key_at_server();
        key.remote = SocketAddr::new(
            std::net::Ipv4Addr::from(0xCB00_7100 + (i >> 16)).into(),
            i as u16,
        );
        s.on_syn(now, syn(Dir::In, key, false, Some(i), CLIENT_ISN));
    }
    assert_eq!(s.flows().count(), MAX_NEGOTIATING);
    assert_eq!(s.counters.not_offered, 1000);
    s.handle_timeout(now + NEGOTIATE_TIMEOUT);
    assert_eq!(s.flows().count(), 0);
    assert!(s.by_conn.is_empty());
}

#[test]
fn closed_sockets_are_removed_after_the_grace_period() {
    let mut net = Net::connected();
    let t0 = net.now;
    net.c.on_socket_table(t0, |_| None);
    assert_eq!(net.state(false), "connected", "too young to judge");
    let alive = SocketCounters {
        bytes_sent: 5,
        ..SocketCounters::default()
    };
    net.c.on_socket_table(t0 + SOCKET_GRACE, |_| Some(alive));
    assert_eq!(net.c.flow(&key_at_client()).unwrap().bytes_sent, 5);
    net.c.on_socket_table(t0 + SOCKET_GRACE, |_| None);
    assert_eq!(net.state(false), "gone");
    assert_eq!(net.c.counters.closed, 1);
    assert!(net.c.by_conn.is_empty());
    // Beats go on for a while, so the server does not take silence for a failed path.
    assert_eq!(net.c.peers.len(), 1);
    net.run_for(peer::LINGER + Duration::from_secs(2));
    assert!(
        net.c.peers.is_empty(),
        "the peer is forgotten after the linger"
    );
}

// ----- heartbeats and suspension -----------------------------------------------------------

#[test]
fn heartbeats_keep_a_healthy_connection_connected() {
    let mut net = Net::connected();
    net.run_for(Duration::from_secs(10));
    assert_eq!(
        (net.state(false), net.state(true)),
        ("connected", "connected")
    );
    assert!(net.c_out.is_empty(), "{:?}", net.c_out);
}

/// The client's last connection with the server ended and the client noticed at once; the
/// server notices its own socket's end seconds later (a lost destroy notification). Until then
/// the client's beats must go on, or the server takes the silence for a failed path and keeps
/// the connection as a closed one waiting for a peer that never comes back.
#[test]
fn a_peer_whose_last_connection_ended_keeps_beating_while_the_other_end_catches_up() {
    let mut net = Net::connected();
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.c.on_socket_gone(now, &key_at_client());
    assert_eq!(net.state(false), "gone");
    net.run_for(Duration::from_secs(8));
    assert_eq!(
        net.state(true),
        "connected",
        "no failure seen on the server"
    );
    assert_eq!(net.s.flow(&key_at_server()).unwrap().reconnects, 0);
    let now = net.now;
    net.s.on_socket_gone(now, &key_at_server());
    assert_eq!(net.state(true), "gone", "closed at once, not held");
}

/// One end forgets the peer (its last connection with it ended) while the other still has a
/// connection and remembers the beat numbers it saw: a new connection's beats must count.
#[test]
fn beats_after_one_end_forgot_the_peer_are_not_taken_for_replays() {
    let mut net = Net::connected();
    net.run_for(Duration::from_secs(3));
    let now = net.now;
    net.c.on_socket_gone(now, &key_at_client());
    assert_eq!(net.state(false), "gone");
    assert_eq!(
        net.state(true),
        "connected",
        "the server has not noticed yet"
    );

    // A second connection, from another client port.
    let port = |k: SocketAddr| SocketAddr::new(k.ip(), k.port() + 1);
    let (c2, s2) = (
        FlowKey {
            local: port(key_at_client().local),
            remote: key_at_client().remote,
        },
        FlowKey {
            local: key_at_server().local,
            remote: port(key_at_server().remote),
        },
    );
    let h = hello_of(
        net.c
            .on_syn(now, syn(Dir::Out, c2, false, None, CLIENT_ISN + 9)),
    );
    net.s
        .on_syn(now, syn(Dir::In, s2, false, h, CLIENT_ISN + 9));
    let h2 = hello_of(
        net.s
            .on_syn(now, syn(Dir::Out, s2, true, None, SERVER_ISN + 9)),
    );
    net.c
        .on_syn(now, syn(Dir::In, c2, true, h2, SERVER_ISN + 9));
    net.settle();
    assert_eq!(
        (state_of(&net.c, c2), state_of(&net.s, s2)),
        ("connected", "connected")
    );

    net.run_for(Duration::from_secs(10));
    assert_eq!(
        (state_of(&net.c, c2), state_of(&net.s, s2)),
        ("connected", "connected"),
        "the path works: neither end may suspend the new connection"
    );
    let reconnects = |e: &Engine, k| e.flow(&k).map(|f| f.reconnects);
    assert_eq!(
        (reconnects(&net.c, c2), reconnects(&net.s, s2)),
        (Some(0), Some(0)),
        "no suspension, not even a passing one"
    );
}

#[test]
fn a_cut_path_is_detected_within_the_detection_time_on_both_ends() {
    let mut net = Net::connected();
    net.run_for(Duration::from_secs(1));
    net.c_to_s = false;
    net.s_to_c = false;
    // Silence is counted from the last beat heard, which may be an interval or two old.
    net.run_for(Duration::from_millis(900));
    assert_eq!(net.state(false), "connected");
    net.run_for(Duration::from_millis(610));
    assert_eq!(
        (net.state(false), net.state(true)),
        ("suspended", "suspended")
    );
    let expected = |k| {
        vec![
            Action::Queue {
                key: k,
                wire: k,
                on: true,
            },
            Action::ReadSocket { key: k },
        ]
    };
    assert_eq!(net.c_out, expected(key_at_client()));
    assert_eq!(net.s_out, expected(key_at_server()));
}

#[test]
fn a_one_way_failure_suspends_both_ends() {
    for client_to_server_works in [true, false] {
        let mut net = Net::connected();
        net.run_for(Duration::from_secs(1));
        net.c_to_s = client_to_server_works;
        net.s_to_c = !client_to_server_works;
        net.run_for(Duration::from_secs(2));
        assert_eq!(
            (net.state(false), net.state(true)),
            ("suspended", "suspended"),
            "client to server works: {client_to_server_works}"
        );
    }
}

#[test]
fn forged_heartbeats_do_not_keep_a_dead_path_alive() {
    let mut net = Net::connected();
    net.c_to_s = false;
    net.s_to_c = false;
    let id = net.c.flow(&key_at_client()).unwrap().conn_id().unwrap();
    let forger = edp::crypto::SecretKey::from_bytes([9; 32]);
    for seq in 1..200 {
        net.run_for(Duration::from_millis(10));
        let beat = Message::heartbeat(&forger, id, 1_000 + seq, 1_000 + seq).encode();
        net.c
            .on_datagram(net.now, "198.51.100.2:7113".parse().unwrap(), &beat);
    }
    assert_eq!(net.state(false), "suspended");
    assert!(net.c.counters.bad_datagrams >= 100);
}

/// The start of a hold on the client: the socket's counters in, the first zero-window ACK out.
fn hold_client(net: &mut Net, c: SocketCounters) -> (SeqNum, SeqNum) {
    net.c_out.clear();
    net.c.on_socket(net.now, key_at_client(), Some(c));
    let [Action::Inject(zw)] = &drain(&mut net.c)[..] else {
        panic!("expected one injected packet")
    };
    let p = TcpIpPacket::new_checked(&zw[..]).unwrap();
    assert_eq!(
        (p.src(), p.dst()),
        (key_at_client().remote, key_at_client().local)
    );
    let rcv_nxt = SERVER_ISN + 1 + c.bytes_received as u32;
    let snd_una = CLIENT_ISN + c.bytes_acked as u32;
    assert_eq!(parse(zw), (rcv_nxt, snd_una, 0, None));
    (snd_una, rcv_nxt)
}

fn dupack(seq: SeqNum, ack: SeqNum, ts: (u32, u32)) -> SegmentSeen {
    SegmentSeen {
        seq,
        ack,
        flags: Flags::ACK,
        window: 512,
        timestamps: Some(ts),
        payload_len: 0,
    }
}

fn parse(pkt: &[u8]) -> (SeqNum, SeqNum, u16, Option<(u32, u32)>) {
    let p = TcpIpPacket::new_checked(pkt).unwrap();
    assert!(p.checksums_ok());
    let ts = p.tcp_options().map_while(Result::ok).find_map(|o| match o {
        tcpseq::TcpOption::Timestamps { tsval, tsecr } => Some((tsval, tsecr)),
        _ => None,
    });
    (p.tcp().seq(), p.tcp().ack(), p.tcp().window(), ts)
}

#[test]
fn suspension_answers_the_socket_with_exact_zero_window_acks_and_resumes() {
    let mut net = Net::connected();
    net.c_to_s = false;
    net.s_to_c = false;
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.state(false), "suspended");
    let counters = SocketCounters {
        bytes_acked: 70_001,
        bytes_received: 5_000,
        bytes_sent: 90_000,
        snd_wnd: 3 << 20,
        snd_wscale: 7,
        timestamps: true,
        unacked: 14,
    };
    let (snd_una, rcv_nxt) = hold_client(&mut net, counters);
    // The socket's next packet reveals its timestamps; the answer carries them back.
    let now = net.now;
    let v = net.c.on_segment(
        now,
        Dir::Out,
        key_at_client(),
        &dupack(CLIENT_ISN + 90_001, rcv_nxt, (555, 777)),
        || None,
    );
    assert_eq!(v, SegmentVerdict::Drop);
    let [Action::Inject(zw)] = &drain(&mut net.c)[..] else {
        panic!()
    };
    assert_eq!(parse(zw), (rcv_nxt, snd_una, 0, Some((777, 555))));
    // A retransmission 10 s later is answered the same way (the socket never times out).
    net.run_for(Duration::from_secs(10));
    let retransmission = SegmentSeen {
        seq: snd_una,
        payload_len: 1000,
        ..dupack(snd_una, rcv_nxt, (9_555, 777))
    };
    let v = net
        .c
        .on_segment(net.now, Dir::Out, key_at_client(), &retransmission, || {
            Some(b"head".to_vec())
        });
    assert_eq!(v, SegmentVerdict::Drop);
    let injected: Vec<_> = drain(&mut net.c)
        .into_iter()
        .filter_map(|a| match a {
            Action::Inject(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(injected.len(), 1);
    assert_eq!(
        parse(&injected[0]),
        (rcv_nxt, snd_una, 0, Some((777, 9_555)))
    );
    // The path returns: both ends resume within a few hundred milliseconds.
    net.c_to_s = true;
    net.s_to_c = true;
    net.c_out.clear();
    let back = net.now;
    while net.state(false) != "connected" || net.state(true) != "connected" {
        net.run_for(Duration::from_millis(10));
        assert!(net.now - back < Duration::from_millis(300), "slow resume");
    }
    // The socket still has data outstanding: its own retransmission goes to the peer, the
    // window stays closed and the flow queued until the peer acknowledges new data.
    let injected = |out: &[Action]| -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|a| match a {
                Action::Inject(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(injected(&net.c_out), [b"head".to_vec()]);
    assert!(!net
        .c_out
        .iter()
        .any(|a| matches!(a, Action::Queue { on: false, .. })));
    net.c_out.clear();
    net.run_for(Duration::from_millis(150));
    assert_eq!(
        injected(&net.c_out),
        [b"head".to_vec()],
        "re-sent until answered"
    );
    let peer_ack = SegmentSeen {
        ack: snd_una + 1448,
        ..dupack(rcv_nxt, snd_una + 1448, (5, 9_555))
    };
    let v = net
        .c
        .on_segment(net.now, Dir::In, key_at_client(), &peer_ack, || None);
    assert_eq!(v, SegmentVerdict::Accept);
    assert_eq!(net.c.flow(&key_at_client()).unwrap().reconnects, 1);
    // After resuming, the flow's packets are not rackd's business.
    let v = net
        .c
        .on_segment(net.now, Dir::Out, key_at_client(), &retransmission, || {
            Some(b"head".to_vec())
        });
    assert_eq!(v, SegmentVerdict::Accept);
}

#[test]
fn server_sequence_state_counts_no_syn_in_bytes_acked() {
    let c = SocketCounters {
        bytes_acked: 10,
        bytes_received: 20,
        ..SocketCounters::default()
    };
    let s = SeqState::derive(Role::Server, SERVER_ISN, CLIENT_ISN, &c);
    assert_eq!(s.snd_una, SERVER_ISN + 11);
    assert_eq!(s.rcv_nxt, CLIENT_ISN + 21);
    let s = SeqState::derive(Role::Client, CLIENT_ISN, SERVER_ISN, &c);
    assert_eq!(s.snd_una, CLIENT_ISN + 10);
    assert_eq!(s.rcv_nxt, SERVER_ISN + 21);
}

#[test]
fn peer_packets_during_a_suspension_are_answered_for_the_local_socket() {
    let mut net = Net::connected();
    let id = net.c.flow(&key_at_client()).unwrap().id_hex();
    net.c.suspend_by_id(net.now, &id).unwrap();
    net.settle();
    let counters = SocketCounters {
        bytes_acked: 1,
        bytes_received: 0,
        snd_wnd: 65535,
        timestamps: true,
        ..SocketCounters::default()
    };
    let (snd_una, rcv_nxt) = hold_client(&mut net, counters);
    // The local socket reveals its clock, then the peer sends data.
    net.c.on_segment(
        net.now,
        Dir::Out,
        key_at_client(),
        &dupack(snd_una, rcv_nxt, (100, 200)),
        || None,
    );
    drain(&mut net.c);
    let data = SegmentSeen {
        seq: rcv_nxt,
        ack: snd_una,
        flags: Flags::ACK,
        window: 1000,
        timestamps: Some((201, 100)),
        payload_len: 1448,
    };
    let v = net
        .c
        .on_segment(net.now, Dir::In, key_at_client(), &data, || None);
    assert_eq!(v, SegmentVerdict::Drop, "the local socket must not see it");
    let [Action::Inject(answer)] = &drain(&mut net.c)[..] else {
        panic!()
    };
    let p = TcpIpPacket::new_checked(&answer[..]).unwrap();
    assert_eq!(
        (p.src(), p.dst()),
        (key_at_client().local, key_at_client().remote)
    );
    assert_eq!(parse(answer), (snd_una, rcv_nxt, 0, Some((100, 201))));
    // Heartbeats are fine, but a pinned connection stays suspended until resumed by command.
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.state(false), "suspended");
    net.c_out.clear();
    net.c.resume_by_id(net.now, &id).unwrap();
    net.settle();
    assert_eq!(net.state(false), "connected");
    let updates: Vec<_> = net
        .c_out
        .iter()
        .filter_map(|a| match a {
            Action::Inject(p) => Some(parse(p)),
            _ => None,
        })
        .collect();
    assert_eq!(
        updates,
        [
            (rcv_nxt, snd_una, u16::MAX, Some((200, 100))),
            (snd_una, rcv_nxt, 512, Some((100, 201))),
        ],
        "window updates to the local socket and to the peer"
    );
}

#[test]
fn commands_name_what_is_wrong() {
    let mut net = Net::connected();
    let now = net.now;
    assert_eq!(
        net.c.suspend_by_id(now, "nothex"),
        Err(CommandError::UnknownId("nothex".into()))
    );
    assert!(matches!(
        net.c.suspend_by_id(now, "00000000000000ff"),
        Err(CommandError::UnknownId(_))
    ));
    let id = net.c.flow(&key_at_client()).unwrap().id_hex();
    assert_eq!(
        net.c.resume_by_id(now, &id),
        Err(CommandError::NotPinned(id.clone()))
    );
    assert_eq!(net.c.suspend_by_id(now, &id), Ok(()));
    assert_eq!(state_of(&net.c, key_at_client()), "suspended");
}

#[test]
fn an_application_reset_during_suspension_ends_the_flow() {
    let mut net = Net::connected();
    net.c_to_s = false;
    net.s_to_c = false;
    net.run_for(Duration::from_secs(2));
    hold_client(
        &mut net,
        SocketCounters {
            timestamps: true,
            ..SocketCounters::default()
        },
    );
    let rst = SegmentSeen {
        flags: Flags::RST,
        ..dupack(CLIENT_ISN, SERVER_ISN, (1, 1))
    };
    let v = net
        .c
        .on_segment(net.now, Dir::Out, key_at_client(), &rst, || None);
    assert_eq!(v, SegmentVerdict::Accept);
    // The server still holds its end: the flow stays, closed, and beats go on until the path
    // is back and the server has resumed (its next packet then draws the kernel's reset).
    assert_eq!(net.state(false), "closed");
    net.run_for(Duration::from_secs(20));
    assert_eq!(net.state(false), "closed");
    net.c_to_s = true;
    net.s_to_c = true;
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.state(true), "connected");
    net.run_for(Duration::from_secs(6));
    assert_eq!(net.state(false), "gone");
}

#[test]
fn a_socket_that_cannot_reach_rackd_still_gets_an_ack_every_second() {
    // Link down: the socket's probes fail before any netfilter hook and never reach rackd.
    let mut net = Net::connected();
    net.c_to_s = false;
    net.s_to_c = false;
    net.run_for(Duration::from_secs(2));
    hold_client(&mut net, SocketCounters::default());
    net.c_out.clear();
    net.run_for(Duration::from_secs(10));
    let acks = net
        .c_out
        .iter()
        .filter(|a| matches!(a, Action::Inject(p) if TcpIpPacket::new_checked(&p[..]).unwrap().dst() == key_at_client().local))
        .count();
    assert!((9..=11).contains(&acks), "{acks} ACKs in 10 s");
}

#[test]
fn the_reconnection_window_expires_into_a_reset() {
    let mut net = Net::connected();
    net.c_to_s = false;
    net.s_to_c = false;
    net.run_for(Duration::from_secs(2));
    let (_, rcv_nxt) = hold_client(
        &mut net,
        SocketCounters {
            timestamps: true,
            ..SocketCounters::default()
        },
    );
    net.c_out.clear();
    net.run_for(cfg().reconnect_window);
    assert_eq!(net.state(false), "gone");
    let rst = net
        .c_out
        .iter()
        .find_map(|a| match a {
            Action::Inject(p)
                if TcpIpPacket::new_checked(&p[..])
                    .unwrap()
                    .tcp()
                    .flags()
                    .rst() =>
            {
                Some(p.clone())
            }
            _ => None,
        })
        .expect("a reset");
    let p = TcpIpPacket::new_checked(&rst[..]).unwrap();
    assert!(p.tcp().flags().rst());
    assert_eq!(p.tcp().seq(), rcv_nxt);
    assert_eq!(p.dst(), key_at_client().local);
    assert_eq!(net.c.counters.expired, 1);
}

#[test]
fn tokens_are_distinct() {
    let mut t = TokenSource(0);
    let v: std::collections::HashSet<u32> = (0..10_000).map(|_| t.next()).collect();
    assert_eq!(v.len(), 10_000);
}

// ----- address changes ---------------------------------------------------------------------

#[test]
fn a_client_address_change_is_followed_by_both_ends() {
    let mut net = Net::connected();
    net.run_for(Duration::from_secs(1));
    let old = key_at_client().local.ip();
    let new: IpAddr = "192.0.2.66".parse().unwrap();
    // The client host loses its address; the kernel now picks the new one towards the server.
    net.c_addr = new;
    net.c
        .on_local_addresses(net.now, |a| a != old, |_| Some(new));
    let actions: Vec<Action> = drain(&mut net.c)
        .into_iter()
        .filter(|a| !matches!(a, Action::ReadSocket { .. }))
        .collect();
    let mut wire = key_at_client();
    wire.local.set_ip(new);
    // The socket is held in its old view before the translation exists, and the translation is
    // installed queued: a packet it sent in between would reach the server from an address the
    // server does not know yet, and draw a reset.
    assert_eq!(
        actions[..3],
        [
            Action::KeepLocal(old),
            Action::Queue {
                key: key_at_client(),
                wire: key_at_client(),
                on: true
            },
            Action::Translate {
                key: key_at_client(),
                old: key_at_client(),
                wire,
                queued: true
            }
        ]
    );
    // Held until the server has seen the new address.
    assert_eq!(net.state(false), "suspended");
    // The server learns the new address from the client's authenticated beats.
    net.run_for(Duration::from_secs(1));
    let mut server_wire = key_at_server();
    server_wire.remote.set_ip(new);
    assert_eq!(net.s.flow(&key_at_server()).unwrap().wire, server_wire);
    assert!(net.s_out.contains(&Action::Translate {
        key: key_at_server(),
        old: key_at_server(),
        wire: server_wire,
        queued: false
    }));
    // Heartbeats keep flowing to the new address: nothing is suspended.
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        (net.state(false), net.state(true)),
        ("connected", "connected")
    );
    // Outgoing packets of the client are queued in their wire view and still found.
    let id = net.c.flow(&key_at_client()).unwrap().id_hex();
    net.c.suspend_by_id(net.now, &id).unwrap();
    let v = net.c.on_segment(
        net.now,
        Dir::Out,
        wire,
        &dupack(CLIENT_ISN, SERVER_ISN, (1, 1)),
        || None,
    );
    assert_eq!(v, SegmentVerdict::Drop, "held, found through its wire view");
}

#[test]
fn a_link_local_source_offered_mid_change_does_not_take_the_flow() {
    let mut net = Net::connected();
    let old = key_at_client().local.ip();
    // The old address is gone and its successor not there yet: the kernel offers what is left.
    for offered in ["169.254.7.7", "127.0.0.1"] {
        let offered: IpAddr = offered.parse().unwrap();
        net.c
            .on_local_addresses(net.now, |a| a != old, |_| Some(offered));
        assert_eq!(net.c.flow(&key_at_client()).unwrap().wire, key_at_client());
    }
    assert_eq!(drain(&mut net.c), [Action::KeepLocal(old)]);
    let new: IpAddr = "192.0.2.66".parse().unwrap();
    net.c_addr = new;
    net.c
        .on_local_addresses(net.now, |a| a != old, |_| Some(new));
    assert_eq!(net.c.flow(&key_at_client()).unwrap().wire.local.ip(), new);
}

#[test]
fn only_a_source_of_the_remotes_scope_reaches_it() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(reaches(ip("2001:db8:1::3"), ip("2001:db8:2::2")));
    assert!(!reaches(ip("fe80::1"), ip("2001:db8:2::2")));
    assert!(!reaches(ip("::1"), ip("2001:db8:2::2")));
    assert!(reaches(ip("fe80::1"), ip("fe80::2")));
    assert!(!reaches(ip("169.254.1.1"), ip("198.51.100.2")));
    assert!(reaches(ip("192.0.2.3"), ip("198.51.100.2")));
}

#[test]
fn forged_beats_from_another_address_do_not_move_the_peer() {
    let mut net = Net::connected();
    let id = net.s.flow(&key_at_server()).unwrap().conn_id().unwrap();
    let forger = edp::crypto::SecretKey::from_bytes([7; 32]);
    let beat = Message::heartbeat(&forger, id, 99, 0).encode();
    net.s
        .on_datagram(net.now, "203.0.113.2:7113".parse().unwrap(), &beat);
    assert_eq!(net.s.flow(&key_at_server()).unwrap().wire, key_at_server());
    assert!(drain(&mut net.s).is_empty());
}

#[test]
fn a_flow_entry_stays_small() {
    // A SYN flood fills the table with negotiating flows (bounded by MAX_NEGOTIATING).
    let size = std::mem::size_of::<Flow>() + std::mem::size_of::<FlowKey>();
    assert!(size <= 448, "flow entry is {size} bytes");
}

#[test]
fn a_reused_port_gives_a_new_managed_connection_on_both_ends() {
    let mut net = Net::connected();
    let old_id = net.c.flow(&key_at_client()).unwrap().id_hex();
    // The old connection closed, and before either daemon noticed the client opened a new one
    // on the same port: new ISNs, new tokens.
    let now = net.now;
    let h = hello_of(net.c.on_syn(
        now,
        syn(Dir::Out, key_at_client(), false, None, CLIENT_ISN + 5_000),
    ));
    assert!(h.is_some(), "the new SYN carries the option");
    // A SYN alone does not replace the server's entry...
    net.s.on_syn(
        now,
        syn(Dir::In, key_at_server(), false, h, CLIENT_ISN + 5_000),
    );
    assert_eq!(net.state(true), "connected");
    // ...the kernel's SYN-ACK does.
    let h2 = hello_of(net.s.on_syn(
        now,
        syn(Dir::Out, key_at_server(), true, None, SERVER_ISN + 7),
    ));
    assert!(h2.is_some());
    net.c
        .on_syn(now, syn(Dir::In, key_at_client(), true, h2, SERVER_ISN + 7));
    net.settle();
    let (c, s) = (
        net.c.flow(&key_at_client()).unwrap(),
        net.s.flow(&key_at_server()).unwrap(),
    );
    assert_eq!((c.state.name(), s.state.name()), ("connected", "connected"));
    assert_eq!(c.id_hex(), s.id_hex());
    assert_ne!(c.id_hex(), old_id);
    assert_eq!(c.isn_local, Some(CLIENT_ISN + 5_000));
    assert_eq!(s.isn_peer, Some(CLIENT_ISN + 5_000));
}

#[test]
fn a_forged_syn_on_a_connected_tuple_changes_nothing_without_a_syn_ack() {
    let mut net = Net::connected();
    let id = net.s.flow(&key_at_server()).unwrap().id_hex();
    let now = net.now;
    net.s.on_syn(
        now,
        syn(Dir::In, key_at_server(), false, Some(77), SeqNum(5)),
    );
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.s.flow(&key_at_server()).unwrap().id_hex(), id);
    assert_eq!(net.state(true), "connected");
}

#[test]
fn a_short_hold_with_data_in_flight_keeps_the_window_closed_until_the_peer_acknowledges() {
    let mut net = Net::connected();
    net.c_to_s = false;
    net.s_to_c = false;
    net.run_for(Duration::from_secs(2));
    let counters = SocketCounters {
        bytes_acked: 1_001,
        timestamps: true,
        unacked: 3,
        ..SocketCounters::default()
    };
    let (snd_una, rcv_nxt) = hold_client(&mut net, counters);
    // The path returns before the socket retransmitted anything rackd could capture.
    net.c_to_s = true;
    net.s_to_c = true;
    net.c_out.clear();
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.state(false), "connected");
    assert!(
        !net.c_out
            .iter()
            .any(|a| matches!(a, Action::Inject(_) | Action::Queue { on: false, .. })),
        "no window reopened, still queued: {:?}",
        net.c_out
    );
    // The socket's next retransmission (a window probe) travels to the peer...
    let retransmission = SegmentSeen {
        payload_len: 1448,
        ..dupack(snd_una, rcv_nxt, (50, 60))
    };
    let v = net
        .c
        .on_segment(net.now, Dir::Out, key_at_client(), &retransmission, || None);
    assert_eq!(v, SegmentVerdict::Accept);
    // ...and the peer's acknowledgement of it ends the hold.
    let ack = dupack(rcv_nxt, snd_una + 1448, (61, 50));
    net.c
        .on_segment(net.now, Dir::In, key_at_client(), &ack, || None);
    assert!(drain(&mut net.c).contains(&Action::Queue {
        key: key_at_client(),
        wire: key_at_client(),
        on: false
    }));
    assert!(net.c.flow(&key_at_client()).unwrap().hold.is_none());
}

#[test]
fn the_re_sent_retransmission_carries_the_sockets_latest_acknowledgement() {
    let key = key_at_client();
    let counters = SocketCounters {
        bytes_acked: 1,
        timestamps: true,
        unacked: 1,
        ..SocketCounters::default()
    };
    let seq = hold::SeqState::derive(Role::Client, CLIENT_ISN, SERVER_ISN, &counters);
    let mut h = hold::Hold::new(key, seq, &counters);
    let captured = tcpseq::Segment::data(
        key.local,
        key.remote,
        seq.snd_una,
        seq.rcv_nxt,
        100,
        b"payload",
    )
    .to_vec()
    .unwrap();
    let seen = SegmentSeen {
        payload_len: 7,
        window: 100,
        ..dupack(seq.snd_una, seq.rcv_nxt, (1, 1))
    };
    h.observe_local(&seen, || Some(captured.clone()));
    // The peer's data reached the socket since; its ACK moved on.
    let later = SegmentSeen {
        window: 300,
        ..dupack(seq.snd_una + 7, seq.rcv_nxt + 50_000, (2, 2))
    };
    h.observe_local(&later, || None);
    let head = h.head().unwrap();
    let p = TcpIpPacket::new_checked(&head[..]).unwrap();
    assert!(p.checksums_ok());
    assert_eq!(p.tcp().seq(), seq.snd_una);
    assert_eq!(p.tcp().ack(), seq.rcv_nxt + 50_000);
    assert_eq!(p.tcp().window(), 300);
    assert_eq!(p.tcp_payload(), b"payload");
}

#[test]
fn init_is_answered_only_to_the_connections_peer_address() {
    let mut net = Net::new();
    net.handshake(false, true);
    let init = drain(&mut net.c)
        .into_iter()
        .find_map(|a| match a {
            Action::Send { datagram, .. } => Some(datagram),
            _ => None,
        })
        .unwrap();
    net.s
        .on_datagram(net.now, "203.0.113.2:7113".parse().unwrap(), &init);
    assert!(drain(&mut net.s).is_empty(), "no answer to a third host");
    assert_eq!(net.state(true), "negotiating");
}

#[test]
fn a_suspended_connection_takes_its_peers_new_address_by_command() {
    let mut net = Net::connected();
    let id = net.c.flow(&key_at_client()).unwrap().id_hex();
    let new: IpAddr = "198.51.100.40".parse().unwrap();
    assert!(matches!(
        net.c.set_peer_by_id(&id, new),
        Err(CommandError::NotSuspended {
            state: "connected",
            ..
        })
    ));
    net.c.suspend_by_id(net.now, &id).unwrap();
    assert_eq!(
        net.c.set_peer_by_id(&id, "2001:db8::9".parse().unwrap()),
        Err(CommandError::WrongFamily {
            addr: "2001:db8::9".parse().unwrap()
        })
    );
    drain(&mut net.c);
    net.c.set_peer_by_id(&id, new).unwrap();
    let mut wire = key_at_client();
    wire.remote.set_ip(new);
    assert_eq!(net.c.flow(&key_at_client()).unwrap().wire, wire);
    assert!(drain(&mut net.c).contains(&Action::Translate {
        key: key_at_client(),
        old: key_at_client(),
        wire,
        queued: true
    }));
    // Heartbeats now go to the new address.
    net.c.handle_timeout(net.now + Duration::from_secs(2));
    assert!(drain(&mut net.c)
        .iter()
        .any(|a| matches!(a, Action::Send { to, .. } if to.ip() == new)));
}

// ----- moving a socket between hosts (checkpoint and restore) --------------------------------

fn key_at_new_host(ip: &str) -> FlowKey {
    FlowKey {
        local: SocketAddr::new(ip.parse().unwrap(), 40000),
        remote: key_at_client().remote,
    }
}

/// Delivers `from`'s datagrams addressed to `to_ip` (sent from `from`'s address) into `to`;
/// returns `from`'s other actions.
fn carry(from: &mut Engine, to: &mut Engine, to_ip: IpAddr, now: Instant) -> Vec<Action> {
    let mut rest = Vec::new();
    for a in drain(from) {
        match a {
            Action::Send {
                to: dst,
                from: src,
                datagram,
            } if dst.ip() == to_ip => to.on_datagram(now, SocketAddr::new(src, 7113), &datagram),
            other => rest.push(other),
        }
    }
    rest
}

/// The client's socket checkpointed; the server told and answered.
fn checkpointed() -> (Net, FlowRecord) {
    let mut net = Net::connected();
    let record = net.c.checkpoint_flow(net.now, &key_at_client()).unwrap();
    let (s_ip, c_ip) = (key_at_server().local.ip(), key_at_client().local.ip());
    net.c_out = carry(&mut net.c, &mut net.s, s_ip, net.now);
    carry(&mut net.s, &mut net.c, c_ip, net.now);
    (net, record)
}

/// Restores `record` on a fresh engine at `ip` and lets it and the server talk.
fn restore_at(net: &mut Net, ip: &str, record: FlowRecord, seed: u64) -> (Engine, Vec<Action>) {
    let mut host = engine(seed);
    let key = key_at_new_host(ip);
    let seq = SeqPoint {
        snd_una: 5_000,
        rcv_nxt: u32::MAX - 3,
    };
    host.restore_flow(net.now, record, key, seq).unwrap();
    assert_eq!(host.restore_state(&key), RestoreState::Pending);
    assert_eq!(state_of(&host, key), "reconnecting");
    let s_out = carry(&mut host, &mut net.s, key_at_server().local.ip(), net.now);
    assert!(s_out.is_empty());
    let server_actions = carry(&mut net.s, &mut host, key.local.ip(), net.now);
    (host, server_actions)
}

#[test]
fn a_checkpointed_connection_is_held_by_the_peer_and_resumes_where_it_is_restored() {
    let (mut net, record) = checkpointed();
    assert_eq!(record.generation, 1);
    assert_eq!(record.peer, key_at_client().remote);
    // The old host forgets the flow and drops its packets (its socket closes silently).
    assert_eq!(net.state(false), "gone");
    assert!(net.c_out.contains(&Action::Queue {
        key: key_at_client(),
        wire: key_at_client(),
        on: true
    }));
    let seg = dupack(SERVER_ISN + 1, CLIENT_ISN + 1, (1, 1));
    let verdict = net
        .c
        .on_segment(net.now, Dir::In, key_at_client(), &seg, || None);
    assert_eq!(verdict, SegmentVerdict::Drop);
    // The peer holds the connection until the socket reappears.
    assert_eq!(net.state(true), "suspended");
    let sf = net.s.flow(&key_at_server()).unwrap();
    assert!(sf.pinned);
    assert_eq!(sf.moving, Some(1));

    let secret = record.secret;
    let (mut b, server_actions) = restore_at(&mut net, "203.0.113.9", record, 3);
    let key_b = key_at_new_host("203.0.113.9");
    let wire = FlowKey {
        local: key_at_server().local,
        remote: key_b.local,
    };
    assert!(server_actions.contains(&Action::Translate {
        key: key_at_server(),
        old: key_at_server(),
        wire,
        queued: true
    }));
    assert_eq!(b.restore_state(&key_b), RestoreState::Accepted);
    assert_eq!(
        (state_of(&b, key_b), net.state(true)),
        ("connected", "connected")
    );
    let (bf, sf) = (
        b.flow(&key_b).unwrap(),
        net.s.flow(&key_at_server()).unwrap(),
    );
    assert_eq!(bf.id_hex(), sf.id_hex());
    assert_eq!((sf.generation, sf.moving, sf.pinned), (1, None, false));
    assert_eq!(sf.wire, wire);
    // The restored socket's counters start at zero: the derivation gives its sequence state.
    let zero = SocketCounters::default();
    let seq = SeqState::derive(bf.role, bf.isn_local.unwrap(), bf.isn_peer.unwrap(), &zero);
    assert_eq!(
        (seq.snd_una, seq.rcv_nxt),
        (SeqNum(5_000), SeqNum(u32::MAX - 3))
    );
    b.end_restore(&key_b);
    assert_eq!(state_of(&b, key_b), "connected");

    // Heartbeats now run between the server and the new host only, and keep both connected.
    let (s_ip, b_ip) = (key_at_server().local.ip(), key_b.local.ip());
    for _ in 0..500 {
        net.now += Duration::from_millis(10);
        b.handle_timeout(net.now);
        net.s.handle_timeout(net.now);
        carry(&mut b, &mut net.s, s_ip, net.now);
        let rest = carry(&mut net.s, &mut b, b_ip, net.now);
        assert!(
            !rest.iter().any(|a| matches!(a, Action::Send { .. })),
            "the server still talks to the old host: {rest:?}"
        );
    }
    assert_eq!(
        (state_of(&b, key_b), net.state(true)),
        ("connected", "connected")
    );
    // A beat the old host sent before the checkpoint, arriving late, moves nothing back.
    let id = net.s.flow(&key_at_server()).unwrap().conn_id().unwrap();
    let late = Message::heartbeat(&SecretKey::from_bytes(secret), id, u64::MAX / 2, 0);
    let old = SocketAddr::new(key_at_client().local.ip(), 7113);
    net.s.on_datagram(net.now, old, &late.encode());
    assert_eq!(net.s.flow(&key_at_server()).unwrap().wire, wire);
    assert!(!drain(&mut net.s)
        .iter()
        .any(|a| matches!(a, Action::Translate { .. })));
}

#[test]
fn a_checkpoint_restored_twice_is_refused_and_changes_nothing() {
    let (mut net, record) = checkpointed();
    let (_b, _) = restore_at(&mut net, "203.0.113.9", record.clone(), 3);
    let wire_after_first = net.s.flow(&key_at_server()).unwrap().wire;

    let (mut d, server_actions) = restore_at(&mut net, "203.0.113.10", record, 4);
    let key_d = key_at_new_host("203.0.113.10");
    assert!(server_actions.is_empty(), "{server_actions:?}");
    match d.restore_state(&key_d) {
        RestoreState::Refused(why) => assert!(why.contains("restored once"), "{why}"),
        other => panic!("replayed restore is {other:?}"),
    }
    assert_eq!(net.s.flow(&key_at_server()).unwrap().wire, wire_after_first);
    assert_eq!(net.state(true), "connected");
    d.end_restore(&key_d);
    assert_eq!(state_of(&d, key_d), "gone");
}

#[test]
fn a_checkpoint_replayed_on_the_host_it_left_is_refused() {
    let (mut net, record) = checkpointed();
    let (_b, _) = restore_at(&mut net, "203.0.113.9", record.clone(), 3);
    let seq = SeqPoint {
        snd_una: 1,
        rcv_nxt: 1,
    };
    net.c
        .restore_flow(net.now, record, key_at_client(), seq)
        .unwrap();
    let (s_ip, c_ip) = (key_at_server().local.ip(), key_at_client().local.ip());
    let rest = carry(&mut net.c, &mut net.s, s_ip, net.now);
    assert!(rest.contains(&Action::Queue {
        key: key_at_client(),
        wire: key_at_client(),
        on: false
    }));
    carry(&mut net.s, &mut net.c, c_ip, net.now);
    assert!(matches!(
        net.c.restore_state(&key_at_client()),
        RestoreState::Refused(_)
    ));
    // Refused: no more `Arrived` from here (only the beats that linger after a connection).
    net.c.handle_timeout(net.now + Duration::from_secs(5));
    let sent: Vec<Message> = drain(&mut net.c)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { datagram, .. } => Message::decode(&datagram).ok().flatten(),
            _ => None,
        })
        .map(|(m, _)| m)
        .collect();
    assert!(
        sent.iter().all(|m| matches!(m, Message::Heartbeat { .. })),
        "{sent:?}"
    );
}

#[test]
fn a_late_answer_to_the_old_hosts_leaving_does_not_accept_a_replay_there() {
    let mut net = Net::connected();
    let record = net.c.checkpoint_flow(net.now, &key_at_client()).unwrap();
    let (s_ip, c_ip) = (key_at_server().local.ip(), key_at_client().local.ip());
    carry(&mut net.c, &mut net.s, s_ip, net.now);
    // The server's `Accepted` to the `Leaving` is still on its way (a slow link).
    let late: Vec<Action> = drain(&mut net.s);
    let (_b, _) = restore_at(&mut net, "203.0.113.9", record.clone(), 3);
    let seq = SeqPoint {
        snd_una: 1,
        rcv_nxt: 1,
    };
    net.c
        .restore_flow(net.now, record, key_at_client(), seq)
        .unwrap();
    drain(&mut net.c);
    for a in late {
        if let Action::Send { from, datagram, .. } = a {
            net.c
                .on_datagram(net.now, SocketAddr::new(from, 7113), &datagram);
        }
    }
    assert_eq!(
        net.c.restore_state(&key_at_client()),
        RestoreState::Pending,
        "the answer to the Leaving was taken for the answer to the replay"
    );
    net.c.handle_timeout(net.now + Duration::from_secs(1));
    carry(&mut net.c, &mut net.s, s_ip, net.now);
    carry(&mut net.s, &mut net.c, c_ip, net.now);
    assert!(matches!(
        net.c.restore_state(&key_at_client()),
        RestoreState::Refused(_)
    ));
}

#[test]
fn a_move_made_with_another_key_is_ignored() {
    let (mut net, mut record) = checkpointed();
    record.secret[0] ^= 1;
    record.generation = 7;
    let bad_before = net.s.counters.bad_datagrams;
    let (mut b, server_actions) = restore_at(&mut net, "203.0.113.9", record, 3);
    let key_b = key_at_new_host("203.0.113.9");
    assert!(server_actions.is_empty());
    assert_eq!(net.s.counters.bad_datagrams, bad_before + 1);
    assert_eq!(b.restore_state(&key_b), RestoreState::Pending);
    let sf = net.s.flow(&key_at_server()).unwrap();
    assert_eq!((sf.wire, sf.generation), (key_at_server(), 0));
    assert_eq!(net.state(true), "suspended");
    // Unanswered, the new host stops asking after a minute and says why.
    b.handle_timeout(net.now + Duration::from_secs(61));
    match b.restore_state(&key_b) {
        RestoreState::Refused(why) => assert!(why.contains("did not answer"), "{why}"),
        other => panic!("unanswered restore is {other:?}"),
    }
}

#[test]
fn checkpoint_and_restore_name_what_is_wrong() {
    let (mut net, record) = checkpointed();
    assert_eq!(
        net.c.checkpoint_flow(net.now, &key_at_client()),
        Err(CommandError::UnknownFlow(key_at_client().to_string()))
    );
    let mut b = engine(3);
    let key_b = key_at_new_host("203.0.113.9");
    let seq = SeqPoint {
        snd_una: 1,
        rcv_nxt: 1,
    };
    b.restore_flow(net.now, record.clone(), key_b, seq).unwrap();
    assert!(matches!(
        b.restore_flow(net.now, record, key_b, seq),
        Err(CommandError::AlreadyHere(_))
    ));
    // A connection still negotiating has nothing to checkpoint.
    let mut fresh = Net::new();
    fresh.handshake(false, true);
    assert!(matches!(
        fresh.c.checkpoint_flow(fresh.now, &key_at_client()),
        Err(CommandError::NotManaged {
            state: "negotiating",
            ..
        })
    ));
}

// ----- a restart of rackd -------------------------------------------------------------------

/// The client's rackd restarts: a new engine, beats numbered from `beat_base`, takes over what
/// the old one saved.
fn restart_client(net: &mut Net, beat_base: u64) -> Vec<SavedFlow> {
    let saved = net.c.saved_flows();
    let cfg = EngineConfig { beat_base, ..cfg() };
    net.c = Engine::new(9, Box::new(DeterministicEntropy::new(9)), cfg);
    for f in &saved {
        net.c.adopt(net.now, f).unwrap();
    }
    saved
}

#[test]
fn a_restarted_rackd_takes_over_its_connections_and_the_peer_never_notices() {
    let mut net = Net::connected();
    net.run_for(Duration::from_secs(1));
    let key_id = net
        .c
        .flow(&key_at_client())
        .unwrap()
        .session
        .as_ref()
        .unwrap()
        .key_id();
    let saved = restart_client(&mut net, 1 << 40);
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].key(), key_at_client());
    let cf = net.c.flow(&key_at_client()).unwrap();
    assert_eq!(cf.session.as_ref().unwrap().key_id(), key_id);
    assert_eq!(
        (cf.isn_local, cf.isn_peer),
        (Some(CLIENT_ISN), Some(SERVER_ISN))
    );
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        (net.state(false), net.state(true)),
        ("connected", "connected")
    );
    assert_eq!(net.s.counters.suspensions, 0);
    assert_eq!(
        net.c.flow(&key_at_client()).unwrap().id_hex(),
        net.s.flow(&key_at_server()).unwrap().id_hex()
    );
}

#[test]
fn beats_of_a_restarted_rackd_counting_from_zero_again_would_be_ignored() {
    // Why the daemon numbers beats from the wall clock: the peer takes each number once.
    let mut net = Net::connected();
    net.run_for(Duration::from_secs(10));
    restart_client(&mut net, 0);
    net.run_for(Duration::from_secs(3));
    // Its beats look like replays until their numbers pass the old run's: the peer suspends.
    assert_eq!(net.s.counters.suspensions, 1);
}

#[test]
fn a_taken_over_connection_keeps_its_translation_and_its_suspension_by_command() {
    let net = Net::connected();
    let mut saved = net.c.saved_flows();
    let moved: SocketAddr = "192.0.2.77:40000".parse().unwrap();
    saved[0].record.local = moved;
    saved[0].pinned = true;
    let mut c = engine(9);
    c.adopt(net.now, &saved[0]).unwrap();
    let actions = drain(&mut c);
    let wire = FlowKey {
        local: moved,
        remote: key_at_client().remote,
    };
    assert!(actions.contains(&Action::KeepLocal(key_at_client().local.ip())));
    assert!(actions.contains(&Action::Translate {
        key: key_at_client(),
        old: key_at_client(),
        wire,
        queued: false
    }));
    assert!(actions.contains(&Action::ReadSocket {
        key: key_at_client()
    }));
    assert_eq!(state_of(&c, key_at_client()), "suspended");
    assert!(matches!(
        c.adopt(net.now, &saved[0]),
        Err(CommandError::AlreadyHere(_))
    ));
}
