//! Data integrity across a topology: `rk-stream` on two hosts, both directions at once.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::stream::{digest_of, StreamReport};
use crate::{workspace_bin, Error, Host, Process, Result};

/// IP version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// How a two-way stream transfer runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Bytes each end sends.
    pub bytes: u64,
    /// Sending rate of each end in bytes per second (None: as fast as possible), so that a
    /// transfer can straddle an outage.
    pub pace: Option<u64>,
    /// The server's TCP port.
    pub port: u16,
    /// IPv4 or IPv6.
    pub family: Family,
    /// How long both ends may take in total before they are killed.
    pub timeout: Duration,
    /// Seed of the client's data.
    pub client_seed: u64,
    /// Seed of the server's data.
    pub server_seed: u64,
    /// The stream program (default: the workspace's `rk-stream`).
    pub program: Option<PathBuf>,
    /// The server reads the client's whole stream (until end of stream) before it sends its
    /// own: a reply to a request.
    pub server_replies_after_eof: bool,
    /// The server application resets the connection this long after it was made.
    pub server_aborts_after: Option<Duration>,
    /// The client sends its bytes, closes the socket and exits without reading; the server
    /// sends nothing and closes after the client.
    pub client_sends_only: bool,
}

impl StreamOptions {
    /// `bytes` each way, IPv4, port 5001, unpaced, a minute at most.
    pub fn new(bytes: u64) -> StreamOptions {
        StreamOptions {
            bytes,
            pace: None,
            port: 5001,
            family: Family::V4,
            timeout: Duration::from_secs(60),
            client_seed: 1,
            server_seed: 2,
            program: None,
            server_replies_after_eof: false,
            server_aborts_after: None,
            client_sends_only: false,
        }
    }

    /// The client sends, closes and exits without reading; the server only receives, and closes
    /// after it read the end of stream. (The report's counts of the unused direction are 0.)
    pub fn client_sends_only(mut self) -> Self {
        self.client_sends_only = true;
        self
    }

    /// The server sends only once it has read the client's whole stream.
    pub fn server_replies_after_eof(mut self) -> Self {
        self.server_replies_after_eof = true;
        self
    }

    /// The server resets the connection `after` it was made.
    pub fn server_aborts_after(mut self, after: Duration) -> Self {
        self.server_aborts_after = Some(after);
        self
    }

    /// Sets the sending rate of each end, bytes per second.
    pub fn pace(mut self, bytes_per_s: u64) -> Self {
        self.pace = Some(bytes_per_s);
        self
    }

    /// Sets the IP version.
    pub fn family(mut self, family: Family) -> Self {
        self.family = family;
        self
    }

    /// Sets the overall time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the server port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn args(&self, mode: &str, addr: String, seed: u64) -> Vec<String> {
        let bytes = if mode == "server" && self.client_sends_only {
            0
        } else {
            self.bytes
        };
        let mut args = vec![mode.to_owned(), addr, "--bytes".into(), bytes.to_string()];
        args.extend(["--seed".into(), seed.to_string()]);
        if let Some(pace) = self.pace {
            args.extend(["--pace".into(), pace.to_string()]);
        }
        if mode == "client" && self.client_sends_only {
            args.push("--send-only".into());
        }
        if mode == "server" {
            // A server that sends nothing still closes only after the client did.
            if self.server_replies_after_eof || self.client_sends_only {
                args.push("--after-eof".into());
            }
            if let Some(after) = self.server_aborts_after {
                args.extend(["--abort-after-ms".into(), after.as_millis().to_string()]);
            }
        }
        args
    }
}

/// A two-way transfer in progress; faults can be injected while it runs.
#[derive(Debug)]
pub struct StreamRun {
    server: Process,
    client: Process,
    options: StreamOptions,
    started: Instant,
}

impl StreamRun {
    /// Starts the server on `server` (listening on its address), waits until it listens, then
    /// starts the client on `client`.
    pub fn start(client: &Host, server: &Host, options: StreamOptions) -> Result<StreamRun> {
        let program = match &options.program {
            Some(path) => path.clone(),
            None => workspace_bin("rk-stream")?,
        };
        let listen = std::net::SocketAddr::new(server.ip(options.family), options.port).to_string();
        let started = Instant::now();
        let server_proc = server
            .command(&program)
            .args(options.args("server", listen.clone(), options.server_seed))
            .spawn()?;
        server_proc.wait_for_output("listening", Duration::from_secs(10))?;
        let client_proc = client
            .command(&program)
            .args(options.args("client", listen, options.client_seed))
            .spawn()?;
        Ok(StreamRun {
            server: server_proc,
            client: client_proc,
            options,
            started,
        })
    }

