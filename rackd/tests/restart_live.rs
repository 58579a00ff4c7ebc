//! A restart of rackd at one end keeps its managed connections protected: the next run takes
//! them over from the state file, and an outage after the restart is survived (tcp_retries2=3,
//! so without rackd's protection the connection dies in seconds). A crash (SIGKILL: nothing
//! saved at exit, rules left behind) and a clean stop (SIGTERM) are both tried.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{family_name, paced_transfer, topology, wait_for, Daemon, FAST_MONITOR};
use netns_tests::Family;
use rackctl::proto::ConnState;

const OUTAGE: Duration = Duration::from_secs(20);

fn restart_then_outage(family: Family, signal: libc::c_int, port: u16) {
    let topo = topology();
    let (daemons, run) = paced_transfer(&topo, family, true, port, 45);
    let (old_client, server) = daemons.unwrap();
    let id = old_client.conn(port).unwrap().id;
    let state = old_client.socket.with_file_name("flows.state");
    // Written at most once a second: a crash right after the connection was set up loses it.
    let conn_id = u64::from_str_radix(&id, 16).unwrap().to_string();
    wait_for(
        "the connection in the state file",
        Duration::from_secs(5),
        || std::fs::read_to_string(&state).is_ok_and(|s| s.contains(&conn_id)),
    );
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the state file holds secrets");

    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(old_client.pid() as i32, signal) }, 0);
    wait_for("the old rackd to exit", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{}/stat", old_client.pid())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", old_client.pid()))
                .is_ok_and(|s| s.contains(") Z "))
    });
    // `old_client` lives on (declared first, dropped last): its directory is the new run's.
    let started = Instant::now();
    let client = Daemon::start(topo.host("client"), FAST_MONITOR);
    wait_for(
        "the restarted rackd to take the connection over",
        Duration::from_secs(5),
        || {
            client
                .conn(port)
                .is_some_and(|c| c.id == id && c.state == ConnState::Connected)
        },
    );
    eprintln!(
        "{}: connection {id} taken over {:?} after the restart began",
        family_name(family),
        started.elapsed()
    );
    wait_for(
        "the server side to be connected",
        Duration::from_secs(10),
        || {
            server
                .conn(port)
                .is_some_and(|c| c.state == ConnState::Connected)
        },
    );

    topo.cut("client", "server").unwrap();
    std::thread::sleep(OUTAGE);
    topo.restore("client", "server").unwrap();
    wait_for(
        "the restarted rackd to resume the connection",
        Duration::from_secs(10),
        || {
            client
                .conn(port)
                .is_some_and(|c| c.state == ConnState::Connected && c.reconnects >= 1)
        },
    );
    let report = run.wait().unwrap();
    assert!(
        report.intact(),
        "{} after a restart and a {OUTAGE:?} outage: {:?}\nclient rackd:\n{}\nserver rackd:\n{}",
        family_name(family),
        report.problems(),
        client.log_tail(),
        server.log_tail()
    );
}

#[test]
fn a_connection_survives_an_outage_after_rackd_crashed_and_restarted_v4() {
    restart_then_outage(Family::V4, libc::SIGKILL, 5301);
}

#[test]
fn a_connection_survives_an_outage_after_rackd_was_stopped_and_restarted_v6() {
    restart_then_outage(Family::V6, libc::SIGTERM, 5302);
}
