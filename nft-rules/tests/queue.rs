//! Packets reach the queue (SYNs, per-flow entries), traffic flows without a reader, and
//! per-flow entries scale.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use common::{connect, echo_roundtrip, echo_server, eventually, proc_queue_seq, Netns, Reader};
use nft_rules::{
    probe_queue_mode, Config, Error, FlowKey, QueueConfig, QueueMode, Ruleset, Selector,
};

fn config(queue: u16, mode: QueueMode) -> Config {
    Config {
        queue: QueueConfig {
            num: queue,
            ..QueueConfig::default()
        },
        mode: Some(mode),
        ..Config::default()
    }
}

/// Over loopback every packet passes both chains: a SYN leaves through `out` and arrives
/// through `pre`, so a handshake queues SYN twice and SYN-ACK twice.
fn handshake_is_queued(ns: &Netns, mode: QueueMode, addr: IpAddr) {
    let num = 7;
    let rs = ns.run(move || Ruleset::install(&config(num, mode)));
    let rs = rs.unwrap_or_else(|e| panic!("install in {mode:?} mode: {e}"));
    let reader = Reader::start(ns, num);
    let server = echo_server(ns, SocketAddr::new(addr, 0));
    let mut c = connect(ns, None, server).expect("connect through the queue");
    echo_roundtrip(&mut c, b"data is not queued").expect("echo");
    eventually("4 queued SYNs", || reader.syns() == 4);
    assert_eq!(reader.packets(), 4, "only SYN and SYN-ACK may be queued");
    let seen = ns.run(move || proc_queue_seq(num));
    assert_eq!(seen, Some(4), "nfnetlink_queue id_sequence");
    drop(reader);
    ns.run(move || rs.remove()).expect("remove");
}

#[test]
fn syns_reach_the_queue_in_every_supported_mode() {
    let ns = Netns::new();
    let mut supported = vec![];
    for mode in [QueueMode::Native, QueueMode::Compat] {
        match ns.run(move || probe_queue_mode(mode)) {
            Ok(()) => supported.push(mode),
            Err(Error::Rejected { object, errno, .. }) => {
                // Unsupported must be reported as the kernel's refusal of the probe rule.
                assert!(object.contains("probe rule"), "{object}");
                assert!(
                    [libc::ENOENT, libc::EOPNOTSUPP, libc::EINVAL].contains(&errno),
                    "errno {errno}"
                );
                println!("{mode:?} queueing unsupported here: errno {errno}");
            }
            Err(e) => panic!("probe of {mode:?} failed oddly: {e}"),
        }
    }
    assert!(
        !supported.is_empty(),
        "kernel supports neither queue mechanism"
    );
    assert_eq!(ns.ruleset(), "", "probing must leave nothing behind");
    for mode in supported {
        println!("testing {mode:?} mode");
        handshake_is_queued(&ns, mode, Ipv4Addr::LOCALHOST.into());
        handshake_is_queued(&ns, mode, Ipv6Addr::LOCALHOST.into());
    }
    // Automatic choice picks a supported mode and reports it.
    let mode = ns
        .run(|| Ruleset::install(&Config::default()).map(|rs| rs.mode()))
        .expect("install");
    println!("automatic mode: {mode:?}");
}

#[test]
fn traffic_flows_without_a_reader() {
    let ns = Netns::new();
    let rs = ns
        .run(|| Ruleset::install(&Config::default()))
        .expect("install");
    let mode = rs.mode();
    let server = echo_server(&ns, "127.0.0.1:0".parse().unwrap());
    let started = Instant::now();
    let mut c = connect(&ns, None, server).expect("connect with bypass and no reader");
    echo_roundtrip(&mut c, b"fail open").expect("echo");
    println!(
        "{mode:?}: connected without reader in {:?}",
        started.elapsed()
    );
    let counters = ns.sh("nft list chain inet rackd out");
    // SYN and SYN-ACK both left through `out`, matched the SYN rule and were bypassed.
    assert!(
        counters.contains("counter packets 2 "),
        "the SYN rule must have matched: {counters}"
    );
}

#[test]
fn ineligible_connections_never_reach_the_queue() {
    let ns = Netns::new();
    let num = 3;
    let server_eligible = echo_server(&ns, "127.0.0.1:0".parse().unwrap());
    let server_excluded = echo_server(&ns, "127.0.0.1:0".parse().unwrap());
    let mut cfg = Config {
        queue: QueueConfig {
            num,
            ..QueueConfig::default()
        },
        ..Config::default()
    };
    let excluded = server_excluded.port();
    cfg.eligibility.remote_ports = Selector::except([excluded..=excluded]);
    cfg.eligibility.local_ports = Selector::except([excluded..=excluded]);
    // Kept until the end of the test; dropping it removes the table.
    let _rs = ns.run(move || Ruleset::install(&cfg)).expect("install");
    let reader = Reader::start(&ns, num);
    let mut c = connect(&ns, None, server_excluded).expect("connect");
    echo_roundtrip(&mut c, b"x").expect("echo");
    assert_eq!(reader.packets(), 0, "excluded port was queued");
    let mut c = connect(&ns, None, server_eligible).expect("connect");
    echo_roundtrip(&mut c, b"x").expect("echo");
    eventually("eligible SYNs queued", || reader.syns() == 4);
}

