//! What the live tests on the netns-tests harness share: rackd started in a test host, its
//! status, and waiting for conditions.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns_tests::{Family, Host, Process, Topology};
use rackctl::proto::{ConnState, ConnectionStatus, Status};

/// Fast heartbeats so that detection (≤ 1.5 s) beats the kernel's abort (≈ 3 s with
/// `tcp_retries2=3` and data in flight).
pub const FAST_MONITOR: &str = "[monitor]\nheartbeat_interval_ms = 250\ndetect_after_ms = 1500\n";

impl Drop for Daemon {
    /// The daemon's directory (config, control socket, state file) goes with it — after the
    /// daemon, which would otherwise write its state file there again on its next tick.
    fn drop(&mut self) {
        let _ = self.process.kill();
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// rackd running in one test host, with its own control socket.
pub struct Daemon {
    /// The control socket (for requests other than status).
    pub socket: PathBuf,
    process: Process,
}

impl Daemon {
    /// Starts rackd in `host` with `config` (TOML), logging at trace level.
    pub fn start(host: &Host, config: &str) -> Daemon {
        Daemon::start_logging(host, config, "trace")
    }

    /// Starts rackd with log level `level`: tests with many connections keep the log (held in
    /// the test's memory) small.
    pub fn start_logging(host: &Host, config: &str, level: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("rackd-test-{}", host.netns()));
        std::fs::create_dir_all(&dir).unwrap();
        let (socket, conf) = (dir.join("control.sock"), dir.join("rackd.toml"));
        std::fs::write(&conf, config).unwrap();
        let rackd = netns_tests::workspace_bin("rackd").expect("rackd binary");
        let process = host
            .command(&rackd)
            .arg("--config")
            .arg(&conf)
            .arg("--control-socket")
            .arg(&socket)
            .args(["--log-level", level])
            .spawn()
            .expect("start rackd");
        let d = Daemon { socket, process };
        wait_for("rackd to answer status", Duration::from_secs(10), || {
            d.try_status().is_some()
        });
        d
    }

    /// The daemon's pid (`ip netns exec` execs it, so this is rackd itself).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The daemon's whole log so far.
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// The end of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.process.stderr();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn try_status(&self) -> Option<Status> {
        let mut c = rackctl::client::Client::connect(&self.socket).ok()?;
        c.status().ok()
    }

    pub fn status(&self) -> Status {
        self.try_status().expect("status from rackd")
    }

    pub fn try_connections(&self) -> Option<Vec<ConnectionStatus>> {
        Some(self.try_status()?.connections)
    }

    pub fn connections(&self) -> Vec<ConnectionStatus> {
        self.try_connections().expect("status from rackd")
    }

    /// The connections with `port` at either end (a test service's port).
    pub fn conns_on(&self, port: u16) -> Vec<ConnectionStatus> {
        let suffix = format!(":{port}");
        self.connections()
            .into_iter()
            .filter(|c| c.remote.ends_with(&suffix) || c.local.ends_with(&suffix))
            .collect()
    }

    /// Waits for the connection on `port` to be `connected` to a user-level EDP peer, which is
    /// shown as such and not monitored (it has no daemon channel).
    pub fn wait_user_level_connected(&self, port: u16) -> ConnectionStatus {
        let mut seen = None;
        wait_for(
            "the connection to be connected to a user-level EDP peer",
            Duration::from_secs(10),
            || {
                seen = self
                    .conn(port)
                    .filter(|c| c.state == ConnState::Connected && c.peer.is_some());
                seen.is_some()
            },
        );
        let status = seen.expect("waited for");
        assert_eq!(status.peer.as_deref(), Some("user-level EDP"));
        assert_eq!(status.last_heartbeat_ms_ago, None, "not monitored");
        status
    }

    /// The one connection whose remote port is `port` (the test service).
    pub fn conn(&self, port: u16) -> Option<ConnectionStatus> {
        self.conns_on(port).into_iter().next()
    }
}

/// Polls `f` every 20 ms until it holds; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Client — router — server, with plain TCP tuned to give up within seconds
/// (`tcp_retries2=3`).
pub fn topology() -> Topology {
    let topo = Topology::new().expect("topology (root needed)");
    for host in topo.hosts() {
        host.sysctl("net.ipv4.tcp_retries2", "3").unwrap();
    }
    topo
}

pub fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Waits until both daemons show the test connection connected, with the same id.
pub fn assert_connected_on_both(client: &Daemon, server: &Daemon, port: u16) -> String {
    let mut ids = (String::new(), String::new());
    wait_for(
        "the connection to be connected on both ends",
        Duration::from_secs(10),
        || match (client.conn(port), server.conn(port)) {
            (Some(c), Some(s))
                if c.state == ConnState::Connected && s.state == ConnState::Connected =>
            {
                ids = (c.id, s.id);
                true
            }
            _ => false,
        },
    );
    assert_eq!(ids.0, ids.1, "both ends name the connection alike");
    ids.0
}

/// A paced two-way rk-stream transfer from the client to the server host of `topo` — 256 KiB/s
/// each way, so data is always in flight — with rackd on both hosts (fast monitoring) unless
/// `with_rackd` is false. Returns once the connection is up (and managed on both ends).
pub fn paced_transfer(
    topo: &Topology,
    family: Family,
    with_rackd: bool,
    port: u16,
    seconds: u64,
) -> (Option<(Daemon, Daemon)>, netns_tests::StreamRun) {
    let options = netns_tests::StreamOptions::new(256 * 1024 * seconds)
        .pace(256 * 1024)
        .family(family)
        .port(port)
        .timeout(Duration::from_secs(seconds + 60));
    start_transfer(topo, options, with_rackd.then_some(FAST_MONITOR))
}

/// An rk-stream transfer with `options` from the client to the server host of `topo`, with
/// rackd on both hosts (configured with `rackd_config`) unless that is `None`. Returns once the
/// connection is up (and managed on both ends).
pub fn start_transfer(
    topo: &Topology,
    options: netns_tests::StreamOptions,
    rackd_config: Option<&str>,
) -> (Option<(Daemon, Daemon)>, netns_tests::StreamRun) {
    let (client, server) = (topo.host("client"), topo.host("server"));
    let daemons =
        rackd_config.map(|config| (Daemon::start(client, config), Daemon::start(server, config)));
    let port = options.port;
    let run = netns_tests::StreamRun::start(client, server, options).unwrap();
    run.server()
        .wait_for_output("connection from", Duration::from_secs(5))
        .unwrap();
    if let Some((cd, sd)) = &daemons {
        assert_connected_on_both(cd, sd, port);
    }
    (daemons, run)
}

/// Whether both daemons show the test connection on `port` in `state`, and (if given) with
/// `reconnects` reconnections.
pub fn both_in(
    client: &Daemon,
    server: &Daemon,
    port: u16,
    state: ConnState,
    reconnects: Option<u32>,
) -> bool {
    [client, server].iter().all(|d| {
        d.conn(port)
            .is_some_and(|c| c.state == state && reconnects.is_none_or(|r| c.reconnects == r))
    })
}

/// Loads an nft script (`nft -f -`) in `host`; the output says whether it worked.
pub fn nft_script(host: &Host, script: &str) -> netns_tests::Output {
    host.command("nft")
        .args(["-f", "-"])
        .stdin_piped()
        .spawn()
        .and_then(|p| {
            p.write_stdin(script.as_bytes())?;
            p.close_stdin();
            p.wait(Duration::from_secs(10))
        })
        .expect("nft")
}
