//! The daemon's event loop: the only place that owns the queue socket, the ruleset and the
//! engine. Everything else reaches the engine through messages, so the engine has one owner and
//! no locks.

use std::io;
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::control::{self, ControlCall};
use crate::engine::Engine;
use crate::inject::Injector;
use crate::packets::SynHandler;
use crate::queue::{Pump, QueueOptions, QueueSocket};
use crate::rules::nft_config;
use crate::service;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("configuration cannot be expressed as rules: {0}")]
    Rules(#[from] nft_rules::ConfigError),
    #[error("removing a stale table {table:?} left by an earlier run: {source}")]
    Stale {
        table: String,
        source: nft_rules::Error,
    },
    #[error("installing the nftables table: {0}")]
    Install(nft_rules::Error),
    #[error("binding NFQUEUE {queues:?}: {source} (is another rackd using these queues?)")]
    Queue { queues: Vec<u16>, source: io::Error },
    #[error("opening raw sockets for injection: {0}")]
    Inject(io::Error),
    #[error("control socket {path}: {source}")]
    Control {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("queue socket: {0}")]
    QueueIo(io::Error),
    #[error("signal handling: {0}")]
    Signal(io::Error),
}

/// Facts about the running daemon that do not change.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub started: Instant,
    pub queue_mode: nft_rules::QueueMode,
    pub pid: u32,
}

/// Runs until SIGTERM or SIGINT; removes the rules before returning.
pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    let nft = nft_config(&cfg)?;
    nft.validate()?;
    let queues: Vec<u16> = (cfg.queue.num..=cfg.queue.num + (cfg.queue.count - 1)).collect();
    // Bind the queue before the rules exist, so no packet meets rules without a reader.
    let sock = QueueSocket::open(&QueueOptions {
        queues: queues.clone(),
        max_len: cfg.queue.max_len,
        rcvbuf: cfg.queue.rcvbuf_bytes,
        fail_open: true,
    })
    .map_err(|source| DaemonError::Queue {
        queues: queues.clone(),
        source,
    })?;
    let injector = Injector::new(cfg.rules.mark).map_err(DaemonError::Inject)?;
    let (calls_tx, mut calls) = mpsc::channel::<ControlCall>(64);
    let listener = control::bind(&cfg.control).map_err(|source| DaemonError::Control {
        path: cfg.control.socket.clone(),
        source,
    })?;
    nft_rules::remove_stale(&nft.table).map_err(|source| DaemonError::Stale {
        table: nft.table.clone(),
        source,
    })?;
    let ruleset = nft_rules::Ruleset::install(&nft).map_err(DaemonError::Install)?;
    let info = DaemonInfo {
        started: Instant::now(),
        queue_mode: ruleset.mode(),
        pid: std::process::id(),
    };
    tracing::info!(
        queues = ?queues,
        mode = ?info.queue_mode,
        table = %nft.table,
        control = %cfg.control.socket.display(),
        "rackd ready"
    );
    if let Err(e) = service::notify("READY=1") {
        tracing::warn!("cannot notify the service manager: {e}");
    }

    let control_task = tokio::spawn(control::serve(listener, calls_tx));
    let result = event_loop(&info, sock, injector, &mut calls).await;
    control_task.abort();
    control::unbind(&cfg.control);
    let _ = service::notify("STOPPING=1");
    match ruleset.remove() {
        Ok(()) => tracing::info!("rules removed"),
        Err(e) => tracing::error!("removing the rules: {e}"),
    }
    result
}

async fn event_loop(
    info: &DaemonInfo,
    sock: QueueSocket,
    // Opened at start so a host without raw sockets fails early; suspension sends through it.
    _injector: Injector,
    calls: &mut mpsc::Receiver<ControlCall>,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    // SAFETY: the QueueSocket owns its descriptor and is moved into the AsyncFd, which keeps it
    // open and unreplaced until the AsyncFd is dropped.
    let sock = unsafe { AsyncFd::register(sock) }.map_err(|e| DaemonError::QueueIo(e.into()))?;
    let mut pump = Pump::new();
    let mut engine = Engine::new(random_seed());
    loop {
        let deadline = engine.poll_timeout();
        tokio::select! {
            ready = sock.readable() => {
                let mut guard = ready.map_err(DaemonError::QueueIo)?;
                let mut handler = SynHandler::new(&mut engine);
                pump.run_once(guard.get_inner(), &mut handler, Instant::now())
                    .map_err(DaemonError::QueueIo)?;
                guard.clear_ready();
            }
            () = sleep_until(deadline) => engine.handle_timeout(Instant::now()),
            Some(call) = calls.recv() => control::answer(call, info, &engine, &pump.stats),
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping");
                return Ok(());
            }
        }
        while let Some(action) = engine.poll_action() {
            tracing::debug!(?action, "engine action");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A seed for connection tokens that differs between runs and hosts.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // getrandom(2) cannot fail for 8 bytes once the pool is initialised; the fallback only
    // guards against ancient kernels.
    // SAFETY: `b` is valid for 8 writable bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        u64::from(std::process::id()) ^ Instant::now().elapsed().as_nanos() as u64
    }
}
