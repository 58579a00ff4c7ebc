//! The stage every real-program scenario plays on: client — router — server with rackd on both
//! hosts (fast failure detection), plain TCP made to give up within seconds, and the two faults
//! each scenario goes through — an outage (the router's link towards the client taken down) and
//! a change of the client's address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netns_tests::{Host, Topology};
use rackctl::proto::{ConnState, ConnectionStatus};

use crate::daemon::{Daemon, DaemonError, DaemonOptions};

/// Heartbeats every 250 ms, failure declared after 1.5 s of silence: detection beats the kernel's
/// abort (about 3 s with data in flight and `tcp_retries2=3`).
pub const FAST_MONITOR: &str = "[monitor]\nheartbeat_interval_ms = 250\ndetect_after_ms = 1500\n";

/// `net.ipv4.tcp_retries2` on every host: plain TCP with data in flight gives up after about
/// 3 s, so a connection that lives through a minute's outage owes it to rackd.
const TCP_RETRIES2: &str = "3";

/// How long both daemons may take to notice a cut path.
const DETECT_LIMIT: Duration = Duration::from_secs(5);
/// How long both daemons may take to bring every connection back once the path returns.
const RESUME_LIMIT: Duration = Duration::from_secs(30);
/// How long both daemons may take to follow the client's new address.
const FOLLOW_LIMIT: Duration = Duration::from_secs(15);

/// Why a scenario step failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{0}")]
    Harness(#[from] netns_tests::Error),
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    #[error("timed out after {waited:?} waiting for {what}: {detail}")]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{program}: {detail}")]
    Program { program: String, detail: String },
}