    /// The client program.
    pub fn client(&self) -> &Process {
        &self.client
    }

    /// The server program.
    pub fn server(&self) -> &Process {
        &self.server
    }

    /// Waits for both ends to finish (killing them at the time limit) and collects their
    /// reports. Transfer errors are in the report; `Err` means a program misbehaved or hung.
    pub fn wait(self) -> Result<TwoWayReport> {
        let left = self.options.timeout.saturating_sub(self.started.elapsed());
        let client = report_of(&self.client, left)?;
        let left = self.options.timeout.saturating_sub(self.started.elapsed());
        let server = report_of(&self.server, left)?;
        Ok(TwoWayReport {
            bytes: self.options.bytes,
            options: self.options,
            client,
            server,
        })
    }
}

fn report_of(process: &Process, timeout: Duration) -> Result<StreamReport> {
    let output = match process.wait(timeout) {
        Ok(output) => output,
        Err(e) => {
            let _ = process.kill();
            return Err(e);
        }
    };
    let line = output.stdout.lines().last().unwrap_or_default();
    StreamReport::parse(line).map_err(|e| Error::BadOutput {
        command: output.command.clone(),
        detail: format!("no result line ({e}); stderr: {}", output.stderr.trim()),
        output: output.stdout.clone(),
    })
}

/// Starts a two-way transfer and waits for it: see [`StreamRun`].
pub fn stream_both_ways(
    client: &Host,
    server: &Host,
    options: StreamOptions,
) -> Result<TwoWayReport> {
    StreamRun::start(client, server, options)?.wait()
}

/// What both ends of a two-way transfer reported.
#[derive(Debug, Clone)]
pub struct TwoWayReport {
    /// Bytes each end was to send.
    pub bytes: u64,
    /// The client's report.
    pub client: StreamReport,
    /// The server's report.
    pub server: StreamReport,
    options: StreamOptions,
}

impl TwoWayReport {
    /// Everything that shows the transfer was not complete and intact: program errors, short
    /// counts, digests that differ between the ends or from the seeded data. Empty when intact.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (upstream, downstream) = self.expected();
        let ends = [
            ("client", &self.client, upstream, downstream),
            ("server", &self.server, downstream, upstream),
        ];
        for (name, report, to_send, to_receive) in ends {
            if let Some(error) = &report.error {
                problems.push(format!("{name} error: {error}"));
            }
            if report.bytes_sent != to_send || report.bytes_received != to_receive {
                problems.push(format!(
                    "{name} sent {} of {to_send} and received {} of {to_receive} bytes",
                    report.bytes_sent, report.bytes_received
                ));
            }
        }
        let directions = [
            (
                "client to server",
                &self.client,
                &self.server,
                self.options.client_seed,
                upstream,
            ),
            (
                "server to client",
                &self.server,
                &self.client,
                self.options.server_seed,
                downstream,
            ),
        ];
        for (name, from, to, seed, bytes) in directions {
            if from.digest_sent != to.digest_received {
                problems.push(format!(
                    "{name}: digest sent {} != received {}",
                    from.digest_sent, to.digest_received
                ));
            } else if from.bytes_sent == bytes && from.digest_sent != digest_of(seed, bytes) {
                problems.push(format!(
                    "{name}: digest {} is not that of the seeded data",
                    from.digest_sent
                ));
            }
        }
        problems
    }

    /// Bytes expected client to server and server to client.
    fn expected(&self) -> (u64, u64) {
        let downstream = if self.options.client_sends_only {
            0
        } else {
            self.bytes
        };
        (self.bytes, downstream)
    }

    /// Whether all bytes crossed intact both ways without errors.
    pub fn intact(&self) -> bool {
        self.problems().is_empty()
    }

    /// The errors the programs reported (client first).
    pub fn errors(&self) -> Vec<&str> {
        [&self.client, &self.server]
            .iter()
            .filter_map(|r| r.error.as_deref())
            .collect()
    }
}
