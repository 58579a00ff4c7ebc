//! The faults are real: cut paths kill or stall connections, restores heal them, address
//! changes break old connections, rate limits limit.

use std::thread::sleep;
use std::time::{Duration, Instant};

use netns_tests::{Family, StreamOptions, StreamRun, Topology};

/// Sets `tcp_retries2=3` on every host, so plain TCP aborts a few seconds into an outage.
fn short_retries(topo: &Topology) {
    for host in topo.hosts() {
        host.sysctl("net.ipv4.tcp_retries2", "3").expect("sysctl");
    }
}

/// Starts a paced two-way stream that would take far longer than any test and waits until
/// data flows.
fn long_stream(topo: &Topology, family: Family) -> StreamRun {
    let options = StreamOptions::new(100 << 20)
        .pace(1 << 20)
        .family(family)
        .timeout(Duration::from_secs(40));
    let run =
        StreamRun::start(topo.host("client"), topo.host("server"), options).expect("start stream");
    run.server()
        .wait_for_output("connection from", Duration::from_secs(5))
        .expect("connected");
    sleep(Duration::from_millis(500));
    run
}

/// Whether `from` can reach `to` over `family` with one ping (one second).
fn reachable(topo: &Topology, from: &str, to: &str, family: Family) -> bool {
    let target = topo.host(to).ip(family).to_string();
    let host = topo.host(from);
    let out = host
        .command("busybox")
        .args(["ping", "-c1", "-W1", &target])
        .run(Duration::from_secs(5));
    out.expect("ping runs").success()
}

#[test]
fn a_30s_cut_kills_plain_tcp_with_short_retries() {
    let topo = Topology::new().expect("topology");
    short_retries(&topo);
    let run = long_stream(&topo, Family::V4);
    let cut_at = Instant::now();
    topo.cut("client", "server").expect("cut");
    // The cut lasts up to 30 s: both ends must give up within it.
    let report = run.wait().expect("both ends exit on their own");
    let died_after = cut_at.elapsed();
    topo.restore("client", "server").expect("restore");
    assert!(died_after < Duration::from_secs(30), "took {died_after:?}");
    let errors = report.errors();
    assert_eq!(errors.len(), 2, "both ends report an error: {report:?}");
    assert!(errors.iter().all(|e| e.contains("timed out")), "{errors:?}");
    assert!(report.client.bytes_received < report.bytes, "{report:?}");
}

#[test]
fn a_short_cut_is_survived_and_restore_heals_the_path() {
    let topo = Topology::new().expect("topology");
    let options = StreamOptions::new(4 << 20).pace(1 << 20).family(Family::V6);
    let run = StreamRun::start(topo.host("client"), topo.host("server"), options).expect("start");
    run.server()
        .wait_for_output("connection from", Duration::from_secs(5))
        .expect("connected");
    sleep(Duration::from_millis(500));
    topo.cut("client", "server").expect("cut");
    assert!(
        !reachable(&topo, "client", "server", Family::V6),
        "cut path still answers"
    );
    sleep(Duration::from_secs(1));
    topo.restore("client", "server").expect("restore");
    let report = run.wait().expect("stream");
    assert!(report.intact(), "{:?}", report.problems());
    assert!(
        report.client.elapsed_ms >= 4000,
        "a paced transfer cannot be faster: {report:?}"
    );
}

#[test]
fn a_cut_affects_only_its_own_path() {
    let topo = Topology::builder().host("third").build().expect("topology");
    topo.cut("client", "server").expect("cut");
    for family in [Family::V4, Family::V6] {
        assert!(!reachable(&topo, "client", "server", family));
        assert!(!reachable(&topo, "server", "client", family));
        assert!(reachable(&topo, "client", "third", family));
        assert!(reachable(&topo, "third", "server", family));
    }
    // Endpoints see no link change.
    let link = topo
        .host("client")
        .run("ip", ["-o", "link", "show", "eth0"])
        .expect("ip")
        .stdout;
    assert!(link.contains("state UP"), "{link}");
    topo.restore_all().expect("restore");
    assert!(reachable(&topo, "client", "server", Family::V4));
}

#[test]
fn a_one_way_cut_drops_only_that_direction() {
    let topo = Topology::new().expect("topology");
    topo.cut_one_way("server", "client").expect("cut");
    // The client's SYN reaches the server (a half-open connection appears there) but the
    // SYN-ACK is dropped; the server's SYN to the client is dropped outright.
    let half_open = |host: &str| {
        let out = topo
            .host(host)
            .run("ss", ["-Htn", "state", "syn-recv"])
            .expect("ss")
            .stdout;
        !out.trim().is_empty()
    };
    let try_connect = |from: &str, to: &str| {
        let _listener = topo
            .host(to)
            .spawn("busybox", ["nc", "-l", "-p", "7000"])
            .expect("listen");
        sleep(Duration::from_millis(100));
        let target = topo.host(to).v4().to_string();
        let connector = topo
            .host(from)
            .spawn("busybox", ["nc", "-w3", &target, "7000"])
            .expect("connect");
        sleep(Duration::from_millis(500));
        let seen = half_open(to);
        let connected = connector.try_wait().expect("wait").is_none()
            && topo
                .host(from)
                .run("ss", ["-Htn", "state", "established"])
                .expect("ss")
                .stdout
                .contains(":7000");
        (seen, connected)
    };
    assert_eq!(
        try_connect("client", "server"),
        (true, false),
        "client -> server: SYN arrives, no connection"
    );
    assert_eq!(
        try_connect("server", "client"),
        (false, false),
        "server -> client: SYN dropped"
    );
    topo.restore("client", "server").expect("restore");
    assert!(reachable(&topo, "server", "client", Family::V4), "restored");
}

