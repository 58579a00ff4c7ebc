//! Hostile and bad input against rackd; after each, the daemon must still serve its managed
//! connection (a digest-checked two-way stream between client and server, rackd on both) and
//! keep its memory bounded.
//!
//! - a SYN flood carrying the rackd option from the third host (10,000 SYN/s for 10 s);
//! - malformed rackd options, lengths and headers in SYNs;
//! - garbage, oversized and idle requests on the control socket;
//! - blind RST and data injection into a suspended connection.
//!
//! Hostile packets are made by `rk-craft` (this crate's program) running in the third host's
//! namespace with a raw socket. Needs root (namespaces, nftables, NFQUEUE, raw sockets): without
//! it the topology build fails and says so. Each test builds its own topology, so they run in
//! parallel, and the harness removes everything on drop, also after a failed assertion.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use integration::catalogue::{self, Expect, Target};
use integration::daemon::{Daemon, DaemonOptions};
use integration::procfs::Memory;
use netns_tests::{Host, Process, StreamOptions, StreamRun, Topology};
use rackctl::proto::{ConnState, ConnectionStatus, Status};

/// Memory bound for one rackd under attack. The engine admits at most 65,536 connections into
/// negotiation (`rackd::engine::MAX_NEGOTIATING`). What a negotiation must remember (addresses,
/// two tokens, two ISNs, a time) fits well under 512 bytes per flow with its indexes, so the cap
/// costs at most 32 MiB; the rest covers the ~8 MiB of a daemon at rest and the buffers of a
/// status listing every flow. A leak of 1 KiB per flood SYN (100,000 of them) would exceed it.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn topology() -> Topology {
    Topology::builder()
        .host("third")
        .build()
        .unwrap_or_else(|e| panic!("building the test topology: {e} (these tests need root)"))
}

fn start_daemon(host: &Host, options: &DaemonOptions) -> Daemon {
    Daemon::start(host, options).unwrap_or_else(|e| panic!("starting rackd: {e}"))
}

fn rk_craft(host: &Host, args: &[String], timeout: Duration) -> serde_json::Value {
    let out = host
        .command(env!("CARGO_BIN_EXE_rk-craft"))
        .args(args)
        .run(timeout)
        .unwrap_or_else(|e| panic!("rk-craft {args:?}: {e}"));
    assert!(
        out.success(),
        "rk-craft {args:?} failed: {}",
        out.stderr.trim()
    );
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("rk-craft printed {:?}: {e}", out.stdout))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The connection to or from `endpoint` (the stream server's `ip:port`).
fn conn_to<'a>(status: &'a Status, endpoint: &str) -> Option<&'a ConnectionStatus> {
    status
        .connections
        .iter()
        .find(|c| c.remote == endpoint || c.local == endpoint)
}

fn negotiating(status: &Status) -> u64 {
    status
        .daemon
        .states
        .get("negotiating")
        .copied()
        .unwrap_or(0)
}

/// Client and server with rackd, and a paced two-way stream between them that the daemons
/// manage. Dropping it ends everything (the topology kills the processes).
struct Managed {
    topo: Topology,
    client: Daemon,
    server: Daemon,
    stream: Option<StreamRun>,
    /// The stream server's address and port.
    endpoint: String,
    id: String,
}

impl Managed {
    /// Starts both daemons and a stream of `bytes` each way at `pace` bytes/s on `port`, and
    /// waits until both daemons show it connected under one id.
    fn start(server_options: &DaemonOptions, port: u16, bytes: u64, pace: u64) -> Managed {
        let topo = topology();
        let client = start_daemon(topo.host("client"), &DaemonOptions::default());
        let server = start_daemon(topo.host("server"), server_options);
        let options = StreamOptions::new(bytes)
            .pace(pace)
            .port(port)
            .timeout(Duration::from_secs(90));
        let stream = StreamRun::start(topo.host("client"), topo.host("server"), options)
            .unwrap_or_else(|e| panic!("starting the stream: {e}"));
        let endpoint = format!("{}:{port}", topo.host("server").v4());
        let mut m = Managed {
            topo,
            client,
            server,
            stream: Some(stream),
            endpoint,
            id: String::new(),
        };
        let mut ids = None;
        wait_for(
            "the stream to be connected on both ends",
            Duration::from_secs(10),
            || {
                ids = m.states().and_then(|[(cs, ci), (ss, si)]| {
                    (cs == ConnState::Connected && ss == ConnState::Connected).then_some((ci, si))
                });
                ids.is_some()
            },
        );
        let (ci, si) = ids.unwrap();
        assert_eq!(ci, si, "both ends name the connection alike");
        m.id = ci;
        m
    }

