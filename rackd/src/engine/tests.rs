//! Negotiation between two engines, one per host, with the wire in between simulated by hand.

use super::*;

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

fn syn(dir: Dir, key: FlowKey, ack: bool, hello: Option<u32>) -> SynSeen {
    SynSeen {
        dir,
        key,
        ack,
        hello,
    }
}

fn hello_of(v: SynVerdict) -> Option<u32> {
    match v {
        SynVerdict::AddHello { token } => Some(token),
        SynVerdict::Pass => None,
    }
}

fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

/// Runs a handshake between a client host and a server host; `strip` removes the option on the
/// path, `server_has_rackd` says whether the server host runs an engine at all.
fn handshake(strip: bool, server_has_rackd: bool) -> (Engine, Engine, Instant) {
    let now = Instant::now();
    let (mut c, mut s) = (Engine::new(1), Engine::new(2));
    let wire = |h: Option<u32>| if strip { None } else { h };
    let h_syn = wire(hello_of(
        c.on_syn(now, syn(Dir::Out, key_at_client(), false, None)),
    ));
    let h_syn_ack = if server_has_rackd {
        assert_eq!(
            s.on_syn(now, syn(Dir::In, key_at_server(), false, h_syn)),
            SynVerdict::Pass
        );
        wire(hello_of(
            s.on_syn(now, syn(Dir::Out, key_at_server(), true, None)),
        ))
    } else {
        None
    };
    c.on_syn(now, syn(Dir::In, key_at_client(), true, h_syn_ack));
    (c, s, now)
}

#[test]
fn both_ends_with_rackd_initialise_with_each_others_tokens() {
    let (mut c, mut s, now) = handshake(false, true);
    let ca = drain(&mut c);
    let sa = drain(&mut s);
    let [Action::Initialise {
        role: Role::Client,
        token_local: c_local,
        token_peer: c_peer,
        ..
    }] = ca[..]
    else {
        panic!("client actions {ca:?}")
    };
    let [Action::Initialise {
        role: Role::Server,
        token_local: s_local,
        token_peer: s_peer,
        ..
    }] = sa[..]
    else {
        panic!("server actions {sa:?}")
    };
    assert_eq!((c_local, c_peer), (s_peer, s_local));
    assert!(c.initialised(now, &key_at_client()));
    assert!(s.initialised(now, &key_at_server()));
    assert_eq!(c.flow(&key_at_client()).unwrap().state, State::Connected);
    assert_eq!(s.flow(&key_at_server()).unwrap().state, State::Connected);
}

#[test]
fn peer_without_rackd_is_released_and_forgotten() {
    let (mut c, _s, _) = handshake(false, false);
    assert_eq!(
        drain(&mut c),
        [Action::Released {
            key: key_at_client()
        }]
    );
    assert!(c.flow(&key_at_client()).is_none());
    assert_eq!(c.counters.released, 1);
    assert_eq!(c.state_counts()[4], 1);
}

#[test]
fn stripped_option_releases_the_client_and_leaves_no_server_state() {
    let (mut c, mut s, _) = handshake(true, true);
    assert_eq!(
        drain(&mut c),
        [Action::Released {
            key: key_at_client()
        }]
    );
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.flows().count(), 0);
}

#[test]
fn retransmitted_syn_reuses_the_token() {
    let now = Instant::now();
    let mut c = Engine::new(7);
    let a = c.on_syn(now, syn(Dir::Out, key_at_client(), false, None));
    let b = c.on_syn(
        now + Duration::from_secs(1),
        syn(Dir::Out, key_at_client(), false, None),
    );
    assert_eq!(a, b);
    assert_eq!(c.flows().count(), 1);
}

#[test]
fn server_syn_retransmission_is_idempotent_and_new_token_restarts() {
    let now = Instant::now();
    let mut s = Engine::new(3);
    s.on_syn(now, syn(Dir::In, key_at_server(), false, Some(11)));
    s.on_syn(now, syn(Dir::In, key_at_server(), false, Some(11)));
    assert_eq!(drain(&mut s).len(), 1);
    s.on_syn(now, syn(Dir::In, key_at_server(), false, Some(12)));
    let acts = drain(&mut s);
    assert!(
        matches!(acts[..], [Action::Initialise { token_peer: 12, .. }]),
        "{acts:?}"
    );
}

#[test]
fn syn_without_option_creates_no_server_state_and_syn_ack_passes() {
    let now = Instant::now();
    let mut s = Engine::new(3);
    assert_eq!(
        s.on_syn(now, syn(Dir::In, key_at_server(), false, None)),
        SynVerdict::Pass
    );
    assert_eq!(
        s.on_syn(now, syn(Dir::Out, key_at_server(), true, None)),
        SynVerdict::Pass
    );
    assert_eq!(s.flows().count(), 0);
}

#[test]
fn unsolicited_syn_ack_is_ignored() {
    let now = Instant::now();
    let mut c = Engine::new(3);
    c.on_syn(now, syn(Dir::In, key_at_client(), true, Some(5)));
    assert_eq!(c.flows().count(), 0);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn stray_syn_does_not_disturb_a_connected_flow() {
    let (_c, mut s, now) = handshake(false, true);
    drain(&mut s);
    assert!(s.initialised(now, &key_at_server()));
    s.on_syn(now, syn(Dir::In, key_at_server(), false, Some(99)));
    assert_eq!(s.flow(&key_at_server()).unwrap().state, State::Connected);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn negotiation_times_out_into_release() {
    let now = Instant::now();
    let mut c = Engine::new(1);
    c.on_syn(now, syn(Dir::Out, key_at_client(), false, None));
    assert_eq!(c.poll_timeout(), Some(now + NEGOTIATE_TIMEOUT));
    c.handle_timeout(now + NEGOTIATE_TIMEOUT - Duration::from_millis(1));
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
fn connected_flow_is_not_expired_by_its_old_deadline() {
    let (mut c, _s, now) = handshake(false, true);
    drain(&mut c);
    c.initialised(now, &key_at_client());
    c.handle_timeout(now + NEGOTIATE_TIMEOUT * 2);
    assert_eq!(c.flow(&key_at_client()).unwrap().state, State::Connected);
}

#[test]
fn many_short_negotiations_leave_nothing_behind() {
    let now = Instant::now();
    let mut c = Engine::new(1);
    for port in 0..100_000u32 {
        let mut key = key_at_client();
        key.local.set_port(1024 + (port % 60_000) as u16);
        key.remote.set_port(5000 + (port / 60_000) as u16);
        c.on_syn(now, syn(Dir::Out, key, false, None));
        c.on_syn(now, syn(Dir::In, key, true, None));
    }
    assert_eq!(c.flows().count(), 0);
    assert_eq!(c.counters.released, 100_000);
    c.handle_timeout(now + NEGOTIATE_TIMEOUT);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn tokens_are_distinct() {
    let mut t = TokenSource(0);
    let v: std::collections::HashSet<u32> = (0..10_000).map(|_| t.next()).collect();
    assert_eq!(v.len(), 10_000);
}
