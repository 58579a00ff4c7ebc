//! An unmodified client on a rackd host and a user-level EDP server (`edp-server`) on a host
//! without rackd, listed in the client rackd's `peer.edp_servers`: rackd probes the server,
//! speaks the announcement and `Init` in the socket's place, and the connection is connected
//! (with the server's connection id and key) but not monitored, since nothing there could
//! answer heartbeats. A listed destination running a plain server costs only the probe.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{family_name, topology, wait_for, Daemon};
use netns_tests::stream::StreamReport;
use netns_tests::{Family, Host, Process};

const MIB: u64 = 1 << 20;

/// Counts datagrams to the daemon channel's port arriving at the server host (which has no
/// rackd): heartbeats sent to a user-level peer would show here.
const COUNT_BEATS: &str = "table inet rk_beats {\n  counter beats { }\n  chain input {\n    type filter hook input priority 0;\n    udp dport 7113 counter name beats\n  }\n}\n";

fn nft(host: &Host, script: &str) {
    let out = common::nft_script(host, script);
    assert!(out.success(), "nft: {}", out.stderr);
}

/// A plain echo server (socat) on `port` in `host`, listening when this returns.
fn socat_echo(host: &Host, family: Family, port: u16) -> Process {
    let listen = match family {
        Family::V4 => format!("TCP4-LISTEN:{port},fork,reuseaddr"),
        Family::V6 => format!("TCP6-LISTEN:{port},fork,reuseaddr"),
    };
    let socat = host
        .spawn("socat", [listen.as_str(), "PIPE"])
        .expect("socat (a plain echo server) must be installed");
    wait_for("socat to listen", Duration::from_secs(10), || {
        host.run("ss", ["-Hltn", &format!("sport = :{port}")])
            .is_ok_and(|o| !o.stdout.trim().is_empty())
    });
    socat
}

fn beats_arrived(host: &Host) -> u64 {
    let out = host
        .run("nft", ["list", "counter", "inet", "rk_beats", "beats"])
        .unwrap();
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {}", out.stdout))
}

/// Runs `f` on a new thread inside network namespace `netns`.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) on a namespace descriptor we hold changes only this thread's network
        // namespace; the thread ends with `f`.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// How long `connect()` to `addr` takes from `host`.
fn connect_time(host: &Host, addr: SocketAddr) -> Duration {
    in_netns(host.netns(), move || {
        let start = Instant::now();
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let took = start.elapsed();
        drop(s);
        took
    })
}

fn client_config(server: SocketAddr) -> String {
    format!("[peer]\nedp_servers = [\"{server}\"]\n")
}

/// An unmodified client sending `bytes` to the echo server at `addr` and reading them back,
/// paced so that the connection lasts a couple of seconds.
fn echo_client(host: &Host, addr: SocketAddr, bytes: u64) -> Process {
    let rk = netns_tests::workspace_bin("rk-stream").expect("rk-stream binary");
    host.command(rk)
        .arg("client")
        .arg(addr.to_string())
        .args([
            "--bytes",
            &bytes.to_string(),
            "--pace",
            &(bytes / 2).to_string(),
        ])
        .spawn()
        .expect("start rk-stream")
}

fn echoed_intact(client: &Process) -> StreamReport {
    let out = client
        .wait(Duration::from_secs(60))
        .expect("rk-stream ends");
    let report = StreamReport::parse(out.stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("rk-stream report {:?}: {e}", out.stdout));
    assert_eq!(report.error, None, "{report:?}");
    assert_eq!(report.bytes_sent, report.bytes_received, "{report:?}");
    assert_eq!(report.digest_sent, report.digest_received, "{report:?}");
    report
}

/// `name=value` from the rackd log line containing `marker`.
fn log_field(log: &str, marker: &str, name: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .map(|v| v.trim_matches('"').to_owned())
}

fn enhanced(family: Family, port: u16, firewall: bool) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    if firewall {
        // The common stateful ruleset (`ct state invalid drop`) on the client host: conntrack
        // must agree with the handshake rackd crafted.
        client
            .firewall_stateful(&[])
            .expect("firewall on the client host");
    }
    let addr = SocketAddr::new(server.ip(family), port);
    nft(server, COUNT_BEATS);
    let edp_server = netns_tests::workspace_bin("edp-server").expect("edp-server binary");
    let srv = server
        .command(edp_server)
        .arg(addr.to_string())
        .spawn()
        .expect("start edp-server");
    srv.wait_for_output("listening", Duration::from_secs(10))
        .unwrap();
    let rackd = Daemon::start(client, &client_config(addr));

    let connect = connect_time(client, addr);
    println!(
        "{}: connect() to a user-level EDP server through rackd took {connect:?}",
        family_name(family)
    );
    let run = echo_client(client, addr, MIB);
    let status = rackd.wait_user_level_connected(port);
    let report = echoed_intact(&run);
    println!(
        "{}: 1 MiB echoed intact in {} ms",
        family_name(family),
        report.elapsed_ms
    );

    // The server agrees on the connection's id and key.
    let said = srv.stdout();
    let line = said
        .lines()
        .find(|l| l.contains(&format!("conn={}", status.id)))
        .unwrap_or_else(|| {
            panic!(
                "edp-server never named connection {}:\n{said}\nrackd:\n{}",
                status.id,
                rackd.log_tail()
            )
        });
    assert!(line.starts_with("enhanced "), "{line}");
    let key = line.rsplit("key=").next().unwrap().trim();
    let log = rackd.log();
    let marker = "connected to a user-level EDP peer";
    let logged: Vec<&str> = log.lines().filter(|l| l.contains(marker)).collect();
    assert!(
        logged
            .iter()
            .any(|l| l.contains(&format!("id={}", status.id)) && l.contains(&format!("key={key}"))),
        "rackd should log id {} with key {key}: {logged:?}",
        status.id
    );
    assert!(log_field(&log, marker, "key").is_some());
    assert!(!log.contains("path to peer failed"), "{}", rackd.log_tail());
    assert_eq!(
        beats_arrived(server),
        0,
        "heartbeats sent to a user-level peer"
    );
    let _ = srv.kill();
}