    /// The stream's (state, id) at the client and at the server.
    fn states(&self) -> Option<[(ConnState, String); 2]> {
        let of = |d: &Daemon| {
            let s = d.status().ok()?;
            conn_to(&s, &self.endpoint).map(|c| (c.state, c.id.clone()))
        };
        Some([of(&self.client)?, of(&self.server)?])
    }

    /// Asserts that both daemons still run, answer, and hold the stream connected under its id.
    fn assert_still_managed(&self, after: &str) {
        for (name, d) in [("client", &self.client), ("server", &self.server)] {
            assert!(
                d.alive(),
                "{name} rackd died after {after}; log:\n{}",
                d.log()
            );
        }
        let states = self.states();
        let expected = [
            (ConnState::Connected, self.id.clone()),
            (ConnState::Connected, self.id.clone()),
        ];
        assert_eq!(
            states,
            Some(expected),
            "after {after}: the stream should still be connected on both ends under id {}",
            self.id
        );
    }

    /// Waits for the stream and asserts both directions arrived complete and intact.
    fn assert_stream_intact(&mut self, after: &str) {
        let report = self
            .stream
            .take()
            .expect("stream checked once")
            .wait()
            .unwrap_or_else(|e| panic!("stream after {after}: {e}"));
        assert!(
            report.intact(),
            "stream after {after}: {:?}",
            report.problems()
        );
    }

    fn third(&self) -> &Host {
        self.topo.host("third")
    }
}

fn memory(d: &Daemon) -> Memory {
    d.memory()
        .unwrap_or_else(|e| panic!("reading rackd's memory: {e}"))
}

fn assert_memory_bounded(d: &Daemon, after: &str) -> Memory {
    let m = memory(d);
    assert!(
        m.rss_kib < RSS_BOUND_KIB && m.peak_kib < RSS_BOUND_KIB,
        "rackd memory after {after}: {m}, bound {} MiB",
        RSS_BOUND_KIB / 1024
    );
    m
}

// ----- 1. SYN flood ---------------------------------------------------------------------------

const FLOOD_RATE: u64 = 10_000;
const FLOOD_SECS: u64 = 10;
/// Source addresses the flood spoofs: the third host's and those after it in its /26, so that
/// the flood has far more distinct connections (~60 x 64,512) than rackd admits.
const FLOOD_SOURCES: u32 = 60;

