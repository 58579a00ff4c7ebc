//! A blocking client for the control socket: one request, one response line.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::{ErrorBody, ErrorCode, Request, Response, Status};
use crate::server::encode_request;

/// What can go wrong talking to rackd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control socket at {0} (is rackd running? see --control-socket)")]
    NoSocket(PathBuf),
    #[error(
        "permission denied on {0}: status needs membership in the socket's group (default \
         \"rackd\"), changes need root"
    )]
    Access(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("rackd sent an unreadable response: {0}")]
    Protocol(String),
    #[error("rackd refused: {0}")]
    Daemon(ErrorBody),
}

impl ClientError {
    /// The daemon's error code, when the daemon answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon(b) => Some(b.code),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NoSocket(path.into())
            }
            io::ErrorKind::PermissionDenied => ClientError::Access(path.into()),
            _ => ClientError::Io {
                path: path.into(),
                source: e,
            },
        })?;
        let io_err = |source| ClientError::Io {
            path: path.into(),
            source,
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err)?;
        Ok(Self {
            path: path.into(),
            reader: BufReader::new(stream),
        })
    }

    /// Sends `req` and returns the daemon's successful response.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let io_err = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = encode_request(req);
        line.push('\n');
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(io_err)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(io_err)?;
        if n == 0 {
            return Err(ClientError::Protocol("connection closed".into()));
        }
        let resp: Response = serde_json::from_str(&answer)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", answer.trim_end())))?;
        match resp.error {
            Some(body) if !resp.ok => Err(ClientError::Daemon(body)),
            _ if !resp.ok => Err(ClientError::Protocol("ok=false without an error".into())),
            _ => Ok(resp),
        }
    }

    pub fn status(&mut self) -> Result<Status, ClientError> {
        self.call(&Request::Status)?
            .status
            .ok_or_else(|| ClientError::Protocol("status response without status".into()))
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
}
