//! A tokio driver for the EDP state machines, so that a user-level program (no root, no rackd) can
//! be an enhanced client ([`connect`]) or server ([`EdpListener`]).
//!
//! The driver only moves bytes and timers; every decision is made by [`EdpClient`] /
//! [`ServerConn`].

use crate::crypto::SystemEntropy;
use crate::edp::{
    Channel, ClientAction, ClientConfig, ClientEvent, ClientOutcome, EdpClient, ServerAction,
    ServerConfig, ServerConn, ServerEvent, ServerOutcome,
};
use crate::init::Session;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::edp::Fallback;

/// A TCP stream that first yields bytes already read during detection.
#[derive(Debug)]
pub struct EdpStream {
    inner: TcpStream,
    prefix: Vec<u8>,
    pos: usize,
}

impl EdpStream {
    pub fn new(inner: TcpStream, prefix: Vec<u8>) -> Self {
        EdpStream {
            inner,
            prefix,
            pos: 0,
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// The socket and the replay bytes not yet read.
    pub fn into_parts(mut self) -> (TcpStream, Vec<u8>) {
        self.prefix.drain(..self.pos);
        (self.inner, self.prefix)
    }
}

impl AsyncRead for EdpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for EdpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What [`connect`] produced.
#[derive(Debug)]
pub enum Connected {
    /// The server runs EDP; the stream is the initialised main connection.
    Enhanced(Session, EdpStream),
    /// A fresh plain connection, and why EDP was not used.
    Plain(TcpStream, Fallback),
}

const READ_CHUNK: usize = 4096;

fn tokio_instant(t: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t)
}

/// Runs EDP against `addr`; falls back to a plain connection if the server is not enhanced.
/// Errors are those of the plain connection (e.g. connection refused).
pub async fn connect(addr: SocketAddr, config: ClientConfig) -> io::Result<Connected> {
    let mut machine = EdpClient::new(Instant::now(), config, &mut SystemEntropy::new())
        .map_err(io::Error::other)?;
    let mut streams: [Option<TcpStream>; 2] = [None, None];
    let slot = |ch: Channel| match ch {
        Channel::Probe => 0,
        Channel::Main => 1,
    };
    let mut buf = vec![0u8; READ_CHUNK];
    while !machine.is_done() {
        while let Some(action) = machine.poll_action() {
            match action {
                ClientAction::Connect(ch) => {
                    let deadline = machine.poll_timeout().unwrap_or_else(Instant::now);
                    let attempt =
                        tokio::time::timeout_at(tokio_instant(deadline), TcpStream::connect(addr));
                    match attempt.await {
                        Ok(Ok(stream)) => {
                            streams[slot(ch)] = Some(stream);
                            machine.handle(Instant::now(), ClientEvent::Connected(ch));
                        }
                        Ok(Err(_)) => {
                            machine.handle(Instant::now(), ClientEvent::ConnectFailed(ch))
                        }
                        Err(_) => machine.handle_timeout(Instant::now()),
                    }
                }
                ClientAction::ShutdownWrite(ch) | ClientAction::Send(ch, _)
                    if streams[slot(ch)].is_none() => {}
                ClientAction::ShutdownWrite(ch) => {
                    let stream = streams[slot(ch)].as_mut().expect("checked above");
                    if stream.shutdown().await.is_err() {
                        machine.handle(Instant::now(), ClientEvent::Eof(ch));
                    }
                }
                ClientAction::Send(ch, bytes) => {
                    let stream = streams[slot(ch)].as_mut().expect("checked above");
                    if stream.write_all(&bytes).await.is_err() {
                        machine.handle(Instant::now(), ClientEvent::Eof(ch));
                    }
                }
                ClientAction::Close(ch) => streams[slot(ch)] = None,
            }
        }
        if machine.is_done() {
            break;
        }
        let ch = if streams[1].is_some() {
            Channel::Main
        } else {
            Channel::Probe
        };
        let deadline = machine.poll_timeout().unwrap_or_else(Instant::now);
        let Some(stream) = streams[slot(ch)].as_mut() else {
            // Nothing to read from; only the timer can move the machine on.
            tokio::time::sleep_until(tokio_instant(deadline)).await;
            machine.handle_timeout(Instant::now());
            continue;
        };
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => machine.handle(Instant::now(), ClientEvent::Eof(ch)),
                Ok(n) => machine.handle(Instant::now(), ClientEvent::Data(ch, &buf[..n])),
            },
            () = tokio::time::sleep_until(tokio_instant(deadline)) => {
                machine.handle_timeout(Instant::now());
            }
        }
    }
    // Drain the closing actions (e.g. Close(Probe)).
    while let Some(action) = machine.poll_action() {
        if let ClientAction::Close(ch) = action {
            streams[slot(ch)] = None;
        }
    }
    match machine.outcome().expect("done machines have an outcome") {
        ClientOutcome::Enhanced { session, leftover } => {
            let main = streams[1]
                .take()
                .expect("enhanced outcome keeps the main connection");
            Ok(Connected::Enhanced(session, EdpStream::new(main, leftover)))
        }
        ClientOutcome::Plain(reason) => {
            Ok(Connected::Plain(TcpStream::connect(addr).await?, reason))
        }
    }
}

