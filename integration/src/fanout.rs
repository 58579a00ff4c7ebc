//! Many concurrent connections in one pair of processes: `rk-fanout` (this crate's program)
//! opens N connections to an echo server and, on command, runs a round of echoes on all of them,
//! checking every byte. The test drives the client through its stdin (`round K`, `close`) and
//! reads one JSON event per line from each end; [`Fanout`] does that for a test.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netns_tests::stream::Pattern;
use netns_tests::{Host, Process};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::testbed::{poll, Result, ScenarioError};

/// Errors an event carries at most (the count of failures is always complete).
const ERRORS_SHOWN: usize = 10;

/// One line of `rk-fanout` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The server listens.
    Listening { addr: String },
    /// The client opened its connections (`connections` of them succeeded).
    Open {
        connections: usize,
        errors: Vec<String>,
        ms: u64,
    },
    /// Echo round `round` finished; `ok` connections got their bytes back intact.
    Round {
        round: u64,
        ok: usize,
        errors: Vec<String>,
        ms: u64,
    },
    /// The client closed every connection; `ok` closed cleanly.
    Closed { ok: usize, errors: Vec<String> },
    /// The server saw all its connections end.
    Served {
        connections: usize,
        bytes: u64,
        errors: Vec<String>,
    },
}

impl Event {
    pub fn to_line(&self) -> String {
        // Plain strings and integers always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The bytes connection `conn` sends in round `round`: between `max / 2` and `max` bytes,
/// different for every connection and round.
pub fn payload(conn: usize, round: u64, max: usize) -> Vec<u8> {
    let max = max.max(2);
    let seed = ((conn as u64) << 20) ^ round.wrapping_mul(0x9e37_79b9);
    let mut len_source = [0u8; 8];
    Pattern::new(seed ^ 0x5a5a).fill(&mut len_source);
    let len = max / 2 + (u64::from_le_bytes(len_source) % (max as u64 / 2 + 1)) as usize;
    let mut buf = vec![0u8; len.min(max)];
    Pattern::new(seed).fill(&mut buf);
    buf
}

fn keep_first(errors: &mut Vec<String>, e: String) {
    if errors.len() < ERRORS_SHOWN {
        errors.push(e);
    }
}

// ----- the program's two ends ------------------------------------------------------------------

/// Accepts `count` connections and echoes each until its client closes; returns the
/// [`Event::Served`] to print.
pub async fn serve(listener: TcpListener, count: usize) -> Event {
    let mut tasks = JoinSet::new();
    let mut errors = Vec::new();
    let mut accepted = 0;
    while accepted < count {
        match listener.accept().await {
            Ok((mut s, _)) => {
                accepted += 1;
                tasks.spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await
                });
            }
            Err(e) => {
                keep_first(&mut errors, format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let mut bytes = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(n)) => bytes += n,
            Ok(Err(e)) => keep_first(&mut errors, format!("echo: {e}")),
            Err(e) => keep_first(&mut errors, format!("echo task: {e}")),
        }
    }
    Event::Served {
        connections: accepted,
        bytes,
        errors,
    }
}

/// A listener with a backlog deep enough for a burst of a thousand SYNs.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The client's connections; a connection that failed is gone for good.
#[derive(Debug)]
pub struct Fan {
    streams: Vec<Option<TcpStream>>,
    max: usize,
}

impl Fan {
    /// Opens `count` connections to `to` at once.
    pub async fn open(to: SocketAddr, count: usize, max: usize) -> (Fan, Event) {
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for i in 0..count {
            tasks.spawn(async move { (i, TcpStream::connect(to).await) });
        }
        let mut streams: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
        let mut errors = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((i, Ok(s))) => streams[i] = Some(s),
                Ok((i, Err(e))) => keep_first(&mut errors, format!("connection {i}: connect: {e}")),
                Err(e) => keep_first(&mut errors, format!("connect task: {e}")),
            }
        }
        let fan = Fan { streams, max };
        let event = Event::Open {
            connections: fan.alive(),
            errors,
            ms: start.elapsed().as_millis() as u64,
        };
        (fan, event)
    }

    fn alive(&self) -> usize {
        self.streams.iter().filter(|s| s.is_some()).count()
    }

    /// Every connection sends its payload for `round` and reads it back.
    pub async fn round(&mut self, round: u64) -> Event {
        let start = Instant::now();
        let max = self.max;
        let mut errors = Vec::new();
        let mut tasks = JoinSet::new();
        for (i, slot) in self.streams.iter_mut().enumerate() {
            match slot.take() {
                Some(mut s) => {
                    tasks.spawn(async move {
                        let r = echo(&mut s, i, round, max).await;
                        (i, s, r)
                    });
                }
                None => keep_first(&mut errors, format!("connection {i}: gone earlier")),
            }
        }
        let mut ok = 0;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((i, s, Ok(()))) => {
                    self.streams[i] = Some(s);
                    ok += 1;
                }
                Ok((_, _, Err(e))) => keep_first(&mut errors, e),
                Err(e) => keep_first(&mut errors, format!("echo task: {e}")),
            }
        }
        Event::Round {
            round,
            ok,
            errors,
            ms: start.elapsed().as_millis() as u64,
        }
    }

    /// Half-closes every connection and reads to the end: the server must close in turn and
    /// send nothing more.
    pub async fn close(self) -> Event {
        let mut tasks = JoinSet::new();
        let mut errors = Vec::new();
        for (i, slot) in self.streams.into_iter().enumerate() {
            let Some(mut s) = slot else {
                keep_first(&mut errors, format!("connection {i}: gone earlier"));
                continue;
            };
            tasks.spawn(async move {
                s.shutdown()
                    .await
                    .map_err(|e| format!("connection {i}: shutdown: {e}"))?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest)
                    .await
                    .map_err(|e| format!("connection {i}: reading to the end: {e}"))?;
                if rest.is_empty() {
                    Ok(())
                } else {
                    Err(format!("connection {i}: {} stray bytes", rest.len()))
                }
            });
        }
        let mut ok = 0;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => ok += 1,
                Ok(Err(e)) => keep_first(&mut errors, e),
                Err(e) => keep_first(&mut errors, format!("close task: {e}")),
            }
        }
        Event::Closed { ok, errors }
    }
}

