//! Data crosses the topology intact, and the integrity checks notice when it does not.

use std::time::Duration;

use netns_tests::stream::digest_of;
use netns_tests::{nc_transfer, stream_both_ways, Family, StreamOptions, Topology};

#[test]
fn hundred_megabytes_cross_intact_in_both_directions() {
    let topo = Topology::new().expect("topology");
    let bytes = 100 << 20;
    let options = StreamOptions::new(bytes).timeout(Duration::from_secs(90));
    let report =
        stream_both_ways(topo.host("client"), topo.host("server"), options).expect("stream");
    assert!(report.intact(), "{:?}", report.problems());
    assert_eq!(report.client.bytes_received, bytes);
    assert_eq!(report.server.bytes_received, bytes);
    assert_eq!(report.server.digest_received, digest_of(1, bytes));
    assert_eq!(report.client.digest_received, digest_of(2, bytes));
    eprintln!("100 MiB each way in {} ms", report.client.elapsed_ms);
}

#[test]
fn ipv6_stream_through_a_stateful_firewall() {
    let topo = Topology::new().expect("topology");
    let (client, server) = (topo.host("client"), topo.host("server"));
    server.firewall_stateful(&[5001]).expect("firewall");
    client.firewall_stateful(&[]).expect("firewall");
    let options = StreamOptions::new(4 << 20).family(Family::V6);
    let report = stream_both_ways(client, server, options).expect("stream");
    assert!(report.intact(), "{:?}", report.problems());
    // A port that is not open: the SYN is dropped, the connection attempt times out.
    let target = server.v6().to_string();
    let blocked = client
        .command("busybox")
        .args(["nc", "-w1", &target, "5002"])
        .run(Duration::from_secs(5));
    assert!(
        !blocked.expect("nc runs").success(),
        "port 5002 must be closed"
    );
    let rules = server
        .run("nft", ["list", "table", "inet", "rk_firewall"])
        .expect("nft")
        .stdout;
    assert!(
        rules.contains("policy drop") && rules.contains("ct state invalid drop"),
        "{rules}"
    );
    // The client's firewall accepts no new connections at all.
    client.firewall_stateful(&[]).expect("replace");
    server.firewall_remove().expect("remove");
    assert!(server
        .run("nft", ["list", "tables"])
        .expect("nft")
        .stdout
        .trim()
        .is_empty());
}

#[test]
fn integrity_check_reports_a_transfer_that_broke_off() {
    let topo = Topology::new().expect("topology");
    for host in topo.hosts() {
        host.sysctl("net.ipv4.tcp_retries2", "3").expect("sysctl");
    }
    let options = StreamOptions::new(8 << 20)
        .pace(1 << 20)
        .timeout(Duration::from_secs(20));
    let run = netns_tests::StreamRun::start(topo.host("client"), topo.host("server"), options)
        .expect("start");
    run.server()
        .wait_for_output("connection from", Duration::from_secs(5))
        .expect("connected");
    topo.cut("client", "server").expect("cut");
    let report = run.wait().expect("ends exit");
    assert!(!report.intact());
    let problems = report.problems().join("\n");
    assert!(
        problems.contains("client error") && problems.contains("of 8388608 bytes"),
        "{problems}"
    );
}

#[test]
fn netcat_copies_a_file_intact_both_ways() {
    let topo = Topology::new().expect("topology");
    let (client, server) = (topo.host("client"), topo.host("server"));
    let options = StreamOptions::new(3 << 20).port(7001);
    let report = nc_transfer(client, server, &options).expect("nc client -> server");
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.digest_received, digest_of(1, 3 << 20));
    let report =
        nc_transfer(server, client, &options.family(Family::V6)).expect("nc server -> client");
    assert!(report.intact(), "{report:?}");
}
