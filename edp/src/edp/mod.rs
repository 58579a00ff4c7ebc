//! The Enhancement Detection Protocol (Zandy, *Application Mobility*, ch. 3.2), sans-IO.
//!
//! ```text
//! client                                         server
//! probe:  connect ─────────────────────────────▶ accept
//!         shutdown(SHUT_WR) ── FIN ────────────▶ EOF before any byte: a probe
//!         ◀──────────── ANNOUNCEMENT (1024 B), close
//! main:   connect ─────────────────────────────▶ accept
//!         ANNOUNCEMENT ‖ Init frame ───────────▶ announcement matched, Init answered
//!         ◀──────────────────────────── InitAck frame
//!         (the main connection now carries the application's bytes)
//! ```
//!
//! An unenhanced server answers the probe with anything else — nothing, EOF, an error page — and
//! the client falls back to a fresh plain connection; the server saw one connection that carried
//! no data and was closed. The enhanced server hands any connection that does not start with a
//! probe or the announcement to the application untouched, including the bytes it already read.
//!
//! [`EdpClient`] and [`ServerConn`] are driven like quinn-proto's `Connection`: feed events with
//! the current time, drain `poll_action`, sleep until `poll_timeout`, call `handle_timeout`, and
//! read the outcome when `outcome` is `Some`.

mod announcement;
mod client;
mod server;
#[cfg(test)]
mod tests;

pub use announcement::{ANNOUNCEMENT, ANNOUNCEMENT_LEN};
pub use client::{
    Channel, ClientAction, ClientEvent, ClientOutcome, ClientState, EdpClient, Fallback,
};
pub use server::{ServerAction, ServerConn, ServerEvent, ServerOutcome, ServerState};

use crate::identity::PeerTrust;
use crate::init::LocalParams;
use crate::message::ConnId;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the client waits for the announcement on the probe: the measured connect time times
/// `multiplier`, clamped to `[floor, ceiling]`. Connecting took one round trip; the answer needs
/// one more plus the server's scheduling, so a few connect times are plenty on a steady path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub multiplier: u32,
    pub floor: Duration,
    pub ceiling: Duration,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            multiplier: 4,
            floor: Duration::from_millis(200),
            ceiling: Duration::from_secs(3),
        }
    }
}

impl ProbeTiming {
    pub fn timeout(&self, connect_time: Duration) -> Duration {
        connect_time
            .saturating_mul(self.multiplier)
            .clamp(self.floor, self.ceiling.max(self.floor))
    }
}

/// Trust policy shared by all connections of a process (a TOFU store is written by any of them).
pub type SharedTrust = Arc<Mutex<PeerTrust>>;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub timing: ProbeTiming,
    /// Limit for each TCP connect (probe and main).
    pub connect_timeout: Duration,
    /// Limit for the InitAck after the main connection is up.
    pub init_timeout: Duration,
    pub params: LocalParams,
    /// Connection id to use; random if `None`.
    pub conn_id: Option<ConnId>,
    /// How the server is named for pinning (e.g. its address or host name).
    pub peer_name: String,
    pub trust: SharedTrust,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timing: ProbeTiming::default(),
            connect_timeout: Duration::from_secs(5),
            init_timeout: Duration::from_secs(5),
            params: LocalParams::default(),
            conn_id: None,
            peer_name: "server".to_owned(),
            trust: Arc::new(Mutex::new(PeerTrust::Opportunistic)),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a new connection may stay silent before it is handed to the application as plain
    /// (clients of server-speaks-first protocols send nothing; probes and announcements arrive
    /// within a round trip of the handshake).
    pub classify_timeout: Duration,
    /// Limit for the Init frame after the announcement was matched.
    pub init_timeout: Duration,
    pub params: LocalParams,
    pub trust: SharedTrust,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            classify_timeout: Duration::from_millis(500),
            init_timeout: Duration::from_secs(5),
            params: LocalParams::default(),
            trust: Arc::new(Mutex::new(PeerTrust::Opportunistic)),
        }
    }
}

/// How many leading bytes of `data`, continuing a match of `matched` announcement bytes, agree with
/// the announcement; `Err(())` on the first disagreeing byte.
fn match_announcement(matched: usize, data: &[u8]) -> Result<usize, ()> {
    let expected = &ANNOUNCEMENT[matched..];
    let n = data.len().min(expected.len());
    if data[..n] == expected[..n] {
        Ok(n)
    } else {
        Err(())
    }
}