async fn echo(s: &mut TcpStream, i: usize, round: u64, max: usize) -> Result<(), String> {
    let sent = payload(i, round, max);
    let fail = |what: &str, e: std::io::Error| format!("connection {i} round {round}: {what}: {e}");
    s.write_all(&sent).await.map_err(|e| fail("write", e))?;
    let mut got = vec![0u8; sent.len()];
    s.read_exact(&mut got).await.map_err(|e| fail("read", e))?;
    if got == sent {
        Ok(())
    } else {
        let at = got.iter().zip(&sent).position(|(a, b)| a != b).unwrap_or(0);
        Err(format!(
            "connection {i} round {round}: echo differs at byte {at} of {}",
            sent.len()
        ))
    }
}

// ----- the test's side --------------------------------------------------------------------

/// `rk-fanout` running between two hosts: N connections from the client to the server.
#[derive(Debug)]
pub struct Fanout {
    server: Process,
    client: Process,
    count: usize,
}

impl Fanout {
    /// Starts the echo server in `server` on `to` and the client in `client` with `count`
    /// connections of at most `max_bytes` per echo; returns once all are open.
    pub fn start(
        client: &Host,
        server: &Host,
        to: SocketAddr,
        count: usize,
        max_bytes: usize,
    ) -> Result<Fanout> {
        let program = netns_tests::workspace_bin("rk-fanout")?;
        let (to_s, count_s) = (to.to_string(), count.to_string());
        let server = server
            .command(&program)
            .args(["server", "--listen", &to_s, "--count", &count_s])
            .spawn()?;
        server.wait_for_output("listening", Duration::from_secs(10))?;
        let client = client
            .command(&program)
            .args(["client", "--connect", &to_s, "--count", &count_s])
            .args(["--bytes", &max_bytes.to_string()])
            .stdin_piped()
            .spawn()?;
        let fanout = Fanout {
            server,
            client,
            count,
        };
        match fanout.wait_event("the connections to open", Duration::from_secs(60), |e| {
            matches!(e, Event::Open { .. })
        })? {
            Event::Open { connections, .. } if connections == count => Ok(fanout),
            other => Err(ScenarioError::program("rk-fanout", format!("{other:?}"))),
        }
    }