#[test]
fn link_down_and_up() {
    let topo = Topology::new().expect("topology");
    topo.link_down("client").expect("down");
    let link = topo
        .host("client")
        .run("ip", ["-o", "link", "show", "eth0"])
        .expect("ip")
        .stdout;
    assert!(!link.contains("state UP"), "{link}");
    assert!(!reachable(&topo, "server", "client", Family::V4));
    topo.link_up("client").expect("up");
    for family in [Family::V4, Family::V6] {
        assert!(
            reachable(&topo, "client", "server", family),
            "{family:?} after link up"
        );
    }
}

#[test]
fn an_address_changed_while_the_link_is_down_works_once_it_is_up() {
    let topo = Topology::new().expect("topology");
    topo.link_down("client").expect("down");
    let (v4, v6) = topo.host("client").addresses().successor();
    topo.change_address("client", v4, v6)
        .expect("change address while down");
    let shown = topo
        .host("client")
        .run("ip", ["-o", "addr", "show", "eth0"])
        .expect("ip")
        .stdout;
    assert!(
        shown.contains(&format!("{v4}/")) && !shown.contains("192.0.2.2/"),
        "{shown}"
    );
    topo.link_up("client").expect("up");
    for family in [Family::V4, Family::V6] {
        assert!(
            reachable(&topo, "server", "client", family),
            "{family:?} at the new address"
        );
    }
}

#[test]
fn an_address_change_breaks_the_old_connection_and_the_new_address_works() {
    let topo = Topology::new().expect("topology");
    short_retries(&topo);
    let run = long_stream(&topo, Family::V4);
    let client = topo.host("client");
    let old = client.addresses();
    let (v4, v6) = old.successor();
    topo.change_address("client", v4, v6)
        .expect("change address");
    assert_eq!((client.v4(), client.v6()), (v4, v6));
    let report = run.wait().expect("both ends exit");
    assert_eq!(
        report.errors().len(),
        2,
        "old connection must fail at both ends: {:?}",
        report.errors()
    );
    let shown = client
        .run("ip", ["-o", "addr", "show", "eth0"])
        .expect("ip")
        .stdout;
    assert!(
        !shown.contains(&format!("{}/", old.v4)) && shown.contains(&format!("{v4}/")),
        "{shown}"
    );
    // New connections use the new address.
    for family in [Family::V4, Family::V6] {
        let run = StreamRun::start(
            client,
            topo.host("server"),
            StreamOptions::new(64 << 10).family(family),
        )
        .expect("start");
        run.server()
            .wait_for_output("connection from", Duration::from_secs(5))
            .expect("connected");
        let peer = match family {
            Family::V4 => v4.to_string(),
            Family::V6 => v6.to_string(),
        };
        assert!(
            run.server().stderr().contains(&peer),
            "{}",
            run.server().stderr()
        );
        let report = run.wait().expect("stream");
        assert!(report.intact(), "{:?}", report.problems());
    }
}

#[test]
fn an_address_in_another_subnet_moves_the_link() {
    let topo = Topology::new().expect("topology");
    let v4 = "192.0.2.130".parse().unwrap();
    let v6 = "2001:db8:99::2".parse().unwrap();
    topo.change_address("client", v4, v6).expect("move");
    let a = topo.host("client").addresses();
    assert_eq!(a.v4_gateway.to_string(), "192.0.2.129");
    assert_eq!(a.v6_gateway.to_string(), "2001:db8:99::1");
    for family in [Family::V4, Family::V6] {
        assert!(reachable(&topo, "client", "server", family), "{family:?}");
    }
    let taken = topo.change_address("client", "198.51.100.9".parse().unwrap(), v6);
    assert!(
        matches!(taken, Err(netns_tests::Error::BadAddress { .. })),
        "{taken:?}"
    );
}

#[test]
fn a_rate_limit_slows_both_directions() {
    let topo = Topology::new().expect("topology");
    let (client, server) = (topo.host("client"), topo.host("server"));
    // 1 MiB each way at 8 Mbit/s takes about a second.
    topo.rate_limit("client", 8_000_000).expect("limit");
    let report =
        netns_tests::stream_both_ways(client, server, StreamOptions::new(1 << 20)).expect("stream");
    assert!(report.intact(), "{:?}", report.problems());
    let limited = report.client.elapsed_ms;
    assert!((800..5000).contains(&limited), "took {limited} ms");
    topo.clear_rate_limit("client").expect("clear");
    let report =
        netns_tests::stream_both_ways(client, server, StreamOptions::new(1 << 20)).expect("stream");
    assert!(
        report.client.elapsed_ms < limited / 2,
        "unlimited took {} ms",
        report.client.elapsed_ms
    );
}
