//! EDP probes of user-level servers (`peer.edp_servers`), run as tasks beside the event loop.
//!
//! A probe is EDP's first connection: connect, half-close at once, and read. An enhanced server
//! answers with exactly the 1024-byte announcement and closes; anything else (nothing, other
//! bytes, a refusal, a timeout) means a plain server. The socket carries rackd's mark, so rackd's
//! own rules never queue it, and leaves from the address the client's connection uses.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use edp::edp::{ProbeTiming, ANNOUNCEMENT, ANNOUNCEMENT_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;

use crate::engine::FlowKey;

/// Limit for the probe's connect (a server that drops SYNs delays the client this long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts probes and collects their outcomes.
#[derive(Debug)]
pub struct Prober {
    mark: u32,
    tx: mpsc::UnboundedSender<(FlowKey, bool)>,
    rx: mpsc::UnboundedReceiver<(FlowKey, bool)>,
}

impl Prober {
    pub fn new(mark: u32) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { mark, tx, rx }
    }

    /// Probes the server of `key` from its local address; the outcome comes from [`Prober::next`].
    pub fn start(&self, key: FlowKey) {
        let (tx, mark) = (self.tx.clone(), self.mark);
        tokio::spawn(async move {
            let started = Instant::now();
            let enhanced = match probe(key, mark).await {
                Ok(enhanced) => enhanced,
                Err(e) => {
                    tracing::debug!(flow = %key, "EDP probe: {e}");
                    false
                }
            };
            tracing::debug!(flow = %key, enhanced, took = ?started.elapsed(), "EDP probe");
            let _ = tx.send((key, enhanced));
        });
    }

    /// The next finished probe: the flow, and whether its server is an EDP server.
    pub async fn next(&mut self) -> Option<(FlowKey, bool)> {
        self.rx.recv().await
    }
}

async fn probe(key: FlowKey, mark: u32) -> io::Result<bool> {
    let socket = match key.remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let mark = mark as libc::c_int;
    crate::sys::setsockopt(socket.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, &mark)?;
    socket.bind(SocketAddr::new(key.local.ip(), 0))?;
    let started = Instant::now();
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(key.remote))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let deadline = tokio::time::Instant::now() + ProbeTiming::default().timeout(started.elapsed());
    stream.shutdown().await?;
    let mut got = Vec::with_capacity(ANNOUNCEMENT_LEN);
    let mut buf = [0u8; 2048];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => return Ok(false),
        };
        if n == 0 {
            return Ok(got[..] == ANNOUNCEMENT[..]);
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > ANNOUNCEMENT_LEN || got[..] != ANNOUNCEMENT[..got.len()] {
            return Ok(false);
        }
    }
}