/// A connection the application should serve.
#[derive(Debug)]
pub enum Accepted {
    Enhanced(Session, EdpStream),
    Plain(EdpStream),
}

/// Counters of an [`EdpListener`], for tests and status output.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub probes_answered: AtomicU64,
    pub enhanced: AtomicU64,
    pub plain: AtomicU64,
    pub failed: AtomicU64,
}

/// Classifies one accepted connection: answers probes (then `None`), initialises announced clients,
/// and hands anything else back untouched.
pub async fn classify(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: ServerConfig,
    stats: &ListenerStats,
) -> io::Result<Option<Accepted>> {
    let mut machine = ServerConn::new(Instant::now(), config, peer.ip().to_string());
    let mut rng = SystemEntropy::new();
    let mut buf = vec![0u8; READ_CHUNK];
    while !machine.is_done() {
        let deadline = machine.poll_timeout().unwrap_or_else(Instant::now);
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) => machine.handle(Instant::now(), ServerEvent::Eof, &mut rng),
                Ok(n) => machine.handle(Instant::now(), ServerEvent::Data(&buf[..n]), &mut rng),
                Err(e) => return Err(e),
            },
            () = tokio::time::sleep_until(tokio_instant(deadline)) => {
                machine.handle_timeout(Instant::now());
            }
        }
    }
    while let Some(action) = machine.poll_action() {
        match action {
            ServerAction::Send(bytes) => stream.write_all(&bytes).await?,
            ServerAction::Close => {
                stream.shutdown().await?;
                return count(stats, machine.outcome(), None);
            }
        }
    }
    count(stats, machine.outcome(), Some(stream))
}

fn count(
    stats: &ListenerStats,
    outcome: Option<ServerOutcome>,
    stream: Option<TcpStream>,
) -> io::Result<Option<Accepted>> {
    let bump = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
    Ok(match (outcome, stream) {
        (Some(ServerOutcome::Enhanced { session, leftover }), Some(s)) => {
            bump(&stats.enhanced);
            Some(Accepted::Enhanced(session, EdpStream::new(s, leftover)))
        }
        (Some(ServerOutcome::Plain { prefix, .. }), Some(s)) => {
            bump(&stats.plain);
            Some(Accepted::Plain(EdpStream::new(s, prefix)))
        }
        (Some(ServerOutcome::ProbeAnswered), _) => {
            bump(&stats.probes_answered);
            None
        }
        _ => {
            bump(&stats.failed);
            None
        }
    })
}

/// A TCP listener that speaks EDP: probes are answered in the background, enhanced clients are
/// initialised, and [`accept`](Self::accept) returns every connection the application must serve.
#[derive(Debug)]
pub struct EdpListener {
    local_addr: SocketAddr,
    incoming: mpsc::Receiver<io::Result<(Accepted, SocketAddr)>>,
    stats: Arc<ListenerStats>,
    task: JoinHandle<()>,
}

impl EdpListener {
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Self> {
        Self::from_listener(TcpListener::bind(addr).await?, config)
    }

    /// Wraps a bound listener; classification runs on spawned tasks, so one slow client does not
    /// hold up others.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, incoming) = mpsc::channel(64);
        let stats = Arc::new(ListenerStats::default());
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let (tx, config, stats) = (tx.clone(), config.clone(), task_stats.clone());
                tokio::spawn(async move {
                    // A connection that breaks during detection concerns nobody else.
                    match classify(stream, peer, config, &stats).await {
                        Ok(Some(accepted)) => {
                            let _ = tx.send(Ok((accepted, peer))).await;
                        }
                        Ok(None) => {}
                        Err(_) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Ok(EdpListener {
            local_addr,
            incoming,
            stats,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// The next connection for the application (enhanced or plain).
    pub async fn accept(&mut self) -> io::Result<(Accepted, SocketAddr)> {
        match self.incoming.recv().await {
            Some(item) => item,
            None => Err(io::Error::other("EDP accept task ended")),
        }
    }
}

impl Drop for EdpListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