#[test]
fn per_flow_entries_queue_a_running_connection() {
    let ns = Netns::new();
    let num = 5;
    let rs = ns
        .run(move || Ruleset::install(&config(num, QueueMode::Compat)))
        .expect("install");
    let rs = std::sync::Arc::new(std::sync::Mutex::new(rs));
    let server = echo_server(&ns, "[::1]:0".parse().unwrap());
    let reader = Reader::start(&ns, num);
    let mut c = connect(&ns, None, server).expect("connect");
    echo_roundtrip(&mut c, b"before").expect("echo");
    eventually("handshake queued", || reader.packets() == 4);

    let flow = FlowKey::new(c.local_addr().unwrap(), server);
    let both = [flow, flow.reversed()];
    let none: [Vec<String>; 2] = Default::default();
    assert_eq!(ns.flow_chains(), none, "no entries, no per-flow rules");
    rs.lock().unwrap().queue_flows(&both).expect("queue flows");
    let queue6 = vec!["queue flows in @flows6".to_owned()];
    assert_eq!(ns.flow_chains(), [queue6.clone(), queue6]);
    echo_roundtrip(&mut c, b"while queued").expect("echo while queued");
    // Over loopback each data segment and ACK passes `out` and `pre`.
    eventually("data packets queued", || reader.packets() >= 4 + 4);
    let queued = reader.packets();

    rs.lock()
        .unwrap()
        .unqueue_flows(&both)
        .expect("unqueue flows");
    assert_eq!(ns.flow_chains(), none, "last entry gone, rule gone");
    echo_roundtrip(&mut c, b"after").expect("echo after");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        reader.packets(),
        queued,
        "packets queued after the flow was removed"
    );

    // Removing an absent entry is refused, naming the set and the errno.
    let err = rs
        .lock()
        .unwrap()
        .unqueue_flows(&[flow])
        .expect_err("absent flow");
    let text = err.to_string();
    assert!(
        text.contains("elements of set flows6") && text.contains("errno 2"),
        "{text}"
    );
}

fn many_flows(n: u32, v6: bool) -> Vec<FlowKey> {
    (0..n)
        .map(|i| {
            let (hi, lo) = ((i >> 8) as u8, i as u8);
            let (a, b): (IpAddr, IpAddr) = if v6 {
                (
                    format!("2001:db8::{hi:x}:{lo:x}")
                        .parse::<Ipv6Addr>()
                        .unwrap()
                        .into(),
                    "2001:db8:1::1".parse::<Ipv6Addr>().unwrap().into(),
                )
            } else {
                (
                    Ipv4Addr::new(198, 51, hi, lo).into(),
                    Ipv4Addr::new(203, 0, 113, 1).into(),
                )
            };
            FlowKey::new(
                SocketAddr::new(a, 40000 + (i % 1000) as u16),
                SocketAddr::new(b, 443),
            )
        })
        .collect()
}

#[test]
fn ten_thousand_flows_install_in_under_a_second() {
    let ns = Netns::new();
    let timings = ns.run(|| {
        let rs = Ruleset::install(&Config::default()).expect("install");
        let mut t = vec![];
        for v6 in [false, true] {
            let flows = many_flows(10_000, v6);
            let start = Instant::now();
            rs.queue_flows(&flows).expect("add 10k");
            let added = start.elapsed();
            let listed = common::sh_here(&format!(
                "nft list set inet rackd flows{}",
                if v6 { 6 } else { 4 }
            ));
            let count = listed.matches(" . 443").count();
            let start = Instant::now();
            rs.unqueue_flows(&flows).expect("remove 10k");
            t.push((v6, added, start.elapsed(), count));
        }
        rs.remove().expect("remove");
        t
    });
    for (v6, added, removed, count) in timings {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        println!("{fam}: 10000 flows added in {added:?}, removed in {removed:?}");
        assert_eq!(count, 10_000, "{fam}: elements listed by nft");
        assert!(
            added.as_secs_f64() < 1.0,
            "{fam}: adding 10k flows took {added:?}"
        );
        assert!(
            removed.as_secs_f64() < 1.0,
            "{fam}: removing 10k flows took {removed:?}"
        );
    }
}

#[test]
fn strictly_queued_flows_are_dropped_without_a_reader() {
    // No reader is bound: an ordinary per-flow entry passes its packets (bypass), a strict one
    // drops them — a flow whose packets only the daemon can rewrite must not go out unrewritten.
    let ns = Netns::new();
    let rs = ns
        .run(|| Ruleset::install(&Config::default()))
        .expect("install");
    let server = echo_server(&ns, "127.0.0.1:0".parse().unwrap());
    let mut c = connect(&ns, None, server).expect("connect with bypass and no reader");
    let flow = FlowKey::new(c.local_addr().unwrap(), server);
    let both = [flow, flow.reversed()];

    rs.queue_flows(&both).expect("queue flows");
    echo_roundtrip(&mut c, b"bypassed").expect("an ordinary entry passes without a reader");
    rs.unqueue_flows(&both).expect("unqueue flows");

    rs.queue_flows_strictly(&both)
        .expect("queue flows strictly");
    let strict4 = vec!["queue flows in @strict4".to_owned()];
    assert_eq!(ns.flow_chains(), [strict4.clone(), strict4]);
    c.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let err = echo_roundtrip(&mut c, b"held").expect_err("a strict entry must drop");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "expected a read timeout, got {err}"
    );

    // Released, the connection carries on: the dropped bytes are retransmitted.
    rs.unqueue_flows_strictly(&both)
        .expect("unqueue strictly queued flows");
    let none: [Vec<String>; 2] = Default::default();
    assert_eq!(ns.flow_chains(), none);
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut c, &mut got).expect("the held bytes arrive once released");
    assert_eq!(&got, b"held");
}
