//! A blocking client for the control socket: one request, one response line (or, for `watch`,
//! one status line per interval until the client stops).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fdpass;
use crate::proto::{CheckpointInfo, ErrorBody, ErrorCode, Request, Response, RestoredInfo, Status};
use crate::server::{encode_request, MAX_ATTACHMENT};

/// How long to wait for an answer before giving up on the daemon.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to rackd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the path: rackd is not running or uses another socket.
    #[error("is rackd running? no control socket at {0} (see --control-socket)")]
    NoSocket(PathBuf),
    /// The socket's mode keeps this user out.
    #[error(
        "permission denied on {0}: reading status needs membership in the socket's group \
         (default \"rackd\"), changing connections needs root"
    )]
    Access(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The daemon's answer is not a response of this protocol.
    #[error("rackd sent an unreadable response: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{}", daemon_message(.0))]
    Daemon(ErrorBody),
}

fn daemon_message(body: &ErrorBody) -> String {
    match body.code {
        ErrorCode::PermissionDenied => format!(
            "permission denied: {} (changing connections needs root; try sudo)",
            body.message
        ),
        code => format!("rackd refused ({code}): {}", body.message),
    }
}

impl ClientError {
    /// The daemon's error code, when the daemon answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon(b) => Some(b.code),
            _ => None,
        }
    }

    fn connect(path: &Path, e: io::Error) -> Self {
        match e.kind() {
            // A stale socket file without a listener refuses connections: same advice.
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NoSocket(path.into())
            }
            io::ErrorKind::PermissionDenied => ClientError::Access(path.into()),
            _ => ClientError::Io {
                path: path.into(),
                source: e,
            },
        }
    }
}

/// A connection to rackd's control socket. Requests are answered in order; after
/// [`Client::watch`] the connection is spent.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|e| ClientError::connect(path, e))?;
        let mut client = Self {
            path: path.into(),
            reader: BufReader::new(stream),
        };
        client.set_timeout(ANSWER_TIMEOUT)?;
        Ok(client)
    }

    /// Sends `req` and returns the daemon's successful response.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.send(req)?;
        self.receive()
    }

    pub fn status(&mut self) -> Result<Status, ClientError> {
        let response = self.call(&Request::Status)?;
        status_of(response)
    }

    pub fn suspend(&mut self, id: &str) -> Result<(), ClientError> {
        self.call(&Request::Suspend { id: id.into() }).map(drop)
    }

    pub fn resume(&mut self, id: &str) -> Result<(), ClientError> {
        self.call(&Request::Resume { id: id.into() }).map(drop)
    }

    pub fn peer(&mut self, id: &str, addr: &str) -> Result<(), ClientError> {
        self.call(&Request::Peer {
            id: id.into(),
            addr: addr.into(),
        })
        .map(drop)
    }

    /// Captures the connection of socket `fd` in process `pid` (stopped, preferably): returns
    /// what was captured and the blob. The socket is frozen afterwards; end the process.
    pub fn checkpoint(&mut self, pid: u32, fd: i32) -> Result<Checkpoint, ClientError> {
        let response = self.call(&Request::Checkpoint { pid, fd })?;
        let info = response.checkpoint.ok_or_else(|| {
            ClientError::Protocol("checkpoint response without \"checkpoint\"".into())
        })?;
        if info.blob_len > MAX_ATTACHMENT {
            return Err(ClientError::Protocol(format!(
                "blob_len {} is larger than the limit of {MAX_ATTACHMENT}",
                info.blob_len
            )));
        }
        let mut blob = vec![0u8; info.blob_len as usize];
        let read = self.reader.read_exact(&mut blob);
        read.map_err(|e| self.io_err(e))?;
        Ok(Checkpoint { info, blob })
    }

    /// Restores `blob` into a new connected socket on this host, at `local` (an address of this
    /// host; the kernel's choice towards the peer when `None`).
    pub fn restore(
        &mut self,
        blob: &[u8],
        local: Option<std::net::IpAddr>,
    ) -> Result<Restored, ClientError> {
        let request = Request::Restore {
            blob_len: blob.len() as u64,
            local: local.map(|a| a.to_string()),
        };
        self.send(&request)?;
        let written = self.reader.get_mut().write_all(blob);
        written.map_err(|e| self.io_err(e))?;
        if !self.reader.buffer().is_empty() {
            return Err(ClientError::Protocol(
                "unexpected bytes before the restore answer".into(),
            ));
        }
        let (line, fd) =
            fdpass::read_line_with_fd(self.reader.get_ref()).map_err(|e| self.io_err(e))?;
        let response = decode_response(&String::from_utf8_lossy(&line))?;
        let info = response
            .restored
            .ok_or_else(|| ClientError::Protocol("restore response without \"restored\"".into()))?;
        let socket = fd.ok_or_else(|| {
            ClientError::Protocol("restore answer came without a socket attached".into())
        })?;
        Ok(Restored { info, socket })
    }

    /// Asks for a status every `interval` (the daemon's default when `None`) and hands each to
    /// `each` until it returns `Break`, the daemon hangs up, or an error arrives.
    pub fn watch(
        &mut self,
        interval: Option<Duration>,
        mut each: impl FnMut(&Status) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let interval_ms = interval.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.set_timeout(interval.unwrap_or_default().saturating_add(ANSWER_TIMEOUT))?;
        self.send(&Request::Watch { interval_ms })?;
        loop {
            let status = status_of(self.receive()?)?;
            if each(&status).is_break() {
                return Ok(());
            }
        }
    }

    fn io_err(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| self.io_err(e))
    }

    fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut line = encode_request(req);
        line.push('\n');
        let written = self.reader.get_mut().write_all(line.as_bytes());
        written.map_err(|e| self.io_err(e))
    }

    fn receive(&mut self) -> Result<Response, ClientError> {
        let mut answer = String::new();
        let read = self.reader.read_line(&mut answer);
        match read {
            Ok(0) => Err(ClientError::Protocol(
                "rackd closed the connection without answering".into(),
            )),
            Ok(_) => decode_response(&answer),
            Err(e) => Err(self.io_err(e)),
        }
    }
}

