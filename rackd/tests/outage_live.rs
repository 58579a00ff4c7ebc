//! Outages in every combination that matters to a user (netns-tests harness, rackd on client
//! and server with fast monitoring, `tcp_retries2=3` on every host so plain TCP gives up within
//! seconds of an outage): ten outages in a row in one connection, an address change while the
//! link is down, an application that closes or resets during an outage, a reconnection window
//! that expires, and a stateful host firewall. Every data test carries rk-stream data both ways
//! and compares digests; each runs for IPv4 and IPv6 at once. Needs root.
//!
//! Controls: the ten-outage test runs one of its outages without rackd and sees plain TCP die;
//! `managed_live.rs` does the same for a 60 s outage and `address_live.rs` for address changes.

mod common;

use std::panic;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    both_in, family_name, paced_transfer, start_transfer, topology, wait_for, Daemon, FAST_MONITOR,
};
use netns_tests::{Family, Host, StreamOptions, StreamRun, Topology, TwoWayReport};
use rackctl::proto::ConnState;

/// How long each outage of the ten lasts, and the path's time up between two: each outage is
/// longer than plain TCP lives through with data in flight (≈ 3–6 s with `tcp_retries2=3`).
const SHORT_OUTAGE: Duration = Duration::from_secs(8);
const UP_BETWEEN: Duration = Duration::from_secs(3);
/// The test service's port (each test has its own topology).
const PORT: u16 = 5020;
/// The error text of `ECONNRESET` as rk-stream reports it.
const RESET: &str = "os error 104";

/// Runs `test` for IPv4 and IPv6 at once; a failure of either fails the test (after both
/// finished, so that both topologies are cleaned up).
fn both_families(test: fn(Family)) {
    let v6 = thread::spawn(move || test(Family::V6));
    let v4 = panic::catch_unwind(|| test(Family::V4));
    let v6 = v6.join();
    for outcome in [v4, v6] {
        if let Err(e) = outcome {
            panic::resume_unwind(e);
        }
    }
}

/// Both daemons, for waiting on the connection's state and for failure messages.
struct Pair<'a> {
    client: &'a Daemon,
    server: &'a Daemon,
}

impl Pair<'_> {
    fn of(daemons: &Option<(Daemon, Daemon)>) -> Pair<'_> {
        let (client, server) = daemons.as_ref().expect("rackd runs");
        Pair { client, server }
    }

    /// Waits until both ends show the connection in `state` (with `reconnects`, if given);
    /// panics with both daemons' logs after `limit`.
    fn wait(&self, what: &str, limit: Duration, state: ConnState, reconnects: Option<u32>) {
        self.wait_until(what, limit, || {
            both_in(self.client, self.server, PORT, state, reconnects)
        });
    }

    /// Waits until `done` holds; panics with both ends' connection and both daemons' logs after
    /// `limit`.
    fn wait_until(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}:\nclient: {:?}\nserver: {:?}\n{}",
                self.client.conn(PORT),
                self.server.conn(PORT),
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        format!(
            "client rackd:\n{}\nserver rackd:\n{}",
            self.client.log_tail(),
            self.server.log_tail()
        )
    }
}

/// Panics with the transfer's problems and the daemons' logs unless it arrived intact.
fn assert_intact(family: Family, what: &str, report: &TwoWayReport, pair: &Pair) {
    assert!(
        report.intact(),
        "{} {what}: {:?}\n{}",
        family_name(family),
        report.problems(),
        pair.logs()
    );
}

/// The local socket's `bytes_received` for the test connection in `host` (from `ss`), if the
/// connection is established there.
fn socket_bytes_received(host: &Host) -> Option<u64> {
    let (sport, dport) = (format!("sport = :{PORT}"), format!("dport = :{PORT}"));
    let args = [
        "-Htin",
        "state",
        "established",
        "(",
        &sport,
        "or",
        &dport,
        ")",
    ];
    let out = host.run("ss", args).ok()?;
    out.stdout
        .split_whitespace()
        .find_map(|f| f.strip_prefix("bytes_received:"))
        .and_then(|n| n.parse().ok())
}

