//! Real, unmodified programs from Debian packages through what kills plain TCP: each scenario runs
//! its programs between client and server (rackd on both, `tcp_retries2=3` on every host), takes
//! the router's link towards the client down for 60 s, brings it back, then replaces the client's
//! address — and checks that the programs' sessions carried on with every byte intact and that
//! rackd held every connection (suspended or reconnecting during the outage, connected after,
//! following the new address).
//!
//! - SSH: an interactive shell (sshd and ssh, key authentication, a pseudo-terminal); output
//!   produced and input typed during the outage arrive; digests and markers checked.
//! - HTTP: nginx serves 200 MB, curl downloads it at a limited rate across both faults; SHA-256
//!   compared.
//! - Redis: clients blocked in `BLPOP` receive pushes made after the outage and after the move; a
//!   long-lived connection keeps its client id and its data.
//! - iperf3 in both directions (`-R`) at once, reports checked for errors and byte counts.
//! - 1,000 concurrent connections (`rk-fanout`) with echo rounds before, during and after.
//!
//! The static busybox `nc` and the setuid binary are in `rackd/tests/programs_live.rs`.
//!
//! The scenarios run at the same time, each on its own topology, inside one test (about two and
//! a half minutes): a test runner gives each test one of a few slots, and five tests of two
//! minutes each would hold them for much longer. `RACKD_SCENARIOS=ssh,http` runs only the named
//! ones (the test says which it skipped); `RACKD_TEST_OUTAGE_S` shortens the outage while
//! developing. Needs root and the Debian packages of `make deps`: without them a scenario fails
//! and says what is missing.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use integration::fanout::{payload, Fanout};
use integration::programs::http::{Download, Nginx};
use integration::programs::iperf::{IperfReport, IperfRun, IperfServer};
use integration::programs::redis::RedisServer;
use integration::programs::ssh::{SshServer, SshSession};
use integration::programs::{pattern_file, sha256_file};
use integration::scratch::Scratch;
use integration::testbed::{poll, MoveReport, OutageReport, Result, ScenarioError, Testbed};
use netns_tests::Family;