impl ScenarioError {
    /// An [`ScenarioError::Io`] maker for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ScenarioError {
        let what = what.into();
        move |source| ScenarioError::Io { what, source }
    }

    /// A program that did something other than expected.
    pub fn program(program: impl Into<String>, detail: impl Into<String>) -> ScenarioError {
        ScenarioError::Program {
            program: program.into(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = ScenarioError> = std::result::Result<T, E>;

/// Polls `check` every 20 ms until it returns `Ok(Some(_))`; after `limit`, fails with what the
/// last `Ok(None)` round left in `detail`.
pub fn poll<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut(&mut String) -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut detail = String::new();
    loop {
        if let Some(value) = check(&mut detail)? {
            return Ok(value);
        }
        if start.elapsed() > limit {
            return Err(ScenarioError::Timeout {
                what: what.to_owned(),
                waited: limit,
                detail,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Client and server with rackd on both; everything is removed when it is dropped. Errors of
/// its methods leave the daemons' logs out: add [`Testbed::logs`] where a failure is reported.
#[derive(Debug)]
pub struct Testbed {
    // Daemons first: they go before the topology that holds their namespaces.
    pub client_rackd: Daemon,
    pub server_rackd: Daemon,
    pub topo: Topology,
}

/// What an outage looked like to the daemons.
#[derive(Debug, Clone, Copy)]
pub struct OutageReport {
    /// From the link going down until both daemons held every connection.
    pub detected_in: Duration,
    /// From the link going down until it came back up.
    pub length: Duration,
    /// When the link came back up.
    pub up_at: Instant,
    /// From the link coming back until both daemons showed every connection connected.
    pub resumed_in: Duration,
}

/// What the client's move to a new address looked like to the daemons.
#[derive(Debug, Clone, Copy)]
pub struct MoveReport {
    /// The client's new IPv4 address.
    pub new_v4: Ipv4Addr,
    /// From the address change until both daemons showed every connection connected on it.
    pub followed_in: Duration,
}

/// Connection `id` as both daemons see it, client first.
type Pair = [Option<ConnectionStatus>; 2];

impl Testbed {
    /// Builds client — router — server, sets `tcp_retries2=3` on the hosts and starts rackd on
    /// both with fast monitoring, logging at `log_level`.
    pub fn start(log_level: &str) -> Result<Testbed> {
        let topo = Topology::new()?;
        for host in topo.hosts() {
            host.sysctl("net.ipv4.tcp_retries2", TCP_RETRIES2)?;
        }
        let options = DaemonOptions {
            config: FAST_MONITOR.into(),
            log_level: log_level.into(),
            open_files: None,
        };
        Ok(Testbed {
            client_rackd: Daemon::start(topo.host("client"), &options)?,
            server_rackd: Daemon::start(topo.host("server"), &options)?,
            topo,
        })
    }

    pub fn client(&self) -> &Host {
        self.topo.host("client")
    }

    pub fn server(&self) -> &Host {
        self.topo.host("server")
    }

    /// The last lines of both daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |d: &Daemon| {
            let log = d.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "client rackd:\n{}\nserver rackd:\n{}",
            tail(&self.client_rackd),
            tail(&self.server_rackd)
        )
    }

    /// Each daemon's connections by id.
    fn by_id(&self) -> Result<[BTreeMap<String, ConnectionStatus>; 2]> {
        let of = |d: &Daemon, side: &str| -> Result<BTreeMap<String, ConnectionStatus>> {
            let status = d.status().map_err(|e| {
                ScenarioError::program(format!("{side} rackd"), format!("status: {e}"))
            })?;
            Ok(status
                .connections
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect())
        };
        Ok([
            of(&self.client_rackd, "client")?,
            of(&self.server_rackd, "server")?,
        ])
    }

    /// Connections `ids` at both ends.
    fn pairs(&self, ids: &[String]) -> Result<Vec<(String, Pair)>> {
        let [mut c, mut s] = self.by_id()?;
        Ok(ids
            .iter()
            .map(|id| (id.clone(), [c.remove(id), s.remove(id)]))
            .collect())
    }

    /// Waits until both daemons show at least `count` connections to the server's `port`
    /// connected, under the same ids; returns those ids.
    pub fn managed_on(&self, port: u16, count: usize, limit: Duration) -> Result<Vec<String>> {
        let suffix = format!(":{port}");
        poll(
            &format!("{count} connections to port {port} connected at both ends"),
            limit,
            |detail| {
                let [c, s] = self.by_id()?;
                let connected = |m: &BTreeMap<String, ConnectionStatus>, server_end: bool| {
                    m.values()
                        .filter(|c| c.state == ConnState::Connected)
                        .filter(|c| {
                            let end = if server_end {
                                &c.original_local
                            } else {
                                &c.original_remote
                            };
                            end.ends_with(&suffix)
                        })
                        .map(|c| c.id.clone())
                        .collect::<std::collections::BTreeSet<String>>()
                };
                let (ci, si) = (connected(&c, false), connected(&s, true));
                let both: Vec<String> = ci.intersection(&si).cloned().collect();
                *detail = format!(
                    "client rackd shows {} connected, server rackd {}, {} under the same id",
                    ci.len(),
                    si.len(),
                    both.len()
                );
                Ok((both.len() >= count).then_some(both))
            },
        )
    }

    /// Waits until every connection of `ids` satisfies `ok` at both ends and returns the time
    /// since `since`; `what` names the condition in the failure, which lists the first
    /// connections that did not.
    fn wait_all(
        &self,
        ids: &[String],
        what: &str,
        (since, limit): (Instant, Duration),
        ok: impl Fn(&Pair) -> bool,
    ) -> Result<Duration> {
        poll(what, limit, |detail| {
            let pairs = self.pairs(ids)?;
            let bad: Vec<&(String, Pair)> = pairs.iter().filter(|(_, p)| !ok(p)).collect();
            *detail = format!(
                "{} of {} connections not yet, e.g. {:?}",
                bad.len(),
                ids.len(),
                bad.iter().take(3).collect::<Vec<_>>()
            );
            Ok(bad.is_empty().then(|| since.elapsed()))
        })
    }

    /// The router's interface towards the client (`v-<host>`, see netns-tests).
    fn router_link(&self) -> String {
        format!("v-{}", self.client().name())
    }

    fn set_router_link(&self, state: &str) -> Result<()> {
        let link = self.router_link();
        self.topo
            .router()
            .run("ip", ["link", "set", link.as_str(), state])?;
        Ok(())
    }

    /// Takes the router's link towards the client down and waits until both daemons hold every
    /// connection of `ids` (suspended or reconnecting). End it with [`Outage::end_after`].
    pub fn begin_outage<'a>(&'a self, ids: &'a [String]) -> Result<Outage<'a>> {
        let began = Instant::now();
        self.set_router_link("down")?;
        let detected_in = self.wait_all(
            ids,
            "both daemons to hold every connection after the link went down",
            (began, DETECT_LIMIT),
            |p| p.iter().all(|c| c.as_ref().is_some_and(|c| held(c.state))),
        )?;
        Ok(Outage {
            bed: self,
            ids,
            began,
            detected_in,
        })
    }

    /// An outage of `length` with nothing to do while it lasts: see [`Testbed::begin_outage`].
    pub fn outage(&self, ids: &[String], length: Duration) -> Result<OutageReport> {
        self.begin_outage(ids)?.end_after(length)
    }

    /// Replaces the client's addresses with the next ones in its subnets (`.2` → `.3`), as a
    /// laptop changing networks would, and waits until both daemons show every connection of
    /// `ids` connected over the new address.
    pub fn move_client(&self, ids: &[String]) -> Result<MoveReport> {
        let (v4, v6) = self.client().addresses().successor();
        let start = Instant::now();
        self.topo.change_address("client", v4, v6)?;
        let at_new = format!("{v4}:");
        let followed_in = self.wait_all(
            ids,
            &format!("both daemons to follow the client to {v4}"),
            (start, FOLLOW_LIMIT),
            |[c, s]| {
                c.as_ref().is_some_and(|c| {
                    c.state == ConnState::Connected && c.local.starts_with(&at_new)
                }) && s.as_ref().is_some_and(|s| {
                    s.state == ConnState::Connected && s.remote.starts_with(&at_new)
                })
            },
        )?;
        Ok(MoveReport {
            new_v4: v4,
            followed_in,
        })
    }

    /// The id under which the client's rackd manages the TCP connection that process `pid`
    /// (running in the client) holds towards the server's `port`.
    pub fn client_conn_of_pid(&self, pid: u32, port: u16) -> Result<String> {
        let out = self.client().run("ss", ["-Htnp", "state", "established"])?;
        let owner = format!("pid={pid},");
        let suffix = format!(":{port}");
        // Columns: Recv-Q Send-Q Local Peer Process (the state is filtered, so not shown).
        let local = out
            .stdout
            .lines()
            .filter(|l| l.contains(&owner))
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.len() >= 4 && cols[3].ends_with(&suffix)).then(|| cols[2].to_owned())
            })
            .ok_or_else(|| {
                ScenarioError::program("ss", format!("no connection of pid {pid}:\n{}", out.stdout))
            })?;
        let [c, _] = self.by_id()?;
        c.into_values()
            .find(|c| c.original_local == local)
            .map(|c| c.id)
            .ok_or_else(|| {
                ScenarioError::program("rackd", format!("the client rackd does not list {local}"))
            })
    }

    /// Asserts that both daemons show every connection of `ids` connected (e.g. at the end).
    pub fn expect_connected(&self, ids: &[String], when: &str) -> Result<()> {
        self.wait_all(
            ids,
            &format!("every connection connected at both ends {when}"),
            (Instant::now(), Duration::from_secs(2)),
            |p| {
                p.iter()
                    .all(|c| c.as_ref().is_some_and(|c| c.state == ConnState::Connected))
            },
        )
        .map(drop)
    }
}

/// Whether a connection in `state` is being held through a failure.
fn held(state: ConnState) -> bool {
    matches!(state, ConnState::Suspended | ConnState::Reconnecting)
}

/// An outage in progress: the router's link towards the client is down.
#[derive(Debug)]
pub struct Outage<'a> {
    bed: &'a Testbed,
    ids: &'a [String],
    began: Instant,
    detected_in: Duration,
}

impl Outage<'_> {
    /// How long ago the link went down.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// Waits until the link has been down for `length`, checks that both daemons still hold
    /// every connection, brings the link back and waits until both show every connection
    /// connected again.
    pub fn end_after(self, length: Duration) -> Result<OutageReport> {
        let bed = self.bed;
        std::thread::sleep(length.saturating_sub(self.began.elapsed()));
        let still = bed.pairs(self.ids)?;
        if let Some((id, pair)) = still
            .iter()
            .find(|(_, p)| !p.iter().all(|c| c.as_ref().is_some_and(|c| held(c.state))))
        {
            return Err(ScenarioError::program(
                "rackd",
                format!(
                    "connection {id} was not held at both ends at the end of the outage: \
                     {pair:?}"
                ),
            ));
        }
        let up = Instant::now();
        bed.set_router_link("up")?;
        let length = self.began.elapsed();
        let resumed_in = bed.wait_all(
            self.ids,
            "both daemons to show every connection connected after the link came back",
            (up, RESUME_LIMIT),
            |p| {
                p.iter().all(|c| {
                    c.as_ref()
                        .is_some_and(|c| c.state == ConnState::Connected && c.reconnects > 0)
                })
            },
        )?;
        Ok(OutageReport {
            detected_in: self.detected_in,
            length,
            up_at: up,
            resumed_in,
        })
    }
}