fn plain(family: Family, port: u16) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let addr = SocketAddr::new(server.ip(family), port);
    let socat = socat_echo(server, family, port);
    let native = connect_time(client, addr);
    let rackd = Daemon::start(client, &client_config(addr));

    let connect = connect_time(client, addr);
    println!(
        "{}: connect() to a listed plain server took {connect:?} with the EDP probe, \
         {native:?} without rackd",
        family_name(family)
    );
    let released = || {
        let s = rackd.status();
        let n = s.daemon.states.get("released").copied().unwrap_or(0);
        (s.connections.is_empty(), n)
    };
    wait_for(
        "the timing connection to end",
        Duration::from_secs(10),
        || released().0,
    );
    let before = released().1;
    let run = echo_client(client, addr, MIB);
    wait_for(
        "the connection to be offered",
        Duration::from_secs(10),
        || rackd.conn(port).is_some(),
    );
    // Released once the daemon channel's probe (the usual fallback) found no rackd there
    // either.
    wait_for(
        "the connection to be released",
        Duration::from_secs(10),
        || {
            let (none, n) = released();
            none && n > before
        },
    );
    echoed_intact(&run);
    let log = rackd.log();
    assert!(
        log.contains("not a user-level EDP server"),
        "the probe should have been negative:\n{}",
        rackd.log_tail()
    );
    assert!(!log.contains("user-level EDP peer"), "{}", rackd.log_tail());
    let _ = socat.kill();
}

#[test]
fn an_unmodified_client_reaches_a_user_level_edp_server_v4() {
    enhanced(Family::V4, 7001, false);
}

#[test]
fn an_unmodified_client_reaches_a_user_level_edp_server_v6() {
    enhanced(Family::V6, 7002, false);
}

#[test]
fn a_listed_plain_server_costs_only_the_probe_v4() {
    plain(Family::V4, 7003);
}

#[test]
fn a_listed_plain_server_costs_only_the_probe_v6() {
    plain(Family::V6, 7004);
}

#[test]
fn through_a_stateful_firewall_on_the_client_host_v4() {
    enhanced(Family::V4, 7005, true);
}

#[test]
fn through_a_stateful_firewall_on_the_client_host_v6() {
    enhanced(Family::V6, 7006, true);
}

/// The other direction is not built (docs/decisions.md, "In-band EDP"): a user-level
/// `edp-client` reaching an unmodified server on a rackd host must fall back to plain TCP
/// cleanly — its probe is answered by the server program, not with the announcement — and
/// rackd on the server must manage nothing.
fn user_level_client(family: Family, port: u16) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let addr = SocketAddr::new(server.ip(family), port);
    let rackd = Daemon::start(server, "");
    let socat = socat_echo(server, family, port);
    let edp_client = netns_tests::workspace_bin("edp-client").expect("edp-client binary");
    let message = "from a user-level client";
    let out = client
        .command(edp_client)
        .args([addr.to_string().as_str(), message])
        .spawn()
        .and_then(|p| p.wait(Duration::from_secs(20)))
        .expect("edp-client runs");
    assert!(out.success(), "edp-client: {}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("plain ")),
        "edp-client should fall back to plain TCP: {:?}",
        out.stdout
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("reply {message}").as_str()),
        "the echo, intact: {:?}",
        out.stdout
    );
    let status = rackd.status();
    assert!(
        status.connections.is_empty(),
        "rackd manages nothing: {:?}",
        status.connections
    );
    assert_eq!(
        status.daemon.states.get("connected").copied().unwrap_or(0),
        0
    );
    let _ = socat.kill();
}

#[test]
fn a_user_level_client_falls_back_to_plain_tcp_with_a_rackd_server_v4() {
    user_level_client(Family::V4, 7008);
}

#[test]
fn a_user_level_client_falls_back_to_plain_tcp_with_a_rackd_server_v6() {
    user_level_client(Family::V6, 7009);
}