    fn events(process: &Process) -> Vec<Event> {
        process
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the first client or server event that `matches`.
    fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        poll(&format!("rk-fanout: {what}"), timeout, |_| {
            let found = [&self.client, &self.server]
                .into_iter()
                .flat_map(Fanout::events)
                .find(|e| matches(e));
            if found.is_some() {
                return Ok(found);
            }
            for p in [&self.client, &self.server] {
                if let Some(status) = p.try_wait()? {
                    return Err(ScenarioError::program(
                        p.command(),
                        format!("exited ({status}) before {what}; stderr: {}", p.stderr()),
                    ));
                }
            }
            Ok(None)
        })
    }

    /// Starts echo round `round` on every connection without waiting for it.
    pub fn begin_round(&self, round: u64) -> Result<()> {
        self.client
            .write_stdin(format!("round {round}\n").as_bytes())?;
        Ok(())
    }

    /// Waits for round `round` to finish; fails unless every connection echoed intact.
    pub fn finish_round(&self, round: u64, timeout: Duration) -> Result<Duration> {
        let event = self.wait_event(
            &format!("echo round {round}"),
            timeout,
            |e| matches!(e, Event::Round { round: r, .. } if *r == round),
        )?;
        match event {
            Event::Round { ok, ms, .. } if ok == self.count => Ok(Duration::from_millis(ms)),
            other => Err(ScenarioError::program(
                "rk-fanout",
                format!("round {round}: {other:?}"),
            )),
        }
    }

    /// A whole echo round.
    pub fn round(&self, round: u64, timeout: Duration) -> Result<Duration> {
        self.begin_round(round)?;
        self.finish_round(round, timeout)
    }

    /// Closes every connection in order; fails unless all closed cleanly at both ends.
    pub fn close(self, timeout: Duration) -> Result<u64> {
        self.client.write_stdin(b"close\n")?;
        let closed =
            self.wait_event("the close", timeout, |e| matches!(e, Event::Closed { .. }))?;
        let served = self.wait_event("the server's summary", timeout, |e| {
            matches!(e, Event::Served { .. })
        })?;
        match (&closed, &served) {
            (
                Event::Closed { ok, errors },
                Event::Served {
                    connections,
                    bytes,
                    errors: server_errors,
                },
            ) if *ok == self.count
                && errors.is_empty()
                && *connections == self.count
                && server_errors.is_empty() =>
            {
                Ok(*bytes)
            }
            _ => Err(ScenarioError::program(
                "rk-fanout",
                format!("close: {closed:?}; server: {served:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_and_stay_in_bounds() {
        let a = payload(1, 0, 4096);
        assert!((2048..=4096).contains(&a.len()), "{}", a.len());
        assert_eq!(a, payload(1, 0, 4096));
        assert_ne!(a, payload(2, 0, 4096));
        assert_ne!(a, payload(1, 1, 4096));
        assert!(!payload(0, 0, 0).is_empty());
    }

    #[test]
    fn events_round_trip() {
        let e = Event::Round {
            round: 3,
            ok: 999,
            errors: vec!["connection 7 round 3: read: reset".into()],
            ms: 12,
        };
        let line = e.to_line();
        assert!(line.starts_with(r#"{"event":"round""#), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
    }
}
