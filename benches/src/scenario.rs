//! One measured setup: a client — router — server topology, the rackds of its mode, and the
//! traffic server running in the server host.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns_tests::{Host, Process, Topology};
use rackctl::proto::ConnState;
use serde::de::DeserializeOwned;

use crate::daemon::{
    has_table, install_empty_chains, install_orphan_table, remove_empty_chains, remove_table,
    Daemon,
};
use crate::metrics::Mode;
use crate::{Error, Result};

/// The traffic server's port.
pub const SERVICE_PORT: u16 = 5201;
/// How long the traffic server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemons may take to show a new connection in their status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The programs a run needs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The rackd binary.
    pub rackd: PathBuf,
    /// The `rkb-peer` traffic program.
    pub peer: PathBuf,
}

impl Tools {
    /// Finds rackd and rkb-peer where cargo put this program (or `CARGO_BIN_EXE_<name>`).
    pub fn locate() -> Result<Tools> {
        Ok(Tools {
            rackd: netns_tests::workspace_bin("rackd")?,
            peer: netns_tests::workspace_bin("rkb-peer")?,
        })
    }
}

/// Daemon CPU time spent during bulk transfers, and the bytes they moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkAccount {
    /// CPU seconds of all daemons.
    pub cpu_seconds: f64,
    /// Bytes transferred.
    pub bytes: u64,
}

impl BulkAccount {
    /// Adds one transfer.
    pub fn add(&mut self, cpu_seconds: f64, bytes: u64) {
        self.cpu_seconds += cpu_seconds;
        self.bytes += bytes;
    }
}

/// A topology set up for one mode. Dropping it ends its programs and removes its namespaces.
#[derive(Debug)]
pub struct Scenario {
    mode: Mode,
    peer: PathBuf,
    rackd: PathBuf,
    /// Client daemon first (released and managed), then the server's (managed).
    daemons: Vec<Daemon>,
    _server: Process,
    dir: PathBuf,
    /// Daemon CPU over the bulk transfers since it was last taken.
    pub bulk_account: BulkAccount,
    // Last: dropped after the processes above are ended.
    topo: Topology,
}

impl Scenario {
    /// Builds the topology, starts the daemons of `mode` and the traffic server.
    pub fn start(mode: Mode, tools: &Tools) -> Result<Scenario> {
        let topo = Topology::new()?;
        let dir = std::env::temp_dir().join(format!("rkb-{}", topo.id()));
        let daemons = start_daemons(mode, &tools.rackd, &topo, &dir)?;
        let server = serve(&tools.peer, topo.host("server"), SERVICE_PORT)?;
        Ok(Scenario {
            mode,
            peer: tools.peer.clone(),
            rackd: tools.rackd.clone(),
            daemons,
            _server: server,
            dir,
            bulk_account: BulkAccount::default(),
            topo,
        })
    }

    /// Stops the daemons (SIGTERM) and starts fresh ones: a clean baseline for memory.
    /// Connections open meanwhile are not managed by the new daemons.
    pub fn restart_daemons(&mut self) -> Result<()> {
        for daemon in self.daemons.drain(..) {
            daemon.stop()?;
        }
        self.daemons = start_daemons(self.mode, &self.rackd, &self.topo, &self.dir)?;
        Ok(())
    }

    /// Changes the netfilter hooks of the hosts of a table-only scenario from `from` to `to`,
    /// so that the same topology can be measured with rackd's table, with empty chains at the
    /// same hooks, and with no table at all.
    pub fn set_hooks(&self, from: Hooks, to: Hooks) -> Result<()> {
        if from == to {
            return Ok(());
        }
        for name in table_hosts(self.mode) {
            let host = self.topo.host(name);
            match from {
                Hooks::None => {}
                Hooks::EmptyChains => remove_empty_chains(host)?,
                Hooks::RackdTable => remove_table(host)?,
            }
            match to {
                Hooks::None => {}
                Hooks::EmptyChains => install_empty_chains(host)?,
                Hooks::RackdTable => install_orphan_table(&self.rackd, host, &self.dir.join(name))?,
            }
        }
        Ok(())
    }

    /// Which mode this is.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The topology (for cuts).
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The client host.
    pub fn client(&self) -> &Host {
        self.topo.host("client")
    }

    /// The server host.
    pub fn server(&self) -> &Host {
        self.topo.host("server")
    }