/// How long after `since` both sockets received new data (polled, so at most ~30 ms late).
fn data_flowing_again(topo: &Topology, since: Instant) -> Duration {
    let hosts = [topo.host("client"), topo.host("server")];
    let before = hosts.map(socket_bytes_received);
    wait_for(
        "data to flow both ways again",
        Duration::from_secs(10),
        || {
            hosts
                .iter()
                .zip(before)
                .all(|(h, b)| socket_bytes_received(h) > b)
        },
    );
    since.elapsed()
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

// ----- ten outages in a row -------------------------------------------------------------------

/// A plain TCP connection (no rackd) through one outage of the ten-outage test's length: it
/// must die, or surviving ten of them would prove nothing.
fn plain_tcp_dies_in_a_short_outage(family: Family) {
    let topo = topology();
    let (_, run) = paced_transfer(&topo, family, false, PORT, 20);
    thread::sleep(Duration::from_secs(1));
    topo.cut("client", "server").unwrap();
    thread::sleep(SHORT_OUTAGE);
    topo.restore("client", "server").unwrap();
    let report = run.wait().unwrap();
    assert!(
        !report.intact(),
        "{}: a {} s outage should kill plain TCP (tcp_retries2=3)",
        family_name(family),
        SHORT_OUTAGE.as_secs()
    );
}

fn ten_outages(family: Family) {
    const OUTAGES: u32 = 10;
    let control = (family == Family::V4)
        .then(|| thread::spawn(move || plain_tcp_dies_in_a_short_outage(family)));
    let topo = topology();
    let cycle = SHORT_OUTAGE + UP_BETWEEN;
    let seconds = u64::from(OUTAGES) * cycle.as_secs() + 4;
    let (daemons, run) = paced_transfer(&topo, family, true, PORT, seconds);
    let pair = Pair::of(&daemons);
    thread::sleep(Duration::from_secs(1));
    let mut resumed = Vec::new();
    let mut flowing = Vec::new();
    for n in 1..=OUTAGES {
        let cut_at = Instant::now();
        topo.cut("client", "server").unwrap();
        pair.wait(
            "both ends to suspend",
            Duration::from_secs(4),
            ConnState::Suspended,
            Some(n - 1),
        );
        thread::sleep(SHORT_OUTAGE.saturating_sub(cut_at.elapsed()));
        let back = Instant::now();
        topo.restore("client", "server").unwrap();
        pair.wait(
            "both ends to resume",
            Duration::from_secs(5),
            ConnState::Connected,
            Some(n),
        );
        resumed.push(back.elapsed());
        flowing.push(data_flowing_again(&topo, back));
        thread::sleep(UP_BETWEEN.saturating_sub(back.elapsed()));
    }
    let report = run.wait().unwrap();
    assert_intact(family, "through ten outages", &report, &pair);
    resumed.sort();
    flowing.sort();
    eprintln!(
        "{}: {OUTAGES} outages of {} s survived; both ends connected again {} to {} (median {}) \
         and data flowing both ways {} to {} (median {}) after the path returned",
        family_name(family),
        SHORT_OUTAGE.as_secs(),
        millis(resumed[0]),
        millis(resumed[resumed.len() - 1]),
        millis(resumed[resumed.len() / 2]),
        millis(flowing[0]),
        millis(flowing[flowing.len() - 1]),
        millis(flowing[flowing.len() / 2]),
    );
    if let Some(control) = control {
        control.join().unwrap();
    }
}

#[test]
fn a_connection_survives_ten_outages_in_a_row() {
    both_families(ten_outages);
}

// ----- an address change during an outage ---------------------------------------------------

/// How a path goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// Dropped at the router: both hosts keep their links and routes.
    RouterCut,
    /// The moving host's link goes down (a Wi-Fi drop, a laptop's suspend): no route at all.
    LinkDown,
}

