//! The control socket: JSON lines over a unix stream socket (protocol in rackctl/README.md).
//!
//! Connections are served by their own tasks; each request reaches the event loop as a
//! [`ControlCall`], so the engine is only ever touched by its owner. Who may do what is decided
//! here from the kernel's view of the caller (`SO_PEERCRED`): anyone who can open the socket
//! (its mode and group) may read status; only root may change connections.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use rackctl::proto::{ErrorBody, ErrorCode, Request, Response};
use rackctl::server::{declares_attachment, encode_response, read_request, MAX_REQUEST_LINE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::ControlConfig;
use crate::daemon::DaemonInfo;
use crate::engine::{CommandError, Engine};
use crate::queue::PumpStats;
use crate::status;

/// One request on its way to the event loop, with the channel for its answer.
#[derive(Debug)]
pub struct ControlCall {
    pub request: Request,
    /// The bytes that followed the request line (a restore's blob).
    pub attachment: Vec<u8>,
    pub reply: oneshot::Sender<Reply>,
}

/// An answer: the response line, bytes that follow it (a checkpoint's blob), and a descriptor
/// attached to the line (a restored socket).
#[derive(Debug)]
pub struct Reply {
    pub response: Response,
    pub attachment: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply {
            response,
            attachment: Vec::new(),
            fd: None,
        }
    }
}

/// Creates the socket with the configured mode and group. A socket file left by a dead daemon
/// is replaced; one a live daemon still listens on is an error, not stolen.
pub fn bind(cfg: &ControlConfig) -> io::Result<UnixListener> {
    let path = &cfg.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another rackd is listening on it",
                ))
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let listener = UnixListener::bind(path)?;
    let mode = cfg
        .mode_bits()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    match group_id(&cfg.group) {
        Some(gid) => std::os::unix::fs::chown(path, None, Some(gid))?,
        None => tracing::warn!(
            group = %cfg.group,
            "control group does not exist: only root can use the control socket"
        ),
    }
    Ok(listener)
}

/// Removes the socket file at exit (best effort: a later start replaces it anyway).
pub fn unbind(cfg: &ControlConfig) {
    let _ = std::fs::remove_file(&cfg.socket);
}

fn group_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string; getgrnam returns NULL or a pointer to static
    // storage that we read before any other call could overwrite it (single call site, loop
    // thread only at start-up).
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return None;
    }
    // SAFETY: `gr` is non-null and points to a valid `struct group`.
    Some(unsafe { (*gr).gr_gid })
}

/// Control connections served at once. When a new one arrives beyond that, the oldest is
/// closed: idle clients (anyone in the group may connect) can neither use up the daemon's file
/// descriptors nor lock out a fresh `rackctl status`.
pub const MAX_CONNECTIONS: usize = 256;

/// Accepts connections until the task is aborted.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<ControlCall>) {
    let mut open: std::collections::VecDeque<tokio::task::JoinHandle<()>> =
        std::collections::VecDeque::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                open.retain(|t| !t.is_finished());
                if open.len() >= MAX_CONNECTIONS {
                    if let Some(oldest) = open.pop_front() {
                        oldest.abort();
                    }
                }
                open.push_back(tokio::spawn(serve_connection(stream, calls.clone())));
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(stream: UnixStream, calls: mpsc::Sender<ControlCall>) {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Each line is limited on its own (one byte over, so an oversize line is seen as such).
        let mut limited = (&mut lines).take(MAX_REQUEST_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A refused request's attachment is not read: the connection ends after the answer.
        let mut in_sync = line.len() <= MAX_REQUEST_LINE;
        let reply = match read_request(&line) {
            Err(body) => {
                // A bad line is answered and the next one read, unless a blob follows it.
                in_sync &= !declares_attachment(&line);
                Response::error(body).into()
            }
            Ok(request) if request.changes_state() && uid != Some(0) => {
                in_sync &= request.attachment_len() == 0;
                Response::error(ErrorBody::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "{} changes connections and needs root (caller uid {})",
                        request.name(),
                        uid.map_or("unknown".into(), |u| u.to_string())
                    ),
                ))
                .into()
            }
            Ok(request) => {
                let mut attachment = Vec::new();
                let len = request.attachment_len();
                if len > 0
                    && (&mut lines)
                        .take(len)
                        .read_to_end(&mut attachment)
                        .await
                        .is_err()
                {
                    return;
                }
                if attachment.len() as u64 != len {
                    return; // the client hung up in the middle of its blob
                }
                call(&calls, request, attachment).await
            }
        };
        if send_reply(&mut write, reply).await.is_err() || !in_sync {
            return;
        }
    }
}

async fn call(calls: &mpsc::Sender<ControlCall>, request: Request, attachment: Vec<u8>) -> Reply {
    let (reply, answer) = oneshot::channel();
    let internal =
        || Response::error(ErrorBody::new(ErrorCode::Internal, "daemon is stopping")).into();
    let call = ControlCall {
        request,
        attachment,
        reply,
    };
    if calls.send(call).await.is_err() {
        return internal();
    }
    answer.await.unwrap_or_else(|_| internal())
}

/// Writes the response line (with the descriptor attached to it, if any), then the attachment.
async fn send_reply(write: &mut OwnedWriteHalf, reply: Reply) -> io::Result<()> {
    let mut out = encode_response(&reply.response);
    out.push('\n');
    let mut sent = 0;
    if let Some(fd) = &reply.fd {
        let stream: &UnixStream = write.as_ref();
        sent = loop {
            stream.writable().await?;
            match stream.try_io(tokio::io::Interest::WRITABLE, || {
                rackctl::fdpass::send_with_fd(stream, out.as_bytes(), fd.as_raw_fd())
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => break other?,
            }
        };
    }
    write.write_all(&out.as_bytes()[sent..]).await?;
    write.write_all(&reply.attachment).await
}

/// Answers a call on the event loop.
pub fn answer(
    call: ControlCall,
    now: std::time::Instant,
    info: &DaemonInfo,
    engine: &mut Engine,
    stats: &PumpStats,
) {
    let done = |r: Result<(), CommandError>| match r {
        Ok(()) => Response::ok(),
        Err(e) => {
            let code = match e {
                CommandError::UnknownId(_) => ErrorCode::NotFound,
                _ => ErrorCode::InvalidState,
            };
            Response::error(ErrorBody::new(code, e.to_string()))
        }
    };
    let response = match call.request {
        Request::Status => Response::status(status::snapshot(info, engine, stats)),
        Request::Suspend { id } => done(engine.suspend_by_id(now, &id)),
        Request::Resume { id } => done(engine.resume_by_id(now, &id)),
        Request::Peer { id, addr } => match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => done(engine.set_peer_by_id(&id, ip)),
            Err(_) => Response::error(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("{addr:?} is not an IP address"),
            )),
        },
        other => Response::error(ErrorBody::new(
            ErrorCode::InvalidState,
            format!("{} is not available yet in this version", other.name()),
        )),
    };
    let _ = call.reply.send(response.into());
}
