//! A tiny fake rackd: a control socket in a temporary directory that answers with the shared
//! codec (`rackctl::server`) from a fixed status, recording every request it accepts.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rackctl::proto::{
    ConnState, ConnectionStatus, DaemonStatus, ErrorBody, ErrorCode, Request, Response, Status,
};
use rackctl::server::{encode_response, read_request, MAX_REQUEST_LINE};

/// The id of the one connection the fake daemon knows how to change.
pub const KNOWN_ID: &str = "00ab";

/// How the fake daemon behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Refuse changes as rackd does for callers that are not root.
    pub deny_changes: bool,
    /// Answer `watch` like a daemon that does not stream (invalid_state).
    pub no_streaming: bool,
    /// Close each connection as soon as a request arrives, without answering.
    pub hang_up: bool,
}

#[derive(Debug)]
pub struct FakeDaemon {
    dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl FakeDaemon {
    pub fn start(behaviour: Behaviour) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake control socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let log = log.clone();
                thread::spawn(move || serve(stream, behaviour, &log));
            }
        });
        Self {
            dir,
            socket,
            requests,
            stop,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Opens the directory and sets the socket's mode, so other users can (or cannot) reach it.
    pub fn set_socket_mode(&self, mode: u32) {
        let perms = std::fs::Permissions::from_mode;
        std::fs::set_permissions(self.dir.path(), perms(0o755)).expect("chmod dir");
        std::fs::set_permissions(&self.socket, perms(mode)).expect("chmod socket");
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("request log").clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag; it may already be gone.
        let _ = UnixStream::connect(&self.socket);
    }
}

fn serve(stream: UnixStream, behaviour: Behaviour, log: &Mutex<Vec<Request>>) {
    let Ok(mut write) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // The limit applies per line, as rackd must apply it.
        let mut limited = (&mut reader).take(MAX_REQUEST_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if behaviour.hang_up {
            return;
        }
        let response = match read_request(&line) {
            Err(body) => Response::error(body),
            Ok(Request::Watch { interval_ms }) if !behaviour.no_streaming => {
                log.lock()
                    .expect("request log")
                    .push(Request::Watch { interval_ms });
                return stream_status(&mut write, interval_ms.unwrap_or(1000));
            }
            Ok(request) => {
                let response = answer(&request, behaviour);
                log.lock().expect("request log").push(request);
                response
            }
        };
        let mut out = encode_response(&response);
        out.push('\n');
        if write.write_all(out.as_bytes()).is_err() || line.len() > MAX_REQUEST_LINE {
            return;
        }
    }
}

fn stream_status(write: &mut UnixStream, interval_ms: u64) {
    loop {
        let mut out = encode_response(&Response::status(sample_status()));
        out.push('\n');
        if write.write_all(out.as_bytes()).is_err() {
            return; // the client hung up
        }
        thread::sleep(Duration::from_millis(interval_ms));
    }
}

fn answer(request: &Request, behaviour: Behaviour) -> Response {
    let error = |code, message: String| Response::error(ErrorBody::new(code, message));
    match request {
        Request::Status => Response::status(sample_status()),
        Request::Watch { .. } => error(ErrorCode::InvalidState, "watch is not available".into()),
        r if behaviour.deny_changes => error(
            ErrorCode::PermissionDenied,
            format!(
                "{} changes connections and needs root (caller uid 65534)",
                r.name()
            ),
        ),
        Request::Suspend { id } | Request::Resume { id } | Request::Peer { id, .. }
            if id != KNOWN_ID =>
        {
            error(ErrorCode::NotFound, format!("no connection {id}"))
        }
        _ => Response::ok(),
    }
}

/// Two connections: an old spliced IPv6 one, suspended, and a new IPv4 one.
pub fn sample_status() -> Status {
    let conn = |id: &str, state, local: &str, remote: &str, age_s| ConnectionStatus {
        id: id.into(),
        state,
        local: local.into(),
        remote: remote.into(),
        original_local: local.into(),
        original_remote: remote.into(),
        age_s,
        suspended_for_s: 0,
        reconnects: 0,
        bytes_sent: 1_258_291,
        bytes_received: 3 * 1024,
        peer: Some("rackd 0.1.0".into()),
        last_heartbeat_ms_ago: Some(40),
    };
    let mut old = conn(
        KNOWN_ID,
        ConnState::Suspended,
        "[2001:db8::9]:40000",
        "[2001:db8::2]:22",
        3725,
    );
    old.original_local = "[2001:db8::1]:40000".into();
    old.suspended_for_s = 63;
    old.reconnects = 2;
    let new = conn(
        "1f2e",
        ConnState::Connected,
        "192.0.2.1:51000",
        "198.51.100.7:443",
        12,
    );
    let mut states: std::collections::BTreeMap<String, u64> =
        ConnState::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    states.insert("suspended".into(), 1);
    states.insert("connected".into(), 1);
    Status {
        daemon: DaemonStatus {
            version: "0.1.0".into(),
            pid: 4242,
            uptime_s: 90061,
            queue_mode: "native".into(),
            packets_queued: 1500,
            packets_dropped: 3,
            states,
        },
        connections: vec![old, new],
    }
}
