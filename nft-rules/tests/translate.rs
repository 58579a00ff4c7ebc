//! In-kernel translation on real traffic, next to a stateful firewall.
//!
//! Host A runs rackd's table and a firewall that drops `ct state invalid`; peer B is a plain
//! host behind a veth pair. A's socket talks to the peer's *old* address, which exists
//! nowhere; the translation maps rewrite every packet between that view and the wire, where
//! A uses a new address and port too. Data arriving intact proves the checksums right;
//! the firewall's invalid counters staying at zero prove conntrack saw one consistent view.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{connect, connect_within, echo_roundtrip, echo_server, eventually, Netns, Reader};
use nft_rules::{Config, Direction, FlowKey, QueueConfig, Ruleset, Translation};

const FIREWALL: &str = r#"
table inet fw {
	chain input {
		type filter hook input priority filter; policy drop;
		meta l4proto { icmp, ipv6-icmp } accept
		ct state invalid counter drop comment "invalid in"
		ct state established,related accept
		iif "lo" accept
		tcp dport 22 accept
	}
	chain output {
		type filter hook output priority filter; policy accept;
		ct state invalid counter drop comment "invalid out"
	}
}
"#;

struct Topology {
    host: Netns,
    peer: Netns,
}

/// A (host) a0 <-> b0 B (peer), with two addresses on A per family.
fn topology() -> Topology {
    let host = Netns::new();
    let peer = Netns::new();
    host.sh(&format!(
        "ip link add a0 type veth peer name b0 netns {}",
        peer.tid()
    ));
    host.sh(
        "ip addr add 203.0.113.1/24 dev a0 && ip addr add 203.0.113.10/24 dev a0 && \
         ip addr add 2001:db8:113::1/64 dev a0 nodad && ip addr add 2001:db8:113::10/64 dev a0 nodad && \
         ip link set a0 up && \
         ip route add 198.51.100.0/24 via 203.0.113.2 && ip route add 2001:db8:51::/64 via 2001:db8:113::2",
    );
    peer.sh("ip addr add 203.0.113.2/24 dev b0 && ip addr add 2001:db8:113::2/64 dev b0 nodad && ip link set b0 up");
    let fw = FIREWALL.to_owned();
    host.run(move || {
        let path = std::env::temp_dir().join(format!("nft-rules-fw-{}.nft", std::process::id()));
        std::fs::write(&path, fw).unwrap();
        let out = common::sh_here(&format!("nft -f {}", path.display()));
        let _ = std::fs::remove_file(&path);
        out
    });
    Topology { host, peer }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// (socket's local, socket's view of the peer, wire local, wire peer)
fn addresses(v6: bool) -> [SocketAddr; 4] {
    if v6 {
        [
            sa("[2001:db8:113::1]:40001"),
            sa("[2001:db8:51::9]:9000"),
            sa("[2001:db8:113::10]:50001"),
            sa("[2001:db8:113::2]:9001"),
        ]
    } else {
        [
            sa("203.0.113.1:40001"),
            sa("198.51.100.9:9000"),
            sa("203.0.113.10:50001"),
            sa("203.0.113.2:9001"),
        ]
    }
}

fn invalid_drops(ns: &Netns) -> String {
    let fw = ns.sh("nft list table inet fw");
    fw.lines()
        .filter(|l| l.contains("invalid"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn spliced_flow_is_translated_in_kernel_next_to_stateful_firewall() {
    let t = topology();
    let before = t.host.sh("nft -s list ruleset");
    let num = 9;
    let cfg = Config {
        queue: QueueConfig {
            num,
            ..QueueConfig::default()
        },
        ..Config::default()
    };
    let rs = t
        .host
        .run(move || Ruleset::install(&cfg))
        .expect("install next to firewall");
    let reader = Reader::start(&t.host, num);

    for v6 in [false, true] {
        let [sock_local, sock_peer, wire_local, wire_peer] = addresses(v6);
        echo_server(&t.peer, wire_peer);
        let out_key = FlowKey::new(sock_local, sock_peer);
        let in_key = FlowKey::new(wire_peer, wire_local);
        let entries = [
            (
                Direction::Out,
                out_key,
                Translation {
                    src: wire_local,
                    dst: wire_peer,
                },
            ),
            (
                Direction::In,
                in_key,
                Translation {
                    src: sock_peer,
                    dst: sock_local,
                },
            ),
        ];
        rs.add_translations(&entries).expect("add translations");
        let fam = if v6 { 6 } else { 4 };
        assert_eq!(
            t.host.flow_chains(),
            ["in", "out"].map(|d| vec![format!("translate spliced flows (xlate_{d}{fam})")]),
            "first translations bring their rules"
        );

        let mut c = connect(&t.host, Some(sock_local), sock_peer)
            .unwrap_or_else(|e| {
                panic!(
                    "connect to the old peer address {sock_peer} through translation: {e}\nhost:\n{}\npeer:\n{}",
                    t.host.sh("nft list ruleset; ip -6 neigh; ip -6 route; nstat -az | grep -iE 'Ip6|Tcp' | grep -v ' 0 '"),
                    t.peer.sh("ip -6 addr; ip -6 neigh; nstat -az | grep -iE 'Ip6|Tcp' | grep -v ' 0 '"),
                )
            });
        assert_eq!(
            c.peer_addr().unwrap(),
            sock_peer,
            "the socket keeps its view"
        );
        for i in 0..20 {
            echo_roundtrip(
                &mut c,
                format!("segment {i} over the translated path").as_bytes(),
            )
            .expect("echo");
        }
        echo_roundtrip(&mut c, &vec![0x5a; 200_000]).expect("bulk echo (many segments, both ways)");

        // SYN + SYN-ACK were queued (rackd would negotiate there), nothing else.
        eventually("handshake queued", || reader.syns() >= 2);
        assert_eq!(reader.packets(), reader.syns(), "only SYNs were queued");

        let keys: Vec<_> = entries.iter().map(|(d, k, _)| (*d, *k)).collect();
        rs.remove_translations(&keys).expect("remove translations");
        let none: [Vec<String>; 2] = Default::default();
        assert_eq!(
            t.host.flow_chains(),
            none,
            "last translations take their rules"
        );
        // Without translation the peer's packets no longer match the socket: no echo.
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            echo_roundtrip(&mut c, b"untranslated").is_err(),
            "traffic still translated after removal"
        );
    }
    let invalid = invalid_drops(&t.host);
    assert_eq!(
        invalid.matches("counter packets 0 bytes 0").count(),
        2,
        "conntrack saw invalid packets:\n{invalid}"
    );

    // The firewall still works with rackd installed: allowed port opens, others are dropped.
    echo_server(&t.host, sa("203.0.113.1:22"));
    echo_server(&t.host, sa("203.0.113.1:8080"));
    let mut ok =
        connect(&t.peer, None, sa("203.0.113.1:22")).expect("allowed port through firewall");
    echo_roundtrip(&mut ok, b"ssh").expect("echo");
    let blocked = connect_within(
        &t.peer,
        None,
        sa("203.0.113.1:8080"),
        Duration::from_millis(500),
    );
    assert!(blocked.is_err(), "firewall let a blocked port through");

    drop(reader);
    t.host.run(move || rs.remove()).expect("remove");
    assert_eq!(
        t.host.sh("nft -s list ruleset"),
        before,
        "removal must restore the ruleset exactly"
    );
}