#[test]
fn syn_flood_with_the_rackd_option_leaves_managed_connections_and_memory_alone() {
    // 12 MiB each way at 768 KiB/s: the stream runs before, during and after the flood.
    let mut m = Managed::start(&DaemonOptions::default(), 5001, 12 << 20, 768 << 10);
    let (server, third) = (m.topo.host("server"), m.third());
    // The flood's target is a listening port, so the server answers with SYN-ACKs (syncookies
    // once its SYN queue is full) that pass through rackd as well.
    let flood_port = 5002;
    let _listener = listen(server, flood_port);
    let before = memory(&m.server);
    let base = m.server.status().expect("status before the flood");

    let args = [
        "flood".into(),
        "--src".into(),
        third.v4().to_string(),
        "--src-count".into(),
        FLOOD_SOURCES.to_string(),
        "--dst".into(),
        server.v4().to_string(),
        "--port".into(),
        flood_port.to_string(),
        "--rate".into(),
        FLOOD_RATE.to_string(),
        "--secs".into(),
        FLOOD_SECS.to_string(),
        "--seed".into(),
        std::process::id().to_string(),
    ];
    let started = Instant::now();
    let (report, samples) = std::thread::scope(|s| {
        let flood = s.spawn(|| rk_craft(third, &args, Duration::from_secs(FLOOD_SECS + 20)));
        // Watch the server's rackd while the flood runs: memory, then flows in negotiation.
        let mut samples = Vec::new();
        while !flood.is_finished() {
            samples.push(Sample::take(&m, started));
            std::thread::sleep(Duration::from_millis(500));
        }
        (flood.join().expect("flood thread"), samples)
    });
    let sent = report["sent"].as_u64().unwrap_or(0);
    let rate = report["rate"].as_f64().unwrap_or(0.0);
    eprintln!("flood: {report}");
    for s in &samples {
        eprintln!("  {s}");
    }
    assert!(
        rate >= FLOOD_RATE as f64 * 0.9,
        "the flood generator reached only {rate:.0} SYN/s of {FLOOD_RATE}: {report}"
    );

    // Everything is measured first and judged after, so that a failure still reports it all.
    let json = rackctl_status_json(server, &m.server);
    let states = m.states();
    let after_status = m.server.status();
    let stream = m.stream.take().expect("stream").wait();
    let after = memory(&m.server);
    let peak_negotiating = samples
        .iter()
        .filter_map(|s| s.status.as_ref().ok().map(|(n, _)| *n))
        .max()
        .unwrap_or(0);
    let unanswered = samples.iter().filter(|s| s.status.is_err()).count();
    let suspended = samples
        .iter()
        .filter(|s| s.client_state != Some(ConnState::Connected))
        .count();
    eprintln!(
        "server rackd: before {before}; after {after}; negotiating at the peak \
         {peak_negotiating}; {}",
        match &after_status {
            Ok(a) => format!(
                "{} packets queued, {} dropped or lost to overruns, {} negotiating now",
                a.daemon.packets_queued - base.daemon.packets_queued,
                a.daemon.packets_dropped - base.daemon.packets_dropped,
                negotiating(a)
            ),
            Err(e) => format!("no status after the flood: {e}"),
        }
    );

    assert!(
        m.server.alive(),
        "rackd died in the flood; log:\n{}",
        m.server.log()
    );
    let json = json.unwrap_or_else(|e| panic!("after the flood: {e}"));
    assert_eq!(
        json["daemon"]["pid"].as_u64(),
        Some(u64::from(m.server.pid())),
        "rackctl status --json names the daemon"
    );
    let connected = (ConnState::Connected, m.id.clone());
    assert_eq!(
        states,
        Some([connected.clone(), connected]),
        "after the flood the stream should be connected on both ends (client side not \
         connected in {suspended} of {} samples during the flood: heartbeats from the flooded \
         server missing?)",
        samples.len()
    );
    let stream = stream.unwrap_or_else(|e| panic!("stream through the flood: {e}"));
    assert!(
        stream.intact(),
        "stream through the flood: {:?}",
        stream.problems()
    );
    assert!(
        peak_negotiating > 0,
        "rackd never showed a flood SYN in negotiation ({sent} sent): did the flood reach it?"
    );
    assert!(
        peak_negotiating <= 65_536,
        "rackd admitted {peak_negotiating} flows into negotiation, above its cap of 65,536"
    );
    assert_eq!(
        unanswered,
        0,
        "status went unanswered {unanswered} of {} times during the flood (the client waits \
         10 s): the daemon's event loop is starved by the queue",
        samples.len()
    );
    assert_memory_bounded(&m.server, "the flood");
}

/// One look at the server's rackd during the flood.
struct Sample {
    at: Duration,
    /// Resident memory before the status request (which itself costs memory).
    rss_kib: u64,
    /// Flows in negotiation and flows listed, or why status failed.
    status: Result<(u64, usize), String>,
    /// How long the status request took.
    took: Duration,
    /// The stream's state at the client, whose rackd is not flooded.
    client_state: Option<ConnState>,
}

