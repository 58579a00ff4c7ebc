//! Requests, responses and the status object, as they travel on the control socket.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
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
    /// Stream one status response per interval until the client hangs up.
    Watch {
        /// Milliseconds between status lines; the daemon picks when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u64>,
    },
    /// Capture the connection of socket `fd` in process `pid` (root only). The answer carries
    /// [`CheckpointInfo`] and is followed by `blob_len` bytes of blob; the socket is frozen.
    Checkpoint {
        pid: u32,
        fd: i32,
    },
    /// Restore a checkpoint (root only): the line is followed by `blob_len` bytes of blob. The
    /// answer carries [`RestoredInfo`] and, attached to it (`SCM_RIGHTS`), the new socket.
    Restore {
        blob_len: u64,
        /// This host's address for the socket; the kernel's choice towards the peer if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local: Option<String>,
    },
}

impl Request {
    /// Every `cmd` word this version understands.
    pub const COMMANDS: [&'static str; 7] = [
        "status",
        "suspend",
        "resume",
        "peer",
        "watch",
        "checkpoint",
        "restore",
    ];

    /// Whether the request changes a connection (root only) rather than reading state.
    pub fn changes_state(&self) -> bool {
        !matches!(self, Request::Status | Request::Watch { .. })
    }

    /// The `cmd` word, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Suspend { .. } => "suspend",
            Request::Resume { .. } => "resume",
            Request::Peer { .. } => "peer",
            Request::Watch { .. } => "watch",
            Request::Checkpoint { .. } => "checkpoint",
            Request::Restore { .. } => "restore",
        }
    }

    /// Bytes of blob that follow the request line.
    pub fn attachment_len(&self) -> u64 {
        match self {
            Request::Restore { blob_len, .. } => *blob_len,
            _ => 0,
        }
    }
}

/// What a checkpoint captured; `blob_len` bytes of blob follow the response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The checkpoint's random id (hex): a blob is restored once.
    pub checkpoint: String,
    /// The connection's id (hex), as `status` shows it.
    pub id: String,
    pub local: String,
    pub remote: String,
    /// Sent but unacknowledged or unsent bytes, and received but unread bytes, in the blob.
    pub send_queue: u64,
    pub recv_queue: u64,
    pub blob_len: u64,
    /// Time the daemon took, from taking the descriptor to the sealed blob.
    pub elapsed_us: u64,
}

/// The socket a restore made; the descriptor travels with the response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredInfo {
    pub checkpoint: String,
    pub id: String,
    pub local: String,
    pub remote: String,
    /// Time from the request to the peer's acceptance (the socket is live from then on).
    pub elapsed_us: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<RestoredInfo>,
}

impl Response {
    pub fn ok() -> Self {
        Self {
            v: VERSION,
            ok: true,
            status: None,
            error: None,
            checkpoint: None,
            restored: None,
        }
    }

    pub fn checkpoint(info: CheckpointInfo) -> Self {
        Self {
            checkpoint: Some(info),
            ..Self::ok()
        }
    }

    pub fn restored(info: RestoredInfo) -> Self {
        Self {
            restored: Some(info),
            ..Self::ok()
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
            ok: false,
            error: Some(error),
            ..Self::ok()
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
    /// A code this version does not know, sent by a newer daemon; the message still explains.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// An address as the status shows it: `ip:port`, IPv6 as `[ip]:port`. An IPv4-mapped IPv6
/// address (a dual-stack socket talking IPv4) is shown as the IPv4 address it is.
pub fn endpoint(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())).to_string(),
            None => SocketAddr::from((*v6.ip(), v6.port())).to_string(),
        },
        v4 => v4.to_string(),
    }
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