    /// The server's address and `port`.
    pub fn server_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.server().v4(), port))
    }

    /// The daemons (none for native).
    pub fn daemons(&self) -> &[Daemon] {
        &self.daemons
    }

    /// The client host's daemon, if this mode has one.
    pub fn client_daemon(&self) -> Option<&Daemon> {
        self.daemons.first()
    }

    /// The traffic program.
    pub fn peer(&self) -> &Path {
        &self.peer
    }

    /// Starts another traffic server in the server host, on `port`.
    pub fn extra_server(&self, port: u16) -> Result<Process> {
        serve(&self.peer, self.server(), port)
    }

    /// Runs `rkb-peer <args>` in the client host to completion and reads its JSON result.
    pub fn run_client<T: DeserializeOwned>(&self, args: &[String], timeout: Duration) -> Result<T> {
        let output = self
            .client()
            .command(&self.peer)
            .args(args)
            .run(timeout)?
            .check()?;
        parse_json_line(&output.command, &output.stdout)
    }

    /// CPU seconds used by all daemons together.
    pub fn daemon_cpu_seconds(&self) -> Result<f64> {
        self.daemons.iter().map(Daemon::cpu_seconds).sum()
    }

    /// Fails unless every daemon still runs.
    pub fn check_daemons(&self) -> Result<()> {
        self.daemons.iter().try_for_each(Daemon::check_alive)
    }

    /// Checks that the mode is what it claims, with a live connection: released mode's
    /// daemon releases it, managed mode's daemons both track it under one id.
    pub fn verify_mode(&self, interval_ms: u64) -> Result<()> {
        let addr = self.server_addr(SERVICE_PORT).to_string();
        let args = ["trickle", &addr, "--interval-ms", &interval_ms.to_string()];
        let probe = self.client().spawn(&self.peer, args)?;
        probe.wait_for_output(crate::peer::ECHO_LINE, LISTEN_TIMEOUT)?;
        let wrong = |detail: String| Error::Check {
            mode: self.mode.as_str(),
            measurement: "mode check",
            detail,
        };
        match self.mode {
            Mode::Native | Mode::NativeB => {}
            Mode::TableOnly => {
                for name in table_hosts(self.mode) {
                    if !has_table(self.topo.host(name))? {
                        return Err(wrong(format!("host {name} has no rackd table")));
                    }
                }
            }
            Mode::Released => {
                let daemon = &self.daemons[0];
                wait_until(STATUS_TIMEOUT, || {
                    let status = daemon.status()?;
                    let released = status.daemon.states.get("released").copied().unwrap_or(0);
                    Ok(released > 0 && daemon.connections_on(SERVICE_PORT)?.is_empty())
                })?
                .then_some(())
                .ok_or_else(|| {
                    wrong(format!(
                        "the client's rackd did not release the connection to a server without \
                         rackd: {:?}",
                        daemon.status().map(|s| (s.daemon.states, s.connections))
                    ))
                })?;
            }
            Mode::Managed => {
                let tracked = wait_until(STATUS_TIMEOUT, || {
                    let [c, s] = [&self.daemons[0], &self.daemons[1]]
                        .map(|d| d.connections_on(SERVICE_PORT));
                    let (c, s) = (c?, s?);
                    Ok(c.iter().any(|c| {
                        c.state != ConnState::Released
                            && s.iter()
                                .any(|s| s.id == c.id && s.state != ConnState::Released)
                    }))
                })?;
                if !tracked {
                    return Err(wrong(format!(
                        "the two rackds do not both track the connection under one id: \
                         client {:?}, server {:?}",
                        self.daemons[0].connections_on(SERVICE_PORT)?,
                        self.daemons[1].connections_on(SERVICE_PORT)?
                    )));
                }
            }
        }
        probe.kill()?;
        Ok(())
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // The control sockets and configuration files; the topology removes everything else.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a table-only scenario's hosts have at netfilter's hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hooks {
    /// No table: netfilter's hooks are not entered at all.
    None,
    /// rackd's two base chains, without rules.
    EmptyChains,
    /// rackd's table, as a SIGKILLed rackd leaves it.
    RackdTable,
}

impl Hooks {
    /// Every arm, in the order of the first pair.
    pub const ALL: [Hooks; 3] = [Hooks::RackdTable, Hooks::None, Hooks::EmptyChains];

    /// As in the raw results.
    pub fn as_str(self) -> &'static str {
        match self {
            Hooks::None => "none",
            Hooks::EmptyChains => "empty_chains",
            Hooks::RackdTable => "rackd_table",
        }
    }
}

/// The hosts that get rackd's table in `mode`.
fn table_hosts(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Native | Mode::NativeB => &[],
        Mode::Released => &["client"],
        Mode::Managed | Mode::TableOnly => &["client", "server"],
    }
}

/// Starts the daemons `mode` has: none, the client's, or the client's and the server's. In
/// table-only mode they are started and killed at once, leaving their tables behind.
fn start_daemons(mode: Mode, rackd: &Path, topo: &Topology, dir: &Path) -> Result<Vec<Daemon>> {
    let hosts = table_hosts(mode);
    if !mode.has_daemon() {
        for name in hosts {
            install_orphan_table(rackd, topo.host(name), &dir.join(name))?;
        }
        return Ok(Vec::new());
    }
    hosts
        .iter()
        .map(|name| Daemon::start(rackd, topo.host(name), &dir.join(name)))
        .collect()
}

/// Starts `rkb-peer serve` on `port` in `host` and waits until it listens.
fn serve(peer: &Path, host: &Host, port: u16) -> Result<Process> {
    let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let server = host.spawn(peer, ["serve", &listen.to_string()])?;
    server.wait_for_output("listening", LISTEN_TIMEOUT)?;
    Ok(server)
}

/// Reads the last line of `stdout` as JSON.
pub fn parse_json_line<T: DeserializeOwned>(command: &str, stdout: &str) -> Result<T> {
    let bad = |detail: String| Error::BadResult {
        command: command.to_owned(),
        detail,
        output: stdout.to_owned(),
    };
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| bad("empty output".into()))?;
    serde_json::from_str(line).map_err(|e| bad(e.to_string()))
}

/// Polls `done` every 20 ms until it is true (Ok(true)) or `limit` passes (Ok(false)).
pub fn wait_until(limit: Duration, done: impl FnMut() -> Result<bool>) -> Result<bool> {
    poll(limit, Duration::from_millis(20), done)
}

/// Calls `done` every `every` until it is true (Ok(true)) or `limit` passes (Ok(false)).
pub fn poll(
    limit: Duration,
    every: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(true);
        }
        if start.elapsed() > limit {
            return Ok(false);
        }
        std::thread::sleep(every);
    }
}
