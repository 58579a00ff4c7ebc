//! The rackd option stripped on the path (the router resets TCP option 253 in every SYN, as
//! some middleboxes do with options they do not know): the client's rackd probes the server's
//! over the daemon channel, and the connection is managed all the same — same id on both
//! ends, and an outage is survived with tcp_retries2=3.

mod common;

use std::time::Duration;

use common::{assert_connected_on_both, family_name, paced_transfer, topology, wait_for};
use netns_tests::Family;
use rackctl::proto::ConnState;

/// Makes the router strip rackd's option (kind 253) from every forwarded SYN and SYN-ACK.
fn strip_the_option(topo: &netns_tests::Topology) {
    let rules = "table inet strip {\n  chain forward {\n    type filter hook forward priority -10;\n    tcp flags syn reset tcp option 253\n  }\n}\n";
    let out = common::nft_script(topo.router(), rules);
    assert!(
        out.success(),
        "the router cannot strip TCP options (nft `reset tcp option` needs kernel 5.x+): {}",
        out.stderr
    );
}

fn stripped_option(family: Family, port: u16) {
    let topo = topology();
    strip_the_option(&topo);
    let (daemons, run) = paced_transfer(&topo, family, true, port, 20);
    let (client, server) = daemons.unwrap();
    let id = assert_connected_on_both(&client, &server, port);
    topo.cut("client", "server").unwrap();
    wait_for("both ends to suspend", Duration::from_secs(4), || {
        [&client, &server].iter().all(|d| {
            d.conn(port)
                .is_some_and(|c| c.state == ConnState::Suspended)
        })
    });
    std::thread::sleep(Duration::from_secs(8));
    topo.restore("client", "server").unwrap();
    let report = run.wait().unwrap();
    assert!(
        report.intact(),
        "{}: connection {id} through an 8 s outage: {:?}\nclient rackd:\n{}\nserver rackd:\n{}",
        family_name(family),
        report.problems(),
        client.log_tail(),
        server.log_tail()
    );
    // The option really was stripped: the server's rackd learnt of the connection by probe.
    assert!(
        server
            .log()
            .contains("probed: the option was stripped on the path"),
        "the server's rackd should have been probed:\n{}",
        server.log_tail()
    );
}

#[test]
fn a_stripped_option_still_gives_a_managed_connection_v4() {
    stripped_option(Family::V4, 5401);
}

#[test]
fn a_stripped_option_still_gives_a_managed_connection_v6() {
    stripped_option(Family::V6, 5402);
}
