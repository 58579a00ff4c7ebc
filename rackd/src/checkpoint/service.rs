//! The daemon's checkpoint and restore operations, run on the event loop next to the engine.
//!
//! A checkpoint is immediate: the engine detaches the flow (its packets are dropped from now on
//! and the peer is told to hold the connection), then the socket is read. A restore is
//! answered later: the socket is rebuilt in repair mode (nothing sent), the engine announces the
//! move to the peer, and [`Checkpoints::poll`] finishes it when the peer accepts — or closes it
//! silently when the peer refuses or does not answer in time. `T` is whatever the caller needs
//! to answer the request later (the control call's reply channel).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rackctl::proto::{CheckpointInfo, ErrorBody, ErrorCode, RestoredInfo};

use super::blob::{self, BlobError, CheckpointId, Key, Payload};
use super::repair::{self, Prepared, RepairError};
use crate::config::CheckpointConfig;
use crate::engine::{CommandError, Engine, FlowKey, FlowRecord, RestoreState, SeqPoint};

/// Why a checkpoint or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Repair(#[from] RepairError),
    #[error("{0}")]
    Engine(#[from] CommandError),
    #[error(
        "capturing the socket failed after the connection was detached (the peer holds it): {0}"
    )]
    CaptureAfterDetach(RepairError),
    #[error("the connection record in the blob is unreadable: {0}")]
    Record(String),
    #[error("checkpoint {id} was already restored on this host")]
    Replayed { id: CheckpointId },
    #[error("checkpoint {id} is being restored on this host already")]
    InProgress { id: CheckpointId },
    #[error("checkpoint {id} is {age_s} s old, older than checkpoint.max_age_s = {max_age_s}")]
    Expired {
        id: CheckpointId,
        age_s: u64,
        max_age_s: u64,
    },
    #[error("no local address of this host routes to the peer {0}")]
    NoRoute(IpAddr),
    #[error("the peer refused to move checkpoint {id} here: {reason}")]
    Refused { id: CheckpointId, reason: String },
    #[error("the peer did not accept the move of checkpoint {id} within {after_ms} ms")]
    Timeout { id: CheckpointId, after_ms: u64 },
}

impl CheckpointError {
    /// The control protocol's view of the error.
    pub fn body(&self) -> ErrorBody {
        use CheckpointError as E;
        let code = match self {
            E::Blob(BlobError::KeyMissing { .. } | BlobError::KeyLength { .. })
            | E::Blob(BlobError::KeyMode { .. } | BlobError::Random) => ErrorCode::Internal,
            E::Blob(_) | E::Record(_) | E::Expired { .. } => ErrorCode::BadRequest,
            E::Repair(RepairError::Process { .. } | RepairError::NoFd { .. }) => {
                ErrorCode::NotFound
            }
            E::Repair(RepairError::NotTcp(_)) => ErrorCode::BadRequest,
            E::Engine(CommandError::UnknownFlow(_) | CommandError::UnknownId(_)) => {
                ErrorCode::NotFound
            }
            E::Repair(_) | E::CaptureAfterDetach(_) => ErrorCode::Internal,
            _ => ErrorCode::InvalidState,
        };
        ErrorBody::new(code, self.to_string())
    }
}

/// A restore waiting for the peer.
#[derive(Debug)]
struct Pending<T> {
    id: CheckpointId,
    created_unix_ms: u64,
    conn: String,
    key: FlowKey,
    socket: Prepared,
    started: Instant,
    deadline: Instant,
    reply: T,
}

/// Checkpoint state of the daemon: its settings, restores in progress, ids restored here.
#[derive(Debug)]
pub struct Checkpoints<T> {
    cfg: CheckpointConfig,
    pending: Vec<Pending<T>>,
    /// Ids restored on this host, with the Unix time (ms) after which the blob is too old anyway.
    restored: HashMap<CheckpointId, u64>,
}

/// What a finished restore hands back: the answer and the live socket.
pub type Restored = (RestoredInfo, OwnedFd);

impl<T> Checkpoints<T> {
    pub fn new(cfg: CheckpointConfig) -> Self {
        Checkpoints {
            cfg,
            pending: Vec::new(),
            restored: HashMap::new(),
        }
    }

    /// Captures socket `fd` of process `pid`. `flush` carries out the engine's actions (the
    /// flow's packets must be dropped before its queues are read, or data that arrives between
    /// the read and the process's end would be acknowledged and lost).
    pub fn checkpoint(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        pid: u32,
        fd: RawFd,
        flush: impl FnOnce(&mut Engine),
    ) -> Result<(CheckpointInfo, Vec<u8>), CheckpointError> {
        let started = Instant::now();
        let key = Key::load(&self.cfg.key_file)?;
        let sock = repair::grab(pid, fd)?;
        let (local, remote) = repair::tcp_endpoints(sock.as_fd())?;
        let flow = FlowKey { local, remote };
        let record = engine.checkpoint_flow(now, &flow)?;
        flush(engine);
        let image = repair::capture(sock.as_fd()).map_err(|e| {
            tracing::error!(%flow, "checkpoint: {e}");
            CheckpointError::CaptureAfterDetach(e)
        })?;
        let payload = Payload {
            id: CheckpointId::random()?,
            created_unix_ms: blob::unix_ms_now(),
            record: serde_json::to_vec(&record)
                .map_err(|e| CheckpointError::Record(e.to_string()))?,
            socket: image,
        };
        let sealed = blob::seal(&key, &payload)?;
        let info = CheckpointInfo {
            checkpoint: payload.id.to_string(),
            id: conn_hex(&record),
            local: rackctl::proto::endpoint(local),
            remote: rackctl::proto::endpoint(remote),
            send_queue: payload.socket.send_queue.len() as u64,
            recv_queue: payload.socket.recv_queue.len() as u64,
            blob_len: sealed.len() as u64,
            elapsed_us: micros(started.elapsed()),
        };
        tracing::info!(%flow, checkpoint = %payload.id, bytes = sealed.len(),
            us = info.elapsed_us, "checkpointed");
        Ok((info, sealed))
    }