impl Sample {
    fn take(m: &Managed, started: Instant) -> Sample {
        let d = &m.server;
        let client_state = m
            .client
            .status()
            .ok()
            .and_then(|s| conn_to(&s, &m.endpoint).map(|c| c.state));
        let at = started.elapsed();
        let rss_kib = memory(d).rss_kib;
        let t = Instant::now();
        let status = d
            .status()
            .map(|s| (negotiating(&s), s.connections.len()))
            .map_err(|e| e.to_string());
        Sample {
            at,
            rss_kib,
            status,
            took: t.elapsed(),
            client_state,
        }
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at {:>5.1} s: RSS {:>6.1} MiB, ",
            self.at.as_secs_f64(),
            self.rss_kib as f64 / 1024.0
        )?;
        match &self.status {
            Ok((n, listed)) => write!(f, "{n:>6} negotiating, {listed:>6} listed")?,
            Err(e) => write!(f, "status failed: {e}")?,
        }
        write!(
            f,
            " (status took {:.2?}); at the client the stream is {:?}",
            self.took, self.client_state
        )
    }
}

/// A listener on `port` of `host` that accepts and discards (socat, one child per connection).
fn listen(host: &Host, port: u16) -> Process {
    let p = host
        .spawn(
            "socat",
            [
                format!("TCP4-LISTEN:{port},reuseaddr,fork,backlog=128"),
                "OPEN:/dev/null".into(),
            ],
        )
        .unwrap_or_else(|e| panic!("starting socat: {e}"));
    let needle = format!(":{port}");
    wait_for("socat to listen", Duration::from_secs(5), || {
        host.run("ss", ["-Hltn"])
            .is_ok_and(|o| o.stdout.contains(&needle))
    });
    p
}

/// `rackctl status --json` run in `host` against `daemon`, parsed.
fn rackctl_status_json(host: &Host, daemon: &Daemon) -> Result<serde_json::Value, String> {
    let rackctl = netns_tests::workspace_bin("rackctl").map_err(|e| e.to_string())?;
    let out = host
        .command(rackctl)
        .arg("--control-socket")
        .arg(daemon.socket())
        .args(["status", "--json"])
        .run(Duration::from_secs(20))
        .map_err(|e| format!("rackctl status --json: {e}"))?;
    if !out.success() {
        return Err(format!(
            "rackctl status --json failed: {}",
            out.stderr.trim()
        ));
    }
    serde_json::from_str(&out.stdout).map_err(|e| {
        let head: String = out.stdout.chars().take(300).collect();
        format!("rackctl status --json printed no JSON ({e}): {head}")
    })
}

// ----- 2. Malformed SYNs ----------------------------------------------------------------------

#[test]
fn malformed_syns_are_ignored_and_hurt_nothing() {
    let mut m = Managed::start(&DaemonOptions::default(), 5011, 4 << 20, 1 << 20);
    let (server, third) = (m.topo.host("server"), m.third());
    let target = Target {
        src: third.v4(),
        dst: server.v4(),
        dport: 5012, // nothing listens: the server's kernel resets each attempt
        first_sport: 21_000,
        garbage: 64,
        seed: 11,
    };
    let cases = catalogue::cases(&target);
    let args: Vec<String> = [
        "malformed",
        "--src",
        &target.src.to_string(),
        "--dst",
        &target.dst.to_string(),
        "--port",
        &target.dport.to_string(),
        "--first-sport",
        &target.first_sport.to_string(),
        "--garbage",
        &target.garbage.to_string(),
        "--seed",
        &target.seed.to_string(),
    ]
    .map(String::from)
    .into();
    let sent = rk_craft(third, &args, Duration::from_secs(10));
    assert_eq!(
        sent["errors"],
        serde_json::json!([]),
        "every packet went out"
    );

    // The sentinel, sent last, shows that rackd has read everything before it (one queue, in
    // order); flows of refused attempts live for seconds, so one status sees them all.
    let sentinel = cases.last().expect("catalogue has a sentinel").sport;
    let from_third = |s: &Status, sport: u16| {
        let remote = format!("{}:{sport}", target.src);
        s.connections.iter().any(|c| c.remote == remote)
    };
    let mut status = None;
    wait_for(
        "rackd to see the sentinel SYN",
        Duration::from_secs(5),
        || {
            status = m.server.status().ok();
            status.as_ref().is_some_and(|s| from_third(s, sentinel))
        },
    );
    let status = status.unwrap();
    let mut wrong = Vec::new();
    let mut either = Vec::new();
    for case in &cases {
        let seen = from_third(&status, case.sport);
        match (case.expect, seen) {
            (Expect::Negotiating, false) => wrong.push(format!("{}: not negotiating", case.name)),
            (Expect::Ignored, true) => wrong.push(format!("{}: negotiating", case.name)),
            (Expect::Either, _) => either.push(format!("{}: {}", case.name, seen)),
            _ => {}
        }
    }
    eprintln!("cases where the kernel decides (negotiating?): {either:?}");
    assert!(
        wrong.is_empty(),
        "rackd misjudged {} cases: {wrong:#?}",
        wrong.len()
    );
    m.assert_still_managed("malformed SYNs");
    m.assert_stream_intact("malformed SYNs");
    let mem = assert_memory_bounded(&m.server, "malformed SYNs");
    eprintln!("server rackd after {} malformed cases: {mem}", cases.len());
}

