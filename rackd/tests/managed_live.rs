//! rackd on a client and a server host behind a router (netns-tests harness): managed
//! connections, heartbeats, suspension through an outage. Plain TCP on every host is tuned to
//! give up within seconds (`tcp_retries2=3`), so surviving an outage is rackd's doing; each
//! outage test runs the same outage without rackd as its control. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_connected_on_both, family_name, paced_transfer, topology, wait_for, Daemon, FAST_MONITOR,
};
use netns_tests::{stream_both_ways, Family, StreamOptions, StreamRun};
use rackctl::proto::ConnState;

fn managed_gigabyte(family: Family) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let cd = Daemon::start(client, "");
    let sd = Daemon::start(server, "");
    let port = 5001;
    let options = StreamOptions::new(1 << 30)
        .family(family)
        .port(port)
        .timeout(Duration::from_secs(120));
    let run = StreamRun::start(client, server, options).unwrap();
    assert_connected_on_both(&cd, &sd, port);
    // The socket table feeds the byte counters (read once a second).
    wait_for("byte counters in status", Duration::from_secs(30), || {
        [&cd, &sd].iter().all(|d| {
            d.conn(port)
                .is_some_and(|c| c.bytes_sent > 0 && c.bytes_received > 0)
        })
    });
    let report = run.wait().unwrap();
    assert!(
        report.intact(),
        "{}: {:?}",
        family_name(family),
        report.problems()
    );
}

#[test]
fn managed_connection_carries_a_gigabyte_both_ways_v4() {
    managed_gigabyte(Family::V4);
}

#[test]
fn managed_connection_carries_a_gigabyte_both_ways_v6() {
    managed_gigabyte(Family::V6);
}

/// A paced two-way stream through a cut of `outage`. Returns the stream's report, how long after
/// the path returned both daemons had resumed, and the daemons' log tails.
fn outage(
    family: Family,
    with_rackd: bool,
    outage: Duration,
) -> (netns_tests::TwoWayReport, Option<Duration>, String) {
    let topo = topology();
    let port = 5002;
    let (daemons, run) = paced_transfer(&topo, family, with_rackd, port, outage.as_secs() + 8);
    std::thread::sleep(Duration::from_secs(2));
    topo.cut("client", "server").unwrap();
    if let Some((cd, sd)) = &daemons {
        wait_for("both ends to suspend", Duration::from_secs(3), || {
            [cd, sd].iter().all(|d| {
                d.conn(port)
                    .is_some_and(|c| c.state == ConnState::Suspended)
            })
        });
    }
    std::thread::sleep(outage);
    let back = Instant::now();
    topo.restore("client", "server").unwrap();
    let mut resumed = None;
    if let Some((cd, sd)) = &daemons {
        wait_for("both ends to resume", Duration::from_secs(5), || {
            [cd, sd].iter().all(|d| {
                d.conn(port)
                    .is_some_and(|c| c.state == ConnState::Connected && c.reconnects == 1)
            })
        });
        resumed = Some(back.elapsed());
    }
    let report = run.wait().unwrap();
    let logs = daemons.map_or(String::new(), |(c, s)| {
        format!(
            "client rackd:\n{}\nserver rackd:\n{}",
            c.log_tail(),
            s.log_tail()
        )
    });
    (report, resumed, logs)
}

fn outage_test(family: Family) {
    let secs = std::env::var("RACKD_TEST_OUTAGE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let d = Duration::from_secs(secs);
    let control = std::thread::spawn(move || outage(family, false, d).0);
    let (report, resumed, logs) = outage(family, true, d);
    assert!(
        report.intact(),
        "{} with rackd through a {secs} s outage: {:?}\n{logs}",
        family_name(family),
        report.problems()
    );
    eprintln!(
        "{}: {secs} s outage survived; both ends resumed {:?} after the path returned",
        family_name(family),
        resumed.unwrap()
    );
    let control = control.join().unwrap();
    assert!(
        !control.intact(),
        "{}: the same outage without rackd should kill plain TCP (tcp_retries2=3)",
        family_name(family)
    );
}

#[test]
fn outage_is_survived_with_rackd_and_kills_plain_tcp_v4() {
    outage_test(Family::V4);
}

#[test]
fn outage_is_survived_with_rackd_and_kills_plain_tcp_v6() {
    outage_test(Family::V6);
}

#[test]
fn a_connection_to_a_host_without_rackd_is_released() {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let cd = Daemon::start(client, "");
    let report = stream_both_ways(
        client,
        server,
        StreamOptions::new(32 << 20).port(5003).family(Family::V4),
    )
    .unwrap();
    assert!(report.intact(), "{:?}", report.problems());
    // Gone once the server's daemon did not answer the probe (peer.fallback, 1.5 s) or the
    // socket closed, and never managed.
    wait_for(
        "the connection to leave the table",
        Duration::from_secs(3),
        || cd.conn(5003).is_none(),
    );
    assert_eq!(cd.status().daemon.states["connected"], 0);
}

/// Suspended on purpose (`rackctl suspend`) before a cut; the cut passes; `rackctl resume`
/// brings it back and nothing is lost.
#[test]
fn a_connection_suspended_by_command_survives_a_cut_and_resumes_on_command() {
    let secs: u64 = std::env::var("RACKD_TEST_OUTAGE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let cd = Daemon::start(client, FAST_MONITOR);
    let sd = Daemon::start(server, FAST_MONITOR);
    let port = 5004;
    let options = StreamOptions::new(256 * 1024 * (secs + 10))
        .pace(256 * 1024)
        .port(port)
        .timeout(Duration::from_secs(secs + 90));
    let run = StreamRun::start(client, server, options).unwrap();
    let id = assert_connected_on_both(&cd, &sd, port);
    std::thread::sleep(Duration::from_secs(1));
    let mut ctl = rackctl::client::Client::connect(&cd.socket).unwrap();
    ctl.suspend(&id).unwrap();
    assert_eq!(cd.conn(port).unwrap().state, ConnState::Suspended);
    std::thread::sleep(Duration::from_secs(2));
    topo.cut("client", "server").unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    topo.restore("client", "server").unwrap();
    // The server side resumes by itself; the client side waits for the operator.
    wait_for("the server to resume", Duration::from_secs(5), || {
        sd.conn(port)
            .is_some_and(|c| c.state == ConnState::Connected)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cd.conn(port).unwrap().state, ConnState::Suspended);
    ctl.resume(&id).unwrap();
    let report = run.wait().unwrap();
    assert!(
        report.intact(),
        "{:?}\nclient rackd:\n{}\nserver rackd:\n{}",
        report.problems(),
        cd.log_tail(),
        sd.log_tail()
    );
}
