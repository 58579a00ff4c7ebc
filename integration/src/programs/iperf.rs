//! iperf3: a one-off server and a client whose JSON report is checked.

use std::net::IpAddr;
use std::time::Duration;

use netns_tests::{Host, Process};

use crate::testbed::{Result, ScenarioError};

/// An iperf3 server for one test (`-1`: it exits after the test).
#[derive(Debug)]
pub struct IperfServer {
    process: Process,
    addr: IpAddr,
    port: u16,
}

impl IperfServer {
    pub fn start(host: &Host, addr: IpAddr, port: u16) -> Result<IperfServer> {
        let process = host
            .command("iperf3")
            .args(["-s", "-1", "--forceflush", "-p", &port.to_string()])
            .args(["-B", &addr.to_string()])
            .spawn()?;
        process.wait_for_output("Server listening", Duration::from_secs(10))?;
        Ok(IperfServer {
            process,
            addr,
            port,
        })
    }

    /// What the server printed (its own view of the test).
    pub fn output(&self) -> String {
        self.process.stdout()
    }
}

/// An iperf3 client run, in the background.
#[derive(Debug)]
pub struct IperfRun {
    process: Process,
    reverse: bool,
}

/// One reporting interval of the receiving end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Seconds from the start of the test.
    pub start: f64,
    pub bytes: u64,
}

/// What an iperf3 client reported (`-J`).
#[derive(Debug, Clone)]
pub struct IperfReport {
    /// `error`, if iperf3 reported one.
    pub error: Option<String>,
    /// Bytes the sending end wrote.
    pub bytes_sent: u64,
    /// Bytes the receiving end read.
    pub bytes_received: u64,
    /// The client's intervals (bytes the client sent, or with `-R` received).
    pub intervals: Vec<Interval>,
}

impl IperfRun {
    /// Starts a client in `client` for `seconds` at `bits_per_s`; `reverse` makes the server
    /// send (`-R`).
    pub fn start(
        client: &Host,
        server: &IperfServer,
        seconds: u64,
        bits_per_s: u64,
        reverse: bool,
    ) -> Result<IperfRun> {
        let mut command = client
            .command("iperf3")
            .args([
                "-c",
                &server.addr.to_string(),
                "-p",
                &server.port.to_string(),
            ])
            .args([
                "-t",
                &seconds.to_string(),
                "-b",
                &bits_per_s.to_string(),
                "-J",
            ]);
        if reverse {
            command = command.arg("-R");
        }
        Ok(IperfRun {
            process: command.spawn()?,
            reverse,
        })
    }

    /// Waits for the client and parses its report; iperf3's own failure is in `error`.
    pub fn finish(self, timeout: Duration) -> Result<IperfReport> {
        let out = self.process.wait(timeout)?;
        let name = if self.reverse { "iperf3 -R" } else { "iperf3" };
        let json: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
            ScenarioError::program(
                name,
                format!(
                    "no JSON report ({e}); exit {}; stderr {}",
                    out.status, out.stderr
                ),
            )
        })?;
        let mut report = parse_report(&json)
            .ok_or_else(|| ScenarioError::program(name, format!("unexpected report: {json}")))?;
        if !out.success() && report.error.is_none() {
            report.error = Some(format!("exited with {}", out.status));
        }
        Ok(report)
    }
}

fn parse_report(json: &serde_json::Value) -> Option<IperfReport> {
    let error = json["error"].as_str().map(str::to_owned);
    let end = &json["end"];
    let intervals = json["intervals"]
        .as_array()?
        .iter()
        .filter_map(|i| {
            let sum = &i["sum"];
            Some(Interval {
                start: sum["start"].as_f64()?,
                bytes: sum["bytes"].as_u64()?,
            })
        })
        .collect();
    Some(IperfReport {
        bytes_sent: end["sum_sent"]["bytes"].as_u64().unwrap_or(0),
        bytes_received: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
        error,
        intervals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_totals_intervals_and_errors() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"intervals":[{"sum":{"start":0,"end":1.0,"bytes":100}},
                             {"sum":{"start":1.0,"end":2.0,"bytes":0}}],
                "end":{"sum_sent":{"bytes":100},"sum_received":{"bytes":90}}}"#,
        )
        .unwrap();
        let r = parse_report(&json).unwrap();
        assert_eq!((r.bytes_sent, r.bytes_received, r.error), (100, 90, None));
        assert_eq!(
            r.intervals[1],
            Interval {
                start: 1.0,
                bytes: 0
            }
        );
        let failed: serde_json::Value = serde_json::from_str(
            r#"{"intervals":[],"end":{},"error":"control socket has closed unexpectedly"}"#,
        )
        .unwrap();
        assert_eq!(
            parse_report(&failed).unwrap().error.as_deref(),
            Some("control socket has closed unexpectedly")
        );
    }
}