// ----- 3. Control socket ----------------------------------------------------------------------

/// Sends `request` on a fresh control connection and returns the one response line.
fn control_exchange(daemon: &Daemon, request: &[u8]) -> serde_json::Value {
    let mut conn = UnixStream::connect(daemon.socket()).expect("control socket");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).expect("sending the request");
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .expect("a response line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("response {line:?} is not JSON: {e}"))
}

fn assert_error(response: &serde_json::Value, code: &str, text: &str, request: &str) {
    assert_eq!(response["ok"], false, "{request}: {response}");
    assert_eq!(response["error"]["code"], code, "{request}: {response}");
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(text),
        "{request}: message {message:?} should mention {text:?}"
    );
}

#[test]
fn garbage_and_oversized_control_requests_get_clear_errors() {
    let mut m = Managed::start(&DaemonOptions::default(), 5021, 4 << 20, 1 << 20);
    // Random bytes (never a newline inside) as one line: not UTF-8.
    let mut rng = integration::craft::Rng::new(5);
    let mut junk: Vec<u8> = rng.bytes(4096).into_iter().map(|b| b.max(0x80)).collect();
    junk.push(b'\n');
    let r = control_exchange(&m.server, &junk);
    assert_error(&r, "bad_request", "not UTF-8", "random bytes");

    let cases: [(&str, &str, &str); 8] = [
        ("{\"v\":1,\"cmd\":", "bad_request", "not JSON"),
        (
            "[1,2,3]",
            "bad_request",
            "must be a JSON object, got an array",
        ),
        (
            "{\"cmd\":\"status\"}",
            "bad_request",
            "missing protocol version",
        ),
        (
            "{\"v\":\"1\",\"cmd\":\"status\"}",
            "bad_request",
            "\"v\" must be an integer",
        ),
        (
            "{\"v\":2,\"cmd\":\"status\"}",
            "unsupported_version",
            "protocol version 2",
        ),
        (
            "{\"v\":1,\"cmd\":\"explode\"}",
            "bad_request",
            "unknown cmd \"explode\"",
        ),
        ("{\"v\":1,\"cmd\":\"suspend\"}", "bad_request", "id"),
        (
            "{\"v\":1,\"cmd\":\"resume\",\"id\":\"ffff\"}",
            "not_found",
            "ffff",
        ),
    ];
    for (request, code, text) in cases {
        let r = control_exchange(&m.server, format!("{request}\n").as_bytes());
        assert_error(&r, code, text, request);
    }

    // Many bad lines on one connection: one answer each, in order, connection kept.
    let mut conn = UnixStream::connect(m.server.socket()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let batch: String = (0..1000)
        .map(|i| format!("{{\"v\":1,\"cmd\":\"x{i}\"}}\n"))
        .collect();
    conn.write_all(batch.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    for i in 0..1000 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("an answer per line");
        assert!(line.contains(&format!("x{i}")), "answer {i}: {line}");
    }

    // 10 MiB without a newline: refused after 64 KiB, then the daemon hangs up, so the
    // writer fails long before it has written everything.
    let conn = UnixStream::connect(m.server.socket()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let written = std::thread::spawn(move || {
        let chunk = vec![b'{'; 64 << 10];
        let mut total = 0usize;
        while total < 10 << 20 {
            match writer.write(&chunk) {
                Ok(n) => total += n,
                Err(e) => return (total, Some(e.kind())),
            }
        }
        (total, None)
    });
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).expect("a refusal");
    let r: serde_json::Value = serde_json::from_str(&line).expect("JSON refusal");
    assert_error(
        &r,
        "bad_request",
        "longer than the limit of 65536",
        "a 10 MiB line",
    );
    let mut rest = Vec::new();
    let eof = reader.read_to_end(&mut rest);
    assert!(
        matches!(eof, Ok(0)) || eof.is_err() && rest.is_empty(),
        "the daemon should hang up after an oversize line: {eof:?}, {} more bytes",
        rest.len()
    );
    let (total, error) = written.join().unwrap();
    assert!(
        error.is_some() && total < 10 << 20,
        "the writer should be cut off, wrote {total} bytes ({error:?})"
    );

    m.assert_still_managed("bad control requests");
    let status = m.server.status().expect("status from a fresh connection");
    assert!(conn_to(&status, &m.endpoint).is_some());
    m.assert_stream_intact("bad control requests");
    let mem = assert_memory_bounded(&m.server, "bad control requests");
    eprintln!("server rackd after bad control requests: {mem}");
}

/// More idle control connections than a service's default file limit: systemd starts services
/// with `LimitNOFILE=1024` (soft) unless the unit says otherwise, and rackd's unit does not.
/// Anyone who may read status (group `rackd`) can open connections; the daemon must stay
/// reachable for a fresh client and keep serving its managed connections.
#[test]
fn idle_control_connections_do_not_lock_out_status() {
    const IDLE: usize = 1100;
    let server_options = DaemonOptions {
        open_files: Some(1024),
        ..DaemonOptions::default()
    };
    // 8 MiB at 1 MiB/s: the stream outlasts the attack.
    let mut m = Managed::start(&server_options, 5031, 8 << 20, 1 << 20);
    let before = memory(&m.server);
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        match connect_nonblocking(m.server.socket()) {
            Ok(mut s) => {
                if i % 2 == 0 {
                    // Half of them start a request and never finish it.
                    let _ = s.write(b"{\"v\":1,");
                }
                idle.push(s);
            }
            Err(e) => {
                eprintln!("connection {i} refused: {e}");
                break;
            }
        }
    }
    eprintln!("{} idle control connections open", idle.len());
    let client = m.client.status().expect("client status");
    let c = conn_to(&client, &m.endpoint).expect("the client lists the stream");
    assert_eq!(
        c.state,
        ConnState::Connected,
        "client side with idle connections at the server"
    );
    let fresh = status_within(&m.server, Duration::from_secs(5));
    eprintln!(
        "fresh status with {} idle connections: {:?}",
        idle.len(),
        fresh.as_ref().map(|_| "answered")
    );
    let during = memory(&m.server);
    assert!(
        m.server.alive(),
        "rackd died with {} idle connections",
        idle.len()
    );
    if let Ok(s) = &fresh {
        let c = conn_to(s, &m.endpoint).expect("the server lists the stream");
        assert_eq!(
            c.state,
            ConnState::Connected,
            "server side with idle connections"
        );
    }
    drop(idle);
    // Once the idle clients are gone, status must work again in any case.
    let again = status_within(&m.server, Duration::from_secs(10));
    assert!(
        again.is_ok(),
        "status after the idle connections closed: {again:?}"
    );
    m.assert_stream_intact("idle control connections");
    let after = assert_memory_bounded(&m.server, "idle control connections");
    eprintln!("server rackd: before {before}; with the idle connections {during}; after {after}");
    let log = m.server.log();
    let accept_errors: Vec<&str> = log.lines().filter(|l| l.contains("accept")).collect();
    assert!(
        fresh.is_ok(),
        "with {IDLE} idle control connections, a fresh status request failed ({}): rackd \
         (RLIMIT_NOFILE 1024) has no limit or idle timeout for control clients; {} log lines \
         about accept, the first: {:?}",
        fresh.unwrap_err(),
        accept_errors.len(),
        accept_errors.first()
    );
}

