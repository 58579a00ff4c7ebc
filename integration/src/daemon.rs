//! rackd running inside a test host, with its own control socket and configuration file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns_tests::{Host, Process};
use rackctl::client::{Client, ClientError};
use rackctl::proto::Status;

use crate::procfs::Memory;

/// How rackd is started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Contents of its configuration file.
    pub config: String,
    pub log_level: String,
    /// Soft `RLIMIT_NOFILE`, as a service manager would set it (`None`: inherited).
    pub open_files: Option<u64>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            config: String::new(),
            log_level: "info".into(),
            open_files: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Harness(#[from] netns_tests::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("rackd in {netns} did not answer status within {waited:?} (last error: {last}); its log:\n{log}")]
    NotReady {
        netns: String,
        waited: Duration,
        last: String,
        log: String,
    },
}

/// A rackd process in a host; killed (and its files removed) when dropped.
#[derive(Debug)]
pub struct Daemon {
    dir: PathBuf,
    socket: PathBuf,
    process: Process,
    pid: u32,
}

impl Daemon {
    /// Starts rackd in `host` and waits until its control socket answers.
    pub fn start(host: &Host, options: &DaemonOptions) -> Result<Daemon, DaemonError> {
        let dir = std::env::temp_dir().join(format!("rk-integration-{}", host.netns()));
        let io = |what: String| move |source| DaemonError::Io { what, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let (socket, config) = (dir.join("control.sock"), dir.join("rackd.toml"));
        std::fs::write(&config, &options.config)
            .map_err(io(format!("writing {}", config.display())))?;
        let rackd = netns_tests::workspace_bin("rackd")?;
        let mut command = match options.open_files {
            // prlimit sets the limits and execs rackd: the pid stays rackd's.
            Some(soft) => host
                .command("prlimit")
                .arg(format!("--nofile={soft}:"))
                .arg(&rackd),
            None => host.command(&rackd),
        };
        command = command
            .arg("--config")
            .arg(&config)
            .arg("--control-socket")
            .arg(&socket)
            .args(["--log-level", &options.log_level]);
        let process = command.spawn()?;
        let pid = process.pid();
        let daemon = Daemon {
            dir,
            socket,
            process,
            pid,
        };
        let waited = Duration::from_secs(10);
        let start = Instant::now();
        loop {
            match daemon.status() {
                Ok(_) => return Ok(daemon),
                Err(e) if start.elapsed() > waited || !daemon.alive() => {
                    return Err(DaemonError::NotReady {
                        netns: host.netns().into(),
                        waited,
                        last: e.to_string(),
                        log: daemon.log(),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A status from a fresh control connection.
    pub fn status(&self) -> Result<Status, ClientError> {
        Client::connect(&self.socket)?.status()
    }

    /// Whether the process still runs.
    pub fn alive(&self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// What rackd logged so far (stderr).
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    pub fn memory(&self) -> std::io::Result<Memory> {
        Memory::of(self.pid)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