    /// Starts restoring `blob` at this host's address `local` (the kernel's source towards the
    /// peer when `None`); the answer comes from [`Checkpoints::poll`]. On an immediate failure
    /// the reply handle is given back with the error.
    pub fn start_restore(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        blob: &[u8],
        local: Option<IpAddr>,
        reply: T,
    ) -> Result<(), (T, CheckpointError)> {
        match self.prepare(engine, now, blob, local) {
            Ok((payload, conn, key, socket)) => {
                tracing::info!(flow = %key, checkpoint = %payload.id, "restore: waiting for the peer");
                self.pending.push(Pending {
                    id: payload.id,
                    created_unix_ms: payload.created_unix_ms,
                    conn,
                    key,
                    socket,
                    started: Instant::now(),
                    deadline: now + Duration::from_millis(self.cfg.restore_timeout_ms),
                    reply,
                });
                Ok(())
            }
            Err(e) => Err((reply, e)),
        }
    }

    fn prepare(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        blob: &[u8],
        local: Option<IpAddr>,
    ) -> Result<(Payload, String, FlowKey, Prepared), CheckpointError> {
        let key = Key::load(&self.cfg.key_file)?;
        let payload = blob::open(&key, blob)?;
        let id = payload.id;
        let age_ms = blob::unix_ms_now().saturating_sub(payload.created_unix_ms);
        if age_ms / 1000 > self.cfg.max_age_s {
            return Err(CheckpointError::Expired {
                id,
                age_s: age_ms / 1000,
                max_age_s: self.cfg.max_age_s,
            });
        }
        if self.restored.contains_key(&id) {
            return Err(CheckpointError::Replayed { id });
        }
        if self.pending.iter().any(|p| p.id == id) {
            return Err(CheckpointError::InProgress { id });
        }
        let record: FlowRecord = serde_json::from_slice(&payload.record)
            .map_err(|e| CheckpointError::Record(e.to_string()))?;
        let remote = record.peer;
        let local_ip = match local {
            Some(ip) => ip,
            None => crate::addrs::source_for(remote.ip())
                .ok_or(CheckpointError::NoRoute(remote.ip()))?,
        };
        let want = SocketAddr::new(local_ip, record.local.port());
        let socket = Prepared::new(&payload.socket, want, remote)?;
        let flow = FlowKey {
            local: socket.local(),
            remote,
        };
        let seq = SeqPoint {
            snd_una: payload.socket.snd_una,
            rcv_nxt: payload.socket.rcv_nxt(),
        };
        let conn = conn_hex(&record);
        // On error the socket is dropped here: closed in repair mode, nothing was sent.
        engine.restore_flow(now, record, flow, seq)?;
        Ok((payload, conn, flow, socket))
    }

    /// The earliest restore deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Finishes the restores the peer has answered, and gives up those past their deadline.
    pub fn poll(
        &mut self,
        engine: &mut Engine,
        now: Instant,
    ) -> Vec<(T, Result<Restored, CheckpointError>)> {
        let horizon = blob::unix_ms_now();
        self.restored.retain(|_, until| *until > horizon);
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let outcome = match engine.restore_state(&p.key) {
                RestoreState::Pending if now < p.deadline => {
                    i += 1;
                    continue;
                }
                RestoreState::Pending => Err(CheckpointError::Timeout {
                    id: p.id,
                    after_ms: self.cfg.restore_timeout_ms,
                }),
                RestoreState::Refused(reason) => Err(CheckpointError::Refused { id: p.id, reason }),
                RestoreState::Accepted => Ok(()),
            };
            let p = self.pending.swap_remove(i);
            let result = match outcome {
                Ok(()) => self.finish(p.socket, p.id, p.created_unix_ms, p.conn, p.key, p.started),
                Err(e) => Err(e), // dropping the socket closes it in repair mode: silent
            };
            engine.end_restore(&p.key);
            match &result {
                Ok((info, _)) => {
                    tracing::info!(flow = %p.key, checkpoint = %p.id, us = info.elapsed_us, "restored")
                }
                Err(e) => tracing::warn!(flow = %p.key, checkpoint = %p.id, "restore failed: {e}"),
            }
            done.push((p.reply, result));
        }
        done
    }

    fn finish(
        &mut self,
        socket: Prepared,
        id: CheckpointId,
        created_unix_ms: u64,
        conn: String,
        key: FlowKey,
        started: Instant,
    ) -> Result<Restored, CheckpointError> {
        let fd = socket.finish()?;
        let expires = created_unix_ms.saturating_add(self.cfg.max_age_s.saturating_mul(1000));
        self.restored.insert(id, expires);
        let info = RestoredInfo {
            checkpoint: id.to_string(),
            id: conn,
            local: rackctl::proto::endpoint(key.local),
            remote: rackctl::proto::endpoint(key.remote),
            elapsed_us: micros(started.elapsed()),
        };
        Ok((info, fd))
    }
}

fn conn_hex(record: &FlowRecord) -> String {
    format!("{:016x}", record.conn_id)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
