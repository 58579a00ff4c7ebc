//! `rkb-peer`, the benchmark's traffic program: plain std TCP, nothing rackd-specific, run as a
//! real process inside the test hosts.
//!
//! One server (`serve`) answers every kind of client. A client's first byte names what it wants:
//!
//! | byte | request | server's part |
//! |---|---|---|
//! | `S` | sink | reads to end of stream, answers the byte count (u64, big endian), closes |
//! | `G` | generate | reads a u64 count N, sends N bytes, closes |
//! | `E` | echo | echoes every byte until end of stream |
//! | `C` | connect | sends one byte and closes first (so TIME_WAIT stays on the server) |
//! | `I` | idle | keeps the connection open, untouched, until the server exits |
//!
//! Clients print one JSON line with their result (the types below), or, for `trickle`, one line
//! per echo received with the CLOCK_MONOTONIC time, which the orchestrator shares.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// Request bytes (see the module documentation).
pub mod request {
    /// Sink: the client uploads.
    pub const SINK: u8 = b'S';
    /// Generate: the client downloads.
    pub const GENERATE: u8 = b'G';
    /// Echo: ping-pong and trickle.
    pub const ECHO: u8 = b'E';
    /// Connect: one byte back, server closes.
    pub const CONNECT: u8 = b'C';
    /// Idle: held open.
    pub const IDLE: u8 = b'I';
}

/// Size of the buffers bulk transfers read and write.
pub const BULK_CHUNK: usize = 128 * 1024;

/// Which way a bulk transfer goes, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Direction {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// What `rkb-peer bulk` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkResult {
    /// Parallel connections.
    pub flows: u32,
    /// Bytes moved in total, each flow's count confirmed by the receiving end.
    pub bytes: u64,
    /// From the first connect to the last flow's confirmation.
    pub elapsed_ns: u64,
}

/// What `rkb-peer pingpong` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingResult {
    /// Round trips measured (after the warm-up).
    pub round_trips: u64,
    /// Median round-trip time.
    pub p50_ns: u64,
    /// 99th percentile round-trip time.
    pub p99_ns: u64,
    /// Slowest round trip.
    pub max_ns: u64,
}

/// What `rkb-peer connect` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectResult {
    /// Connections made (connect, one byte each way, close).
    pub connections: u64,
    /// Median time `connect()` took.
    pub connect_p50_ns: u64,
    /// 99th percentile of the time `connect()` took.
    pub connect_p99_ns: u64,
    /// Time for all connections, one after the other.
    pub elapsed_ns: u64,
}

/// What `rkb-peer hold` prints once all its connections are open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldResult {
    /// Connections open and idle.
    pub connections: u64,
    /// Time it took to open them, one after the other.
    pub elapsed_ns: u64,
}

/// The prefix of the first line `rkb-peer trickle` prints: `local <ip:port>`.
pub const LOCAL_LINE: &str = "local ";

/// The prefix of each line `rkb-peer trickle` prints: `echo <CLOCK_MONOTONIC ns>`.
pub const ECHO_LINE: &str = "echo ";

/// CLOCK_MONOTONIC in nanoseconds: one clock for all processes on the machine, whatever network
/// namespace they are in.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => {
            let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
            secs * 1_000_000_000 + nanos
        }
        // CLOCK_MONOTONIC always exists on Linux.
        Err(e) => panic!("clock_gettime(CLOCK_MONOTONIC): {e}"),
    }
}

/// Raises the open-file limit to its hard limit (root: to `want`), for thousands of idle
/// connections in one process.
pub fn raise_nofile(want: u64) -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    match setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)) {
        Ok(()) => Ok(want),
        // Not allowed to raise the hard limit: take what there is.
        Err(_) => {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
            Ok(hard)
        }
    }
}