/// A unix-socket connection that fails instead of blocking when the listener's backlog is full.
fn connect_nonblocking(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.connect(&SockAddr::unix(path)?)?;
    Ok(s.into())
}

/// A status from a fresh connection, given up after `limit` (a daemon that does not accept
/// leaves the connection in the backlog, where a blocking client would wait forever).
fn status_within(daemon: &Daemon, limit: Duration) -> Result<Status, String> {
    let socket = daemon.socket().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = rackctl::client::Client::connect(&socket).and_then(|mut c| c.status());
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

// ----- 4. Injection ---------------------------------------------------------------------------

/// A third host that knows both addresses and ports of a connection (the worst case of
/// guessing the tuple) sprays resets and data across the whole sequence space while the
/// connection is suspended. Suspension is by command here (`rackctl suspend`), so the path stays
/// up and the daemons keep exchanging heartbeats; while suspended, rackd has the flow's packets
/// in its queue and answers for the peer, so whatever it makes of the forged packets decides
/// the connection's fate. Resets towards the end that is not suspended are the kernel's to
/// judge (RFC 5961 challenge ACKs); they are sent as well, and must not matter either.
#[test]
fn injection_during_suspension_does_not_break_the_connection() {
    let mut m = Managed::start(&DaemonOptions::default(), 5041, 6 << 20, 1 << 20);
    let client_status = m.client.status().unwrap();
    let conn = conn_to(&client_status, &m.endpoint).unwrap().clone();
    let (client_end, server_end) = (conn.local.clone(), conn.remote.clone());
    rackctl::client::Client::connect(m.client.socket())
        .and_then(|mut c| c.suspend(&m.id))
        .unwrap_or_else(|e| panic!("suspending {}: {e}", m.id));
    wait_for(
        "the client side to be suspended",
        Duration::from_secs(3),
        || {
            m.states()
                .is_some_and(|[(c, _), _]| c == ConnState::Suspended)
        },
    );

    let queued_before = m.client.status().unwrap().daemon.packets_queued;
    let third = m.third();
    let inject = |from: &str, to: &str, kind: &str, count: u64| {
        let args: Vec<String> = [
            "inject",
            "--from",
            from,
            "--to",
            to,
            "--kind",
            kind,
            "--count",
            &count.to_string(),
            "--rate",
            "20000",
            "--seed",
            "9",
        ]
        .map(String::from)
        .into();
        rk_craft(third, &args, Duration::from_secs(20))
    };
    // Towards the suspended client, in the server's name: its rackd sees all of these.
    // 65,536 guesses are 65,536 bytes apart: every window of 64 KiB or more gets one.
    let rst_in = inject(&server_end, &client_end, "rst", 65_536);
    let data_in = inject(&server_end, &client_end, "data", 65_536);
    // Towards the server, in the client's name: resets only (forged data that happens to fall
    // in the window with an acceptable ACK would be accepted by any TCP).
    let rst_out = inject(&client_end, &server_end, "rst", 65_536);
    eprintln!("injected: rst towards client {rst_in}, data towards client {data_in}, rst towards server {rst_out}");

    for (name, d) in [("client", &m.client), ("server", &m.server)] {
        assert!(
            d.alive(),
            "{name} rackd died during injection; log:\n{}",
            d.log()
        );
    }
    // The forged packets matched the suspended flow's queue rule, so rackd judged them all.
    let queued = m.client.status().unwrap().daemon.packets_queued - queued_before;
    assert!(
        queued >= 2 * 65_536,
        "the client's rackd saw only {queued} packets; the injection did not reach it"
    );
    let states = m.states();
    assert!(
        matches!(
            &states,
            Some([(ConnState::Suspended, _), (ConnState::Connected, _)])
        ),
        "after injection the client side should still be suspended (by command) and the \
         server side connected: {states:?}"
    );
    rackctl::client::Client::connect(m.client.socket())
        .and_then(|mut c| c.resume(&m.id))
        .unwrap_or_else(|e| panic!("resuming {}: {e}", m.id));
    wait_for("both ends connected again", Duration::from_secs(5), || {
        m.states()
            .is_some_and(|[(c, _), (s, _)]| c == ConnState::Connected && s == ConnState::Connected)
    });
    m.assert_still_managed("injection during suspension");
    m.assert_stream_intact("injection during suspension");
    for d in [&m.client, &m.server] {
        assert_memory_bounded(d, "injection");
    }
}