/// A status with one spliced IPv6 connection, shared by the golden tests here and in `render`.
#[cfg(test)]
pub(crate) fn sample_status() -> Status {
    Status {
        daemon: DaemonStatus {
            version: "0.1.0".into(),
            pid: 42,
            uptime_s: 61,
            queue_mode: "compat".into(),
            packets_queued: 10,
            packets_dropped: 0,
            states: ConnState::ALL
                .iter()
                .map(|s| (s.to_string(), u64::from(*s == ConnState::Suspended)))
                .collect(),
        },
        connections: vec![ConnectionStatus {
            id: "00ab".into(),
            state: ConnState::Suspended,
            local: "[2001:db8::9]:40000".into(),
            remote: "[2001:db8::2]:22".into(),
            original_local: "[2001:db8::1]:40000".into(),
            original_remote: "[2001:db8::2]:22".into(),
            age_s: 5,
            suspended_for_s: 3,
            reconnects: 1,
            bytes_sent: 2048,
            bytes_received: 1,
            peer: Some("rackd 0.1.0".into()),
            last_heartbeat_ms_ago: None,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_GOLDEN: &str = concat!(
        r#"{"v":1,"ok":true,"status":{"daemon":{"version":"0.1.0","pid":42,"uptime_s":61,"#,
        r#""queue_mode":"compat","packets_queued":10,"packets_dropped":0,"#,
        r#""states":{"closed":0,"connected":0,"negotiating":0,"reconnecting":0,"released":0,"#,
        r#""suspended":1}},"connections":[{"id":"00ab","state":"suspended","#,
        r#""local":"[2001:db8::9]:40000","remote":"[2001:db8::2]:22","#,
        r#""original_local":"[2001:db8::1]:40000","original_remote":"[2001:db8::2]:22","#,
        r#""age_s":5,"suspended_for_s":3,"reconnects":1,"bytes_sent":2048,"bytes_received":1,"#,
        r#""peer":"rackd 0.1.0"}]}}"#
    );

    #[test]
    fn status_response_golden() {
        let r = Response::status(sample_status());
        assert_eq!(serde_json::to_string(&r).unwrap(), STATUS_GOLDEN);
        let back: Response = serde_json::from_str(STATUS_GOLDEN).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn optional_connection_fields_may_be_absent_or_present() {
        let mut s = sample_status();
        s.connections[0].peer = None;
        s.connections[0].last_heartbeat_ms_ago = Some(120);
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("\"peer\""), "{text}");
        assert!(text.contains(r#""last_heartbeat_ms_ago":120"#), "{text}");
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), s);
    }

    #[test]
    fn newer_daemons_may_add_fields() {
        let text = STATUS_GOLDEN.replace(r#""pid":42"#, r#""pid":42,"threads":3"#);
        let r: Response = serde_json::from_str(&text).unwrap();
        assert_eq!(r.status.unwrap().daemon.pid, 42);
    }

    #[test]
    fn unknown_error_codes_from_newer_daemons_still_parse() {
        let e: ErrorBody =
            serde_json::from_str(r#"{"code":"quota_exceeded","message":"too many"}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Unknown);
        assert_eq!(e.message, "too many");
    }

    #[test]
    fn endpoints_bracket_ipv6_and_unmap_ipv4() {
        let e = |s: &str| endpoint(s.parse().unwrap());
        assert_eq!(e("192.0.2.1:80"), "192.0.2.1:80");
        assert_eq!(e("[2001:db8::1]:443"), "[2001:db8::1]:443");
        assert_eq!(e("[::ffff:198.51.100.7]:22"), "198.51.100.7:22");
        // Scope ids and flow labels are not part of a connection's identity on screen.
        assert_eq!(e("[fe80::1%2]:22"), "[fe80::1]:22");
    }

    #[test]
    fn states_are_lowercase_words_both_ways() {
        for s in ConnState::ALL {
            let word = s.to_string();
            assert_eq!(word, word.to_lowercase());
            assert_eq!(word.parse::<ConnState>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{word}\""));
        }
        let e = "Connected".parse::<ConnState>().unwrap_err();
        assert!(e.contains("\"Connected\""), "{e}");
    }

    #[test]
    fn error_codes_are_snake_case() {
        let words: Vec<String> = [
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::BadRequest,
            ErrorCode::UnsupportedVersion,
            ErrorCode::InvalidState,
            ErrorCode::Internal,
        ]
        .iter()
        .map(|c| {
            let word = serde_json::to_string(c).unwrap();
            assert_eq!(word, format!("\"{c}\""), "Display and serde agree");
            word
        })
        .collect();
        assert_eq!(
            words,
            [
                "\"permission_denied\"",
                "\"not_found\"",
                "\"bad_request\"",
                "\"unsupported_version\"",
                "\"invalid_state\"",
                "\"internal\""
            ]
        );
    }
}