fn outage_length() -> Duration {
    let secs = std::env::var("RACKD_TEST_OUTAGE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// A scenario's outcome: the numbers worth printing.
type Summary = String;

fn faults(outage: &OutageReport, moved: &MoveReport) -> String {
    format!(
        "outage {:.1} s (held after {:.2} s, all connected {:.2} s after the link came back); \
         move to {} followed in {:.2} s",
        outage.length.as_secs_f64(),
        outage.detected_in.as_secs_f64(),
        outage.resumed_in.as_secs_f64(),
        moved.new_v4,
        moved.followed_in.as_secs_f64()
    )
}

/// Runs `scenario` on a new testbed; a failure carries the tails of both daemons' logs.
fn on_testbed(scenario: impl FnOnce(&Testbed) -> Result<Summary>) -> Result<Summary> {
    let bed = Testbed::start("info")?;
    scenario(&bed).map_err(|e| ScenarioError::program("scenario", format!("{e}\n{}", bed.logs())))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(ScenarioError::program("check", what()))
    }
}

// ----- SSH ----------------------------------------------------------------------------------

const SSH_PORT: u16 = 2222;
/// Lines the remote loop prints, one every 0.2 s: it runs before, through and after the outage.
const TICKS: u32 = 400;

/// The numbers `TICK-<n>-OK` on the screen, in order, wherever they stand on a line. A line
/// typed before the shell prints its prompt is echoed by the terminal first; the prompt then
/// stands in front of the command's first output (`# TICK-0-OK`, seen once in CI). The typed
/// command itself reads `TICK-$i-OK` and does not count.
fn ticks_seen(screen: &str) -> Vec<u32> {
    screen
        .split("TICK-")
        .skip(1)
        .filter_map(|rest| {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 || !rest[digits..].starts_with("-OK") {
                return None;
            }
            rest[..digits].parse().ok()
        })
        .collect()
}

#[test]
fn ticks_are_read_behind_the_prompt_and_not_from_the_typed_command() {
    let screen = "i=0; while ...; do echo TICK-$i-OK; ...\n# TICK-0-OK\n\x1b[0mTICK-1-OK\n";
    assert_eq!(ticks_seen(screen), [0, 1]);
}

fn ssh(bed: &Testbed) -> Result<Summary> {
    let scratch = Scratch::new(bed.topo.id(), "ssh")?;
    let (client, server) = (bed.client(), bed.server());
    let data = scratch.path("data.bin");
    let digest = pattern_file(&data, 7, 8 << 20)?;
    let b64_source = scratch.path("b64.bin");
    pattern_file(&b64_source, 8, 256 << 10)?;
    let b64_expected = base64_of(&b64_source)?;

    let sshd = SshServer::start(server, &scratch, server.ip(Family::V4), SSH_PORT)?;
    let session = SshSession::open(client, &sshd)?;
    let long = Duration::from_secs(20);
    // Markers are computed by the shell, so the terminal's echo of the typed line never matches.
    session.type_line("echo BEFORE-$((40+2))")?;
    session.wait_for("BEFORE-42", long)?;
    let ids = bed.managed_on(SSH_PORT, 1, Duration::from_secs(10))?;
    let sum_line = format!("{digest}  {}", data.display());
    session.type_line(&format!("sha256sum {}", data.display()))?;
    session.wait_for(&sum_line, long)?;

    session.type_line(&format!(
        "i=0; while [ $i -lt {TICKS} ]; do echo TICK-$i-OK; i=$((i+1)); sleep 0.2; done; \
         echo TICKS-$((6*7))-DONE"
    ))?;
    session.wait_for("TICK-3-OK", long)?;
    let outage = bed.begin_outage(&ids)?;
    // Typed while the path is down: the shell runs it once the loop is done.
    session.type_line("echo DURING-$((50+5))")?;
    let ticks_at_cut = ticks_seen(&session.screen()).len();
    let outage = outage.end_after(outage_length())?;
    let first_tick_after =
        poll("a new tick after the outage", long, |_| {
            Ok((ticks_seen(&session.screen()).len() > ticks_at_cut + 1)
                .then(|| outage.up_at.elapsed()))
        })?;
    session.wait_for("TICKS-42-DONE", Duration::from_secs(120))?;
    session.wait_for("DURING-55", long)?;
    let ticks = ticks_seen(&session.screen());
    ensure(ticks == (0..TICKS).collect::<Vec<_>>(), || {
        format!(
            "the loop's {TICKS} lines arrived as {} lines, first gap or repeat at {:?}",
            ticks.len(),
            ticks.iter().enumerate().find(|(i, &t)| *i as u32 != t)
        )
    })?;
    session.type_line(&format!("sha256sum {}", data.display()))?;
    poll("the second digest", long, |_| {
        Ok((session.screen().matches(&sum_line).count() >= 2).then_some(()))
    })?;

    let moved = bed.move_client(&ids)?;
    session.type_line("echo AFTER-MOVE-$((60+6))")?;
    session.wait_for("AFTER-MOVE-66", long)?;
    session.type_line(&format!(
        "base64 -w 76 {}; echo B64-$((1+1))-END",
        b64_source.display()
    ))?;
    session.wait_for("B64-2-END", long)?;
    ensure(session.screen().contains(&b64_expected), || {
        "the base64 text of 256 KiB printed after the move differs from the file's".into()
    })?;
    bed.expect_connected(&ids, "after the move")?;
    session.exit(long)?;
    let logins = sshd.log().matches("Accepted publickey").count();
    ensure(logins == 1, || {
        format!("sshd accepted {logins} logins; expected the one session throughout")
    })?;
    Ok(format!(
        "{}; first line of output {:.2} s after the link came back",
        faults(&outage, &moved),
        first_tick_after.as_secs_f64()
    ))
}

/// `base64 -w 76` of a file, with the terminal's line ends (LF after CR LF translation).
fn base64_of(path: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new("base64")
        .args(["-w", "76"])
        .arg(path)
        .output()
        .map_err(ScenarioError::io("running base64"))?;
    ensure(out.status.success(), || format!("base64 {path:?} failed"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ----- HTTP ---------------------------------------------------------------------------------

const HTTP_PORT: u16 = 8080;
const FILE_SIZE: u64 = 200_000_000;
/// The client's link rate (bits/s): the transfer alone takes about 40 s, so it spans the outage
/// and the move. A link limit rather than curl's `--limit-rate`, which catches up at full speed
/// after a stall and would finish within a second of the outage.
const LINK_BITS: u64 = 40_000_000;

fn http(bed: &Testbed) -> Result<Summary> {
    let scratch = Scratch::new(bed.topo.id(), "http")?;
    let (client, server) = (bed.client(), bed.server());
    let nginx = Nginx::start(server, &scratch, server.ip(Family::V4), HTTP_PORT)?;
    let digest = pattern_file(&nginx.root().join("big.bin"), 11, FILE_SIZE)?;
    let output = scratch.path("downloaded.bin");
    bed.topo.rate_limit("client", LINK_BITS)?;
    let started = Instant::now();
    let download = Download::start(client, &nginx.url("big.bin"), &output)?;
    let ids = bed.managed_on(HTTP_PORT, 1, Duration::from_secs(10))?;
    let progress = |what: &str, at_least: u64| {
        poll(what, Duration::from_secs(30), |detail| {
            *detail = format!("{} bytes so far", download.received());
            ensure(download.running(), || "curl ended early".into())?;
            Ok((download.received() >= at_least).then_some(()))
        })
    };
    progress("24 MB downloaded", 24 << 20)?;
    let outage = bed.begin_outage(&ids)?;
    let at_cut = download.received();
    let outage = outage.end_after(outage_length())?;
    let first_byte_after = poll(
        "download progress after the outage",
        Duration::from_secs(20),
        |_| Ok((download.received() > at_cut).then(|| outage.up_at.elapsed())),
    )?;
    progress(
        "8 MB more after the outage",
        download.received() + (8 << 20),
    )?;
    let moved = bed.move_client(&ids)?;
    let at_move = download.received();
    ensure(at_move < FILE_SIZE && download.running(), || {
        format!("the download ended before the move ({at_move} bytes)")
    })?;
    let done = download.finish(Duration::from_secs(240))?;
    let took = started.elapsed();
    ensure(done.http_code == 200 && done.size == FILE_SIZE, || {
        format!("curl: {done:?}; nginx error log:\n{}", nginx.error_log())
    })?;
    let got = sha256_file(&output)?;
    ensure(got == digest, || {
        format!("SHA-256 of the download {got} != the file's {digest}")
    })?;
    Ok(format!(
        "{}; 200 MB in {:.1} s ({:.1} s by curl), {} MB at the cut, {} MB at the move; \
         first byte {:.2} s after the link came back",
        faults(&outage, &moved),
        took.as_secs_f64(),
        done.seconds,
        at_cut >> 20,
        at_move >> 20,
        first_byte_after.as_secs_f64()
    ))
}

// ----- Redis --------------------------------------------------------------------------------

const REDIS_PORT: u16 = 6379;

fn redis(bed: &Testbed) -> Result<Summary> {
    let scratch = Scratch::new(bed.topo.id(), "redis")?;
    let (client, server) = (bed.client(), bed.server());
    let redis = RedisServer::start(server, &scratch, server.ip(Family::V4), REDIS_PORT)?;
    let t = Duration::from_secs(10);
    let mut cli = redis.connect(client)?;
    let my_id = cli.ask("CLIENT ID", t)?;
    // 64 KiB of hex: a value big enough to span many segments.
    let mut raw = vec![0u8; 32 << 10];
    netns_tests::stream::Pattern::new(5).fill(&mut raw);
    let big = netns_tests::stream::hex(&raw);
    ensure(cli.ask(&format!("SET big {big}"), t)? == "OK", || {
        "SET big".into()
    })?;
    ensure(cli.ask("SET counter 0", t)? == "OK", || {
        "SET counter".into()
    })?;

    let after_outage = redis.blpop(client, "rk:after-outage")?;
    let after_move = redis.blpop(client, "rk:after-move")?;
    poll("two clients blocked in BLPOP", t, |detail| {
        let info = redis.local(server, &["INFO", "clients"])?;
        *detail = info.clone();
        Ok(info.contains("blocked_clients:2").then_some(()))
    })?;
    let ids = bed.managed_on(REDIS_PORT, 3, t)?;

    let outage = bed.begin_outage(&ids)?;
    // A command in flight while the path is down: plain TCP would give up on it within seconds.
    cli.send("INCR counter")?;
    let outage = outage.end_after(outage_length())?;
    ensure(cli.reply(t)? == "1", || {
        "INCR sent during the outage".into()
    })?;
    let pushed = Instant::now();
    redis.local(server, &["RPUSH", "rk:after-outage", "value-after-outage"])?;
    let value = after_outage.value(t)?;
    let pop_latency = pushed.elapsed();
    ensure(value == "value-after-outage", || {
        format!("BLPOP got {value:?}")
    })?;
    ensure(cli.ask("CLIENT ID", t)? == my_id, || {
        "the long-lived connection has a new client id after the outage".into()
    })?;
    ensure(cli.ask("GET big", t)? == big, || {
        "GET big after the outage".into()
    })?;
    ensure(cli.ask("INCR counter", t)? == "2", || {
        "INCR after the outage".into()
    })?;

    // The first blocked client is gone; the others move with the client.
    let remaining = [
        bed.client_conn_of_pid(cli.pid(), REDIS_PORT)?,
        bed.client_conn_of_pid(after_move.pid(), REDIS_PORT)?,
    ];
    let moved = bed.move_client(&remaining)?;
    ensure(after_move.waiting(), || {
        "the second BLPOP ended before its push".into()
    })?;
    redis.local(server, &["RPUSH", "rk:after-move", "value-after-move"])?;
    let value = after_move.value(t)?;
    ensure(value == "value-after-move", || {
        format!("BLPOP got {value:?}")
    })?;
    ensure(cli.ask("CLIENT ID", t)? == my_id, || {
        "the long-lived connection has a new client id after the move".into()
    })?;
    ensure(cli.ask("GET big", t)? == big, || {
        "GET big after the move".into()
    })?;
    ensure(cli.ask("INCR counter", t)? == "3", || {
        "INCR after the move".into()
    })?;
    let log = redis.log();
    ensure(
        !log.contains("Client closed connection") && !log.contains("Connection reset"),
        || format!("redis-server logged a lost client:\n{log}"),
    )?;
    Ok(format!(
        "{}; BLPOP answered {:.0} ms after the push",
        faults(&outage, &moved),
        pop_latency.as_secs_f64() * 1e3
    ))
}

// ----- iperf3 -------------------------------------------------------------------------------

const IPERF_PORTS: [u16; 2] = [5201, 5202];
/// iperf3's rate each way: enough to keep data in flight, little enough to leave the CPUs to
/// the other scenarios.
const IPERF_BITS: u64 = 100_000_000;
const IPERF_WARMUP: Duration = Duration::from_secs(8);
const IPERF_TAIL: Duration = Duration::from_secs(15);

fn check_iperf(name: &str, r: &IperfReport, after_move_s: f64) -> Result<String> {
    ensure(r.error.is_none(), || format!("{name}: error {:?}", r.error))?;
    ensure(r.bytes_sent > 0 && r.bytes_received > 0, || {
        format!(
            "{name}: counted {} sent, {} received",
            r.bytes_sent, r.bytes_received
        )
    })?;
    // What the sender wrote in the last moments may still be in flight when iperf3 stops
    // counting; anything beyond a few megabytes would be lost data.
    ensure(
        r.bytes_received <= r.bytes_sent && r.bytes_sent - r.bytes_received <= 8 << 20,
        || {
            format!(
                "{name}: sent {} but received {}",
                r.bytes_sent, r.bytes_received
            )
        },
    )?;
    let after_move: u64 = r
        .intervals
        .iter()
        .filter(|i| i.start >= after_move_s)
        .map(|i| i.bytes)
        .sum();
    ensure(after_move > 0, || {
        format!("{name}: nothing moved after the address change")
    })?;
    Ok(format!(
        "{name} {} MB sent, {} MB received, {} MB after the move",
        r.bytes_sent >> 20,
        r.bytes_received >> 20,
        after_move >> 20
    ))
}

fn iperf3(bed: &Testbed) -> Result<Summary> {
    let (client, server) = (bed.client(), bed.server());
    let addr = server.ip(Family::V4);
    let servers = IPERF_PORTS.map(|p| IperfServer::start(server, addr, p));
    let [forward_server, reverse_server] = servers;
    let (forward_server, reverse_server) = (forward_server?, reverse_server?);
    // Long enough for the warm-up, the outage, the resumption, the move and a tail after it.
    let seconds = (IPERF_WARMUP + outage_length() + Duration::from_secs(12) + IPERF_TAIL).as_secs();
    let started = Instant::now();
    let forward = IperfRun::start(client, &forward_server, seconds, IPERF_BITS, false)?;
    let reverse = IperfRun::start(client, &reverse_server, seconds, IPERF_BITS, true)?;
    // Each run has a control and a data connection.
    let mut ids = bed.managed_on(IPERF_PORTS[0], 2, Duration::from_secs(10))?;
    ids.extend(bed.managed_on(IPERF_PORTS[1], 2, Duration::from_secs(10))?);
    thread::sleep(IPERF_WARMUP.saturating_sub(started.elapsed()));
    let outage = bed.outage(&ids, outage_length())?;
    thread::sleep(Duration::from_secs(3));
    let moved = bed.move_client(&ids)?;
    let after_move_s = started.elapsed().as_secs_f64() + 1.0;
    ensure(after_move_s + 5.0 < seconds as f64, || {
        format!("the move came {after_move_s:.0} s into a {seconds} s test: too late to judge")
    })?;
    let limit = Duration::from_secs(seconds + 60);
    let f = check_iperf("client->server", &forward.finish(limit)?, after_move_s)?;
    let r = check_iperf("server->client (-R)", &reverse.finish(limit)?, after_move_s)?;
    Ok(format!("{}; {f}; {r}", faults(&outage, &moved)))
}

// ----- 1,000 connections --------------------------------------------------------------------

const FANOUT_PORT: u16 = 7000;
const CONNECTIONS: usize = 1000;
const ECHO_MAX: usize = 4096;

fn thousand(bed: &Testbed) -> Result<Summary> {
    let to = SocketAddr::new(bed.server().ip(Family::V4), FANOUT_PORT);
    let fan = Fanout::start(bed.client(), bed.server(), to, CONNECTIONS, ECHO_MAX)?;
    let ids = bed.managed_on(FANOUT_PORT, CONNECTIONS, Duration::from_secs(60))?;
    let t = Duration::from_secs(60);
    fan.round(0, t)?;
    let outage = bed.begin_outage(&ids)?;
    // Every connection has data in flight while the path is down.
    fan.begin_round(1)?;
    let outage = outage.end_after(outage_length())?;
    fan.finish_round(1, t)?;
    let round_after = outage.up_at.elapsed();
    let moved = bed.move_client(&ids)?;
    let round_moved = fan.round(2, t)?;
    let echoed = fan.close(t)?;
    let expected: u64 = (0..CONNECTIONS)
        .flat_map(|i| (0..3).map(move |round| payload(i, round, ECHO_MAX).len() as u64))
        .sum();
    ensure(echoed == expected, || {
        format!("the server echoed {echoed} bytes, the client sent {expected}")
    })?;
    Ok(format!(
        "{}; round in flight during the outage complete {:.2} s after the link came back; \
         round after the move {:.2} s",
        faults(&outage, &moved),
        round_after.as_secs_f64(),
        round_moved.as_secs_f64()
    ))
}

// ----- all at once --------------------------------------------------------------------------

type Scenario = fn(&Testbed) -> Result<Summary>;

const SCENARIOS: [(&str, Scenario); 5] = [
    ("ssh", ssh),
    ("http", http),
    ("redis", redis),
    ("iperf3", iperf3),
    ("thousand", thousand),
];

#[test]
fn real_programs_survive_a_60_s_outage_and_an_address_change() {
    let only = std::env::var("RACKD_SCENARIOS").ok();
    let chosen = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == name))
    };
    if let Some(o) = &only {
        let known: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
        let unknown: Vec<&str> = o.split(',').filter(|n| !known.contains(n)).collect();
        assert!(
            unknown.is_empty() && !o.is_empty(),
            "RACKD_SCENARIOS={o:?} names unknown scenarios {unknown:?}; known: {known:?}"
        );
    }
    let started = Instant::now();
    let runs: Vec<_> = SCENARIOS
        .iter()
        .filter(|(name, _)| chosen(name))
        .map(|&(name, scenario)| (name, thread::spawn(move || on_testbed(scenario))))
        .collect();
    let skipped: Vec<&str> = SCENARIOS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !chosen(n))
        .collect();
    let mut report = String::new();
    let mut failed = Vec::new();
    for (name, run) in runs {
        let outcome = run
            .join()
            .unwrap_or_else(|p| Err(ScenarioError::program(name, format!("panicked: {p:?}"))));
        match outcome {
            Ok(summary) => {
                let _ = writeln!(report, "{name}: ok: {summary}");
            }
            Err(e) => {
                let _ = writeln!(report, "{name}: FAILED: {e}");
                failed.push(name);
            }
        }
    }
    eprintln!(
        "{report}all in {:.0} s{}",
        started.elapsed().as_secs_f64(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped by RACKD_SCENARIOS: {skipped:?}")
        }
    );
    assert!(failed.is_empty(), "scenarios failed: {failed:?}\n{report}");
}
