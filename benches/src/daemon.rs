//! A rackd started in a test host for the benchmark, and what the benchmark asks it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns_tests::{Host, Process};
use rackctl::proto::{ConnState, ConnectionStatus, Status};

use crate::{procstat, Error, Result};

/// How long a daemon may take to answer on its control socket after start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an `nft` command may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running rackd, ended (by pid, through its process handle) when dropped.
#[derive(Debug)]
pub struct Daemon {
    host: String,
    socket: PathBuf,
    pid: u32,
    process: Process,
}

impl Daemon {
    /// Starts `rackd` in `host` with the built-in defaults (an empty configuration file) and a
    /// control socket in `dir`; returns once it answers a status request.
    pub fn start(rackd: &Path, host: &Host, dir: &Path) -> Result<Daemon> {
        let fail = |detail: String| Error::Daemon {
            host: host.name().to_owned(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {dir:?}")))?;
        let (socket, config) = (dir.join("control.sock"), dir.join("rackd.toml"));
        std::fs::write(&config, "# built-in defaults\n")
            .map_err(Error::io(format!("writing {config:?}")))?;
        let process = host
            .command(rackd)
            .arg("--config")
            .arg(&config)
            .arg("--control-socket")
            .arg(&socket)
            // Logging costs CPU that native TCP does not pay; warnings only.
            .args(["--log-level", "warn"])
            .spawn()?;
        let start = Instant::now();
        let status = loop {
            match status_at(&socket) {
                Ok(status) => break status,
                Err(e) if start.elapsed() > READY_TIMEOUT => {
                    return Err(fail(format!(
                        "not ready within {READY_TIMEOUT:?} ({e}); its stderr: {:?}",
                        process.stderr()
                    )))
                }
                Err(_) => {
                    if let Some(exit) = process.try_wait()? {
                        return Err(fail(format!(
                            "exited ({exit}) during start; its stderr: {:?}",
                            process.stderr()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        if status.daemon.pid != process.pid() {
            return Err(fail(format!(
                "its status reports pid {}, but the process started is {}",
                status.daemon.pid,
                process.pid()
            )));
        }
        Ok(Daemon {
            host: host.name().to_owned(),
            socket,
            pid: process.pid(),
            process,
        })
    }

    /// Stops the daemon with SIGTERM (it removes its rules) and waits for it to exit; fails if
    /// it does not exit cleanly in time.
    pub fn stop(self) -> Result<()> {
        // The process is our child and not yet reaped, so its pid cannot have been reused.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| self.error(format!("SIGTERM to pid {}: {e}", self.pid)))?;
        let output = self.process.wait(STOP_TIMEOUT).map_err(|e| {
            let _ = self.process.kill();
            self.error(format!("did not stop on SIGTERM: {e}"))
        })?;
        if output.success() {
            Ok(())
        } else {
            Err(self.error(format!(
                "exited with {} on SIGTERM; its stderr: {:?}",
                output.status, output.stderr
            )))
        }
    }

    /// Kills the daemon with SIGKILL, which leaves its nftables table behind as a crash does
    /// (queues fail open with nobody reading them), and reaps it.
    pub fn kill(self) -> Result<()> {
        self.process.kill()?;
        Ok(())
    }

    /// The host it runs in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `rackctl status`, through the control protocol's client.
    pub fn status(&self) -> Result<Status> {
        status_at(&self.socket).map_err(|detail| self.error(format!("status: {detail}")))
    }

    /// The connections whose local or remote port is `port`.
    pub fn connections_on(&self, port: u16) -> Result<Vec<ConnectionStatus>> {
        let suffix = format!(":{port}");
        Ok(self
            .status()?
            .connections
            .into_iter()
            .filter(|c| c.local.ends_with(&suffix) || c.remote.ends_with(&suffix))
            .collect())
    }

    /// CPU seconds used so far; fails if the daemon has died.
    pub fn cpu_seconds(&self) -> Result<f64> {
        self.check_alive()?;
        procstat::cpu_seconds(self.pid)
    }

    /// Resident memory in bytes; fails if the daemon has died.
    pub fn rss_bytes(&self) -> Result<u64> {
        self.check_alive()?;
        procstat::rss_bytes(self.pid)
    }

    /// An error unless the daemon still runs.
    pub fn check_alive(&self) -> Result<()> {
        match self.process.try_wait()? {
            None => Ok(()),
            Some(exit) => Err(self.error(format!(
                "exited ({exit}) during the benchmark; its stderr: {:?}",
                self.process.stderr()
            ))),
        }
    }

    fn error(&self, detail: String) -> Error {
        Error::Daemon {
            host: self.host.clone(),
            detail,
        }
    }
}

fn status_at(socket: &Path) -> std::result::Result<Status, String> {
    let mut client = rackctl::client::Client::connect(socket).map_err(|e| e.to_string())?;
    client.status().map_err(|e| e.to_string())
}

/// The name of rackd's nftables table (inet family) with the built-in configuration.
pub const TABLE: &str = "rackd";

/// Installs rackd's table in `host` the way a crashed daemon leaves it: starts rackd (control
/// socket and configuration in `dir`), SIGKILLs it and checks that the table stayed.
pub fn install_orphan_table(rackd: &Path, host: &Host, dir: &Path) -> Result<()> {
    Daemon::start(rackd, host, dir)?.kill()?;
    if has_table(host)? {
        Ok(())
    } else {
        Err(Error::Daemon {
            host: host.name().to_owned(),
            detail: format!("no nftables table inet {TABLE} left after SIGKILL"),
        })
    }
}

/// Whether `host` has rackd's table.
pub fn has_table(host: &Host) -> Result<bool> {
    let listing = host
        .command("nft")
        .args(["list", "table", "inet", TABLE])
        .run(NFT_TIMEOUT)?;
    Ok(listing.success())
}

/// Deletes rackd's table from `host` (which must have it).
pub fn remove_table(host: &Host) -> Result<()> {
    host.run("nft", ["delete", "table", "inet", TABLE])?;
    Ok(())
}

/// A table with rackd's two base chains (same hooks, priorities and types) and no rules: the
/// cost of entering netfilter at those hooks, without rackd's rules.
const EMPTY_TABLE: &str = "rkb_empty";

/// Adds [`EMPTY_TABLE`] to `host`.
pub fn install_empty_chains(host: &Host) -> Result<()> {
    let script = format!(
        "add table inet {EMPTY_TABLE}; \
         add chain inet {EMPTY_TABLE} pre {{ type filter hook prerouting priority -300; }}; \
         add chain inet {EMPTY_TABLE} out {{ type route hook output priority -150; }}"
    );
    host.run("nft", [script.as_str()])?;
    Ok(())
}

/// Deletes [`EMPTY_TABLE`] from `host` (which must have it).
pub fn remove_empty_chains(host: &Host) -> Result<()> {
    host.run("nft", ["delete", "table", "inet", EMPTY_TABLE])?;
    Ok(())
}

/// Whether `state` shows that the daemon noticed a failed path.
pub fn is_failure_noticed(state: ConnState) -> bool {
    matches!(state, ConnState::Suspended | ConnState::Reconnecting)
}
