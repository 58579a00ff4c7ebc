//! Requests, responses and the status object, as they travel on the control socket.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// A request, tagged by `cmd` next to `"v"` in the same object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    Status,
    /// Freeze a connection on purpose (planned maintenance, a move).
    Suspend {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Give a suspended connection its peer's new address.
    Peer {
        id: String,
        addr: String,
    },
}

impl Request {
    /// Whether the request changes a connection (root only) rather than reading state.
    pub fn changes_state(&self) -> bool {
        !matches!(self, Request::Status)
    }

    /// The `cmd` word, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Suspend { .. } => "suspend",
            Request::Resume { .. } => "resume",
            Request::Peer { .. } => "peer",
        }
    }
}

/// One response line. `status` is present for status requests, `error` when `ok` is false.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok() -> Self {
        Self {
            v: VERSION,
            ok: true,
            status: None,
            error: None,
        }
    }

    pub fn status(status: Status) -> Self {
        Self {
            status: Some(status),
            ..Self::ok()
        }
    }

    pub fn error(error: ErrorBody) -> Self {
        Self {
            v: VERSION,
            ok: false,
            status: None,
            error: Some(error),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    PermissionDenied,
    NotFound,
    BadRequest,
    UnsupportedVersion,
    InvalidState,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything `rackctl status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub daemon: DaemonStatus,
    pub connections: Vec<ConnectionStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    /// "native" or "compat" (xtables NFQUEUE through nft_compat).
    pub queue_mode: String,
    pub packets_queued: u64,
    /// Packets rackd dropped on purpose plus datagrams lost to queue overruns.
    pub packets_dropped: u64,
    /// Connections per state; every state is present.
    pub states: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// Hex; the same on both ends of the connection.
    pub id: String,
    pub state: ConnState,
    /// `ip:port`, IPv6 as `[ip]:port`, as the wire sees them now.
    pub local: String,
    pub remote: String,
    /// As the local socket sees them (equal to `local`/`remote` until spliced).
    pub original_local: String,
    pub original_remote: String,
    pub age_s: u64,
    /// 0 unless suspended or reconnecting.
    pub suspended_for_s: u64,
    pub reconnects: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms_ago: Option<u64>,
}

/// A connection's state, as lowercase words on the wire and on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    Negotiating,
    Connected,
    Suspended,
    Reconnecting,
    Released,
    Closed,
}

impl ConnState {
    pub const ALL: [ConnState; 6] = [
        ConnState::Negotiating,
        ConnState::Connected,
        ConnState::Suspended,
        ConnState::Reconnecting,
        ConnState::Released,
        ConnState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Negotiating => "negotiating",
            ConnState::Connected => "connected",
            ConnState::Suspended => "suspended",
            ConnState::Reconnecting => "reconnecting",
            ConnState::Released => "released",
            ConnState::Closed => "closed",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConnState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown connection state {s:?}"))
    }
}
