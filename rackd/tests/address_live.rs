//! Address changes under a live transfer between two rackd hosts (netns-tests harness): the old
//! address is removed from its interface, a new one added, and the connection must carry on
//! with every byte intact. Without rackd the same change kills the connection. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{family_name, paced_transfer, topology};
use netns_tests::Family;
use rackctl::proto::ConnState;

/// Moves `mover` ("client" or "server") to its successor addresses in the middle of a paced
/// two-way transfer; returns whether the transfer arrived intact, and the problems if not.
fn move_during_transfer(family: Family, mover: &str, with_rackd: bool) -> Result<(), String> {
    let topo = topology();
    let port = 5010;
    let (daemons, run) = paced_transfer(&topo, family, with_rackd, port, 12);
    std::thread::sleep(Duration::from_secs(2));
    let old_v4 = topo.host(mover).v4();
    let (v4, v6) = topo.host(mover).addresses().successor();
    topo.change_address(mover, v4, v6).unwrap();
    let new = match family {
        Family::V4 => v4.to_string(),
        Family::V6 => v6.to_string(),
    };
    if let Some((cd, sd)) = &daemons {
        // Both ends show the new address on the wire and the old one as the socket's.
        let (mine, theirs) = if mover == "client" {
            (cd, sd)
        } else {
            (sd, cd)
        };
        let followed = || {
            let a = mine.conn(port);
            let b = theirs.conn(port);
            a.is_some_and(|c| c.local.contains(&new) && c.original_local != c.local)
                && b.is_some_and(|c| {
                    c.remote.contains(&new)
                        && c.original_remote != c.remote
                        && c.state == ConnState::Connected
                })
        };
        let start = std::time::Instant::now();
        while !followed() {
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "both ends did not follow the move to {new}:\nmover: {:?}\nother: {:?}\n\
                 mover rackd:\n{}\nother rackd:\n{}",
                mine.conn(port),
                theirs.conn(port),
                mine.log_tail(),
                theirs.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{}: both ends followed the {mover}'s move to {new} within {} ms",
            family_name(family),
            start.elapsed().as_millis()
        );
        if family == Family::V4 {
            assert_departed_address_unclaimed(&topo, mover, old_v4);
        }
    }
    let report = run.wait().unwrap();
    if report.intact() {
        Ok(())
    } else {
        let logs = daemons.map_or(String::new(), |(c, s)| {
            format!(
                "\nclient rackd:\n{}\nserver rackd:\n{}",
                c.log_tail(),
                s.log_tail()
            )
        });
        Err(format!("{:?}{logs}", report.problems()))
    }
}

/// rackd keeps the departed address on `lo` for the connection's socket; it must not claim it on
/// the link any more (it may belong to another host there now): a neighbour asking for it gets
/// no ARP answer.
fn assert_departed_address_unclaimed(topo: &netns_tests::Topology, mover: &str, old: Ipv4Addr) {
    let router = topo.router();
    let dev = format!("v-{mover}");
    let old = old.to_string();
    let _ = router.run("ip", ["neigh", "flush", "to", &old, "dev", &dev]);
    // Anything sent to the address makes the router ask for it.
    let send = router
        .command("socat")
        .args(["-u", "-", &format!("UDP-SENDTO:{old}:9")])
        .stdin_piped()
        .spawn()
        .expect("socat on the router");
    send.write_stdin(b"who has it?\n").unwrap();
    send.close_stdin();
    let _ = send.wait(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    let neigh = router
        .run("ip", ["neigh", "show", "to", &old, "dev", &dev])
        .expect("ip neigh on the router")
        .stdout;
    assert!(
        !neigh.contains("lladdr"),
        "the departed address {old} was claimed on the link: {neigh}"
    );
}

fn address_change(family: Family, mover: &'static str) {
    let control = std::thread::spawn(move || move_during_transfer(family, mover, false));
    if let Err(problems) = move_during_transfer(family, mover, true) {
        panic!(
            "{} {mover} address change with rackd: {problems}",
            family_name(family)
        );
    }
    assert!(
        control.join().unwrap().is_err(),
        "{}: the same {mover} address change without rackd should break plain TCP",
        family_name(family)
    );
}

#[test]
fn client_address_change_during_a_transfer_v4() {
    address_change(Family::V4, "client");
}

#[test]
fn client_address_change_during_a_transfer_v6() {
    address_change(Family::V6, "client");
}

#[test]
fn server_address_change_during_a_transfer_v4() {
    address_change(Family::V4, "server");
}

#[test]
fn server_address_change_during_a_transfer_v6() {
    address_change(Family::V6, "server");
}