/// A captured connection: what the daemon reports, and the sealed blob to restore it from.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub info: CheckpointInfo,
    pub blob: Vec<u8>,
}

/// A restored connection: its details and the connected socket.
#[derive(Debug)]
pub struct Restored {
    pub info: RestoredInfo,
    pub socket: std::os::fd::OwnedFd,
}

/// Turns one response line into the daemon's successful response or its error.
pub fn decode_response(line: &str) -> Result<Response, ClientError> {
    let line = line.trim_end();
    let response: Response = serde_json::from_str(line)
        .map_err(|e| ClientError::Protocol(format!("{e} in {line:?}")))?;
    match (response.ok, response.error) {
        (true, _) => Ok(Response {
            error: None,
            ..response
        }),
        (false, Some(body)) => Err(ClientError::Daemon(body)),
        (false, None) => Err(ClientError::Protocol(format!(
            "\"ok\":false without an error in {line:?}"
        ))),
    }
}

fn status_of(response: Response) -> Result<Status, ClientError> {
    response
        .status
        .ok_or_else(|| ClientError::Protocol("status response without \"status\"".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_errors_keep_their_code_and_message() {
        let line =
            r#"{"v":1,"ok":false,"error":{"code":"not_found","message":"no connection 1f"}}"#;
        let e = decode_response(line).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        assert_eq!(e.to_string(), "rackd refused (not_found): no connection 1f");
    }

    #[test]
    fn permission_denied_explains_what_to_do() {
        let line = r#"{"v":1,"ok":false,"error":{"code":"permission_denied","message":"suspend needs root"}}"#;
        let e = decode_response(line).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PermissionDenied));
        let text = e.to_string();
        assert!(
            text.contains("suspend needs root") && text.contains("root"),
            "{text}"
        );
    }

    #[test]
    fn malformed_answers_are_protocol_errors() {
        for line in ["", "hello", r#"{"v":1,"ok":false}"#, r#"{"ok":true}"#] {
            let e = decode_response(line).unwrap_err();
            assert!(matches!(e, ClientError::Protocol(_)), "{line:?} gave {e:?}");
            assert_eq!(e.code(), None);
        }
        assert!(decode_response("{\"v\":1,\"ok\":true}\n").unwrap().ok);
    }

    #[test]
    fn connect_errors_give_advice() {
        let path = Path::new("/nonexistent/rackd/control.sock");
        let e = Client::connect(path).unwrap_err();
        assert_eq!(
            e.to_string(),
            "is rackd running? no control socket at /nonexistent/rackd/control.sock \
             (see --control-socket)"
        );
        let denied = ClientError::connect(path, io::ErrorKind::PermissionDenied.into());
        assert!(denied.to_string().contains("group"), "{denied}");
        let refused = ClientError::connect(path, io::ErrorKind::ConnectionRefused.into());
        assert!(matches!(refused, ClientError::NoSocket(_)));
    }
}