/// `mover`'s path goes down (`how`) during a paced two-way transfer; while it is down its
/// address is replaced (the old one removed); then the path returns. The connection must follow.
fn move_during_outage(family: Family, mover: &'static str, how: Outage) {
    let topo = topology();
    let (daemons, run) = paced_transfer(&topo, family, true, PORT, 20);
    let pair = Pair::of(&daemons);
    thread::sleep(Duration::from_secs(2));
    let down_at = Instant::now();
    match how {
        Outage::RouterCut => topo.cut("client", "server").unwrap(),
        Outage::LinkDown => topo.link_down(mover).unwrap(),
    }
    pair.wait(
        "both ends to suspend",
        Duration::from_secs(4),
        ConnState::Suspended,
        Some(0),
    );
    let (v4, v6) = topo.host(mover).addresses().successor();
    topo.change_address(mover, v4, v6).unwrap();
    let new = match family {
        Family::V4 => v4.to_string(),
        Family::V6 => v6.to_string(),
    };
    thread::sleep(SHORT_OUTAGE.saturating_sub(down_at.elapsed()));
    let back = Instant::now();
    match how {
        Outage::RouterCut => topo.restore("client", "server").unwrap(),
        Outage::LinkDown => topo.link_up(mover).unwrap(),
    }
    // Connected again, the wire at the new address on both ends (the mover's socket still sees
    // the old one).
    let (mine, theirs) = match mover {
        "client" => (pair.client, pair.server),
        _ => (pair.server, pair.client),
    };
    let followed = || {
        let (m, t) = (mine.conn(PORT), theirs.conn(PORT));
        [&m, &t]
            .iter()
            .all(|c| c.as_ref().is_some_and(|c| c.state == ConnState::Connected))
            && m.is_some_and(|c| c.local.contains(&new))
            && t.is_some_and(|c| c.remote.contains(&new))
    };
    while !followed() {
        assert!(
            back.elapsed() < Duration::from_secs(8),
            "{}: both ends should carry the connection at {mover}'s new address {new}:\n\
             mover: {:?}\nother: {:?}\n{}",
            family_name(family),
            mine.conn(PORT),
            theirs.conn(PORT),
            pair.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let resumed = back.elapsed();
    let report = run.wait().unwrap();
    assert_intact(
        family,
        &format!("{mover} moved during an outage ({how:?})"),
        &report,
        &pair,
    );
    eprintln!(
        "{}: {mover} moved to {new} during a {} s outage ({how:?}); both ends connected at the \
         new address {} after the path returned",
        family_name(family),
        SHORT_OUTAGE.as_secs(),
        millis(resumed)
    );
}

#[test]
fn client_address_change_during_an_outage() {
    both_families(|family| move_during_outage(family, "client", Outage::RouterCut));
}

#[test]
fn server_address_change_during_an_outage() {
    both_families(|family| move_during_outage(family, "server", Outage::RouterCut));
}

#[test]
fn client_address_change_while_its_link_is_down() {
    both_families(|family| move_during_outage(family, "client", Outage::LinkDown));
}

#[test]
fn server_address_change_while_its_link_is_down() {
    both_families(|family| move_during_outage(family, "server", Outage::LinkDown));
}

// ----- the application closes or resets during an outage -------------------------------------

/// State of the test connection's socket in `host` per `ss` (`ESTAB`, `FIN-WAIT-1`, ...).
fn socket_state(host: &Host) -> Option<String> {
    let (sport, dport) = (format!("sport = :{PORT}"), format!("dport = :{PORT}"));
    let args = ["-Htn", "state", "connected", "(", &sport, "or", &dport, ")"];
    let out = host.run("ss", args).ok()?;
    out.stdout.split_whitespace().next().map(str::to_owned)
}

/// How the client application ends its side during the outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// `shutdown(SHUT_WR)`, then it waits for the server's reply (which comes only after the
    /// server has read everything).
    HalfAndAwaitReply,
    /// `close()` and exit: the socket is orphaned with its data and FIN still queued.
    Exit,
}

/// The client writes its last bytes and closes (`how`) while the path is down; after the outage
/// the server must read all of it and the end of stream (and, after a half close, reply).
fn close_during_outage(family: Family, how: Close) {
    // 16 KiB/s for 5 s: the client finishes (and sends its FIN) about 4 s into the outage, with
    // what it wrote during the outage still in its send buffer.
    let rate = 16 * 1024;
    let options = StreamOptions::new(5 * rate)
        .pace(rate)
        .family(family)
        .port(PORT)
        .timeout(Duration::from_secs(60));
    let options = match how {
        Close::HalfAndAwaitReply => options.server_replies_after_eof(),
        Close::Exit => options.client_sends_only(),
    };
    let topo = topology();
    let (daemons, run) = start_transfer(&topo, options, Some(FAST_MONITOR));
    let pair = Pair::of(&daemons);
    thread::sleep(Duration::from_secs(1));
    let cut_at = Instant::now();
    topo.cut("client", "server").unwrap();
    pair.wait(
        "both ends to suspend",
        Duration::from_secs(4),
        ConnState::Suspended,
        Some(0),
    );
    let client = topo.host("client");
    wait_for(
        "the client to close its side",
        Duration::from_secs(8),
        || socket_state(client).is_some_and(|s| s.starts_with("FIN-WAIT")),
    );
    if how == Close::Exit {
        wait_for("the client program to exit", Duration::from_secs(2), || {
            run.client().try_wait().unwrap().is_some()
        });
    }
    thread::sleep(SHORT_OUTAGE.saturating_sub(cut_at.elapsed()));
    assert!(
        socket_state(client).is_some_and(|s| s.starts_with("FIN-WAIT")),
        "{}: the client's socket should be held through the outage ({how:?})",
        family_name(family)
    );
    assert_eq!(
        socket_state(topo.host("server")).as_deref(),
        Some("ESTAB"),
        "{}: the server cannot have seen the FIN during the outage",
        family_name(family)
    );
    let back = Instant::now();
    topo.restore("client", "server").unwrap();
    wait_for(
        "the FIN to reach the server",
        Duration::from_secs(5),
        // CLOSE-WAIT, or already gone once the server closed too.
        || socket_state(topo.host("server")).as_deref() != Some("ESTAB"),
    );
    let fin = back.elapsed();
    let report = run.wait().unwrap();
    assert_intact(
        family,
        &format!("closed during the outage ({how:?})"),
        &report,
        &pair,
    );
    eprintln!(
        "{}: data and FIN sent during a {} s outage ({how:?}) reached the server {} after the \
         path returned; the transfer is intact",
        family_name(family),
        SHORT_OUTAGE.as_secs(),
        millis(fin)
    );
}

#[test]
fn data_and_fin_sent_during_an_outage_arrive_after_it() {
    both_families(|family| close_during_outage(family, Close::HalfAndAwaitReply));
}

#[test]
fn a_program_that_exits_during_an_outage_still_delivers_its_last_bytes() {
    both_families(|family| close_during_outage(family, Close::Exit));
}

/// A paced two-way transfer whose server application resets the connection (`SO_LINGER` 0)
/// `abort_after` it was made, with rackd on both hosts.
fn server_resets(
    topo: &Topology,
    family: Family,
    abort_after: Duration,
) -> (Option<(Daemon, Daemon)>, StreamRun) {
    let options = StreamOptions::new(256 * 1024 * 30)
        .pace(256 * 1024)
        .family(family)
        .port(PORT)
        .server_aborts_after(abort_after)
        .timeout(Duration::from_secs(60));
    start_transfer(topo, options, Some(FAST_MONITOR))
}

/// Waits until the client application has ended; returns when, and its report line's error.
fn client_error(run: &StreamRun, limit: Duration, pair: &Pair) -> (Instant, String) {
    let start = Instant::now();
    while run.client().try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < limit,
            "the client application did not end within {limit:?}:
client: {:?}
server: {:?}
{}",
            pair.client.conn(PORT),
            pair.server.conn(PORT),
            pair.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let ended = Instant::now();
    let line = run.client().stdout();
    let report = netns_tests::stream::StreamReport::parse(line.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client report {line:?}: {e}"));
    (ended, report.error.unwrap_or_default())
}

fn reset_while_suspended(family: Family) {
    let topo = topology();
    let start = Instant::now();
    let (daemons, run) = server_resets(&topo, family, Duration::from_secs(6));
    let pair = Pair::of(&daemons);
    thread::sleep(Duration::from_secs(2).saturating_sub(start.elapsed()));
    topo.cut("client", "server").unwrap();
    pair.wait(
        "both ends to suspend",
        Duration::from_secs(4),
        ConnState::Suspended,
        Some(0),
    );
    wait_for(
        "the server application to reset",
        Duration::from_secs(8),
        || run.server().try_wait().unwrap().is_some(),
    );
    thread::sleep(Duration::from_secs(2));
    assert!(
        run.client().try_wait().unwrap().is_none(),
        "{}: the client cannot have learnt of the reset during the outage",
        family_name(family)
    );
    let back = Instant::now();
    topo.restore("client", "server").unwrap();
    let (ended, error) = client_error(&run, Duration::from_secs(10), &pair);
    assert!(
        error.contains(RESET),
        "{}: the client application should see the peer's reset, saw {error:?}\n{}",
        family_name(family),
        pair.logs()
    );
    wait_for(
        "the client's rackd to forget the connection",
        Duration::from_secs(5),
        || pair.client.conn(PORT).is_none(),
    );
    eprintln!(
        "{}: the peer application's reset during an outage reached the client {} after the \
         path returned",
        family_name(family),
        millis(ended.duration_since(back))
    );
}

#[test]
fn a_reset_by_the_peer_application_during_an_outage_reaches_the_local_one() {
    both_families(reset_while_suspended);
}

fn reset_while_connected(family: Family) {
    let topo = topology();
    let abort_after = Duration::from_secs(2);
    let (daemons, run) = server_resets(&topo, family, abort_after);
    let pair = Pair::of(&daemons);
    wait_for(
        "the server application to reset",
        Duration::from_secs(5),
        || run.server().try_wait().unwrap().is_some(),
    );
    let reset_at = Instant::now();
    let (ended, error) = client_error(&run, Duration::from_secs(5), &pair);
    assert!(
        error.contains(RESET),
        "{}: the client application should see the peer's reset, saw {error:?}\n{}",
        family_name(family),
        pair.logs()
    );
    assert!(
        ended.duration_since(reset_at) < Duration::from_secs(1),
        "{}: the reset took {:?} to reach a connected client",
        family_name(family),
        ended.duration_since(reset_at)
    );
}

#[test]
fn a_reset_by_the_peer_application_while_connected_arrives_at_once() {
    both_families(reset_while_connected);
}

// ----- the reconnection window expires ------------------------------------------------------

fn window_expires(family: Family) {
    const WINDOW: Duration = Duration::from_secs(5);
    let config = format!(
        "{FAST_MONITOR}[reconnect]\nwindow_s = {}\n",
        WINDOW.as_secs()
    );
    let options = StreamOptions::new(256 * 1024 * 30)
        .pace(256 * 1024)
        .family(family)
        .port(PORT)
        .timeout(Duration::from_secs(60));
    let topo = topology();
    let (daemons, run) = start_transfer(&topo, options, Some(&config));
    let pair = Pair::of(&daemons);
    thread::sleep(Duration::from_secs(1));
    topo.cut("client", "server").unwrap();
    pair.wait(
        "both ends to suspend",
        Duration::from_secs(4),
        ConnState::Suspended,
        Some(0),
    );
    let suspended = Instant::now();
    let (ended, error) = client_error(&run, WINDOW + Duration::from_secs(5), &pair);
    let after = ended.duration_since(suspended);
    assert!(
        error.contains(RESET) && after >= WINDOW - Duration::from_secs(1),
        "{}: the client application should be reset when the {} s window expires; it ended \
         {after:?} after the suspension with {error:?}\n{}",
        family_name(family),
        WINDOW.as_secs(),
        pair.logs()
    );
    let report = run.wait().unwrap();
    let server_error = report.server.error.clone().unwrap_or_default();
    assert!(
        server_error.contains(RESET),
        "{}: the server application should be reset too, saw {server_error:?}",
        family_name(family)
    );
    wait_for(
        "both daemons to forget the connection",
        Duration::from_secs(3),
        || pair.client.conn(PORT).is_none() && pair.server.conn(PORT).is_none(),
    );
    eprintln!(
        "{}: the {} s reconnection window expired; the client application was reset {} after \
         the suspension",
        family_name(family),
        WINDOW.as_secs(),
        millis(after)
    );
}

#[test]
fn an_expired_reconnection_window_resets_both_applications() {
    both_families(window_expires);
}

// ----- a stateful host firewall -------------------------------------------------------------

/// The common stateful ruleset on `host`: inbound only established/related traffic, loopback,
/// ICMP, the test service and rackd's daemon channel (UDP 7113); invalid packets dropped both
/// ways. Every drop rule counts, under the name in its comment.
fn stateful_firewall(host: &Host) {
    let rules = [
        "add table inet fw".to_owned(),
        "add chain inet fw input { type filter hook input priority filter; }".to_owned(),
        "add rule inet fw input ct state invalid counter drop comment \"invalid-in\"".to_owned(),
        "add rule inet fw input ct state established,related accept".to_owned(),
        "add rule inet fw input iif lo accept".to_owned(),
        "add rule inet fw input meta l4proto { icmp, ipv6-icmp } accept".to_owned(),
        format!("add rule inet fw input tcp dport {PORT} accept"),
        "add rule inet fw input udp dport 7113 accept".to_owned(),
        "add rule inet fw input counter drop comment \"other-in\"".to_owned(),
        "add chain inet fw output { type filter hook output priority filter; }".to_owned(),
        "add rule inet fw output ct state invalid counter drop comment \"invalid-out\"".to_owned(),
    ];
    for rule in rules {
        host.run("nft", [rule]).unwrap();
    }
}

/// What the firewall of `host` dropped: `name=packets` for each counting rule.
fn firewall_drops(host: &Host) -> String {
    let out = host
        .run("nft", ["list", "table", "inet", "fw"])
        .unwrap()
        .stdout;
    out.lines()
        .filter_map(|l| {
            let packets = l.split("packets ").nth(1)?.split_whitespace().next()?;
            let name = l.split("comment \"").nth(1)?.trim_end_matches('"');
            Some(format!("{name}={packets}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn through_a_firewall(family: Family) {
    const OUTAGE: Duration = Duration::from_secs(30);
    let topo = topology();
    for host in ["client", "server"] {
        stateful_firewall(topo.host(host));
    }
    let (daemons, run) = paced_transfer(&topo, family, true, PORT, OUTAGE.as_secs() + 12);
    let pair = Pair::of(&daemons);
    thread::sleep(Duration::from_secs(2));
    topo.cut("client", "server").unwrap();
    pair.wait(
        "both ends to suspend",
        Duration::from_secs(4),
        ConnState::Suspended,
        Some(0),
    );
    thread::sleep(OUTAGE);
    let back = Instant::now();
    topo.restore("client", "server").unwrap();
    pair.wait(
        "both ends to resume",
        Duration::from_secs(5),
        ConnState::Connected,
        Some(1),
    );
    let flowing = data_flowing_again(&topo, back);
    thread::sleep(Duration::from_secs(1));
    let (v4, v6) = topo.host("client").addresses().successor();
    topo.change_address("client", v4, v6).unwrap();
    let new = match family {
        Family::V4 => v4.to_string(),
        Family::V6 => v6.to_string(),
    };
    pair.wait_until(
        "the server to follow the client's move",
        Duration::from_secs(8),
        || {
            pair.server
                .conn(PORT)
                .is_some_and(|c| c.remote.contains(&new))
        },
    );
    let report = run.wait().unwrap();
    let drops = ["client", "server"].map(|h| format!("{h}: {}", firewall_drops(topo.host(h))));
    assert_intact(
        family,
        &format!("behind stateful firewalls (drops {drops:?})"),
        &report,
        &pair,
    );
    eprintln!(
        "{}: behind ct-state firewalls a {} s outage and a client move to {new} survived; data \
         flowing {} after the path returned; firewall drops {drops:?}",
        family_name(family),
        OUTAGE.as_secs(),
        millis(flowing)
    );
}

#[test]
fn a_stateful_firewall_on_both_hosts_breaks_nothing() {
    both_families(through_a_firewall);
}
