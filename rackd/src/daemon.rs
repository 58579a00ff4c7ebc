//! The daemon's event loop: the only place that owns the queue socket, the ruleset and the
//! engine. Everything else reaches the engine through messages, so the engine has one owner and
//! no locks.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rackctl::proto::{ErrorBody, ErrorCode, Request, Response};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::addrs::AddressEvents;
use crate::checkpoint::service::Checkpoints;
use crate::config::Config;
use crate::control::{self, ControlCall, Reply};
use crate::engine::{Action, Engine, EngineConfig, FlowKey};
use crate::inject::Injector;
use crate::packets::Handler;
use crate::queue::{Pump, QueueOptions, QueueSocket};
use crate::rules::nft_config;
use crate::service;
use crate::sockdiag::DestroyEvents;
use crate::sockets::SocketTable;

/// How often the kernel's socket table is read (closed connections, byte counters).
/// The state file is saved every tick; local addresses are read on every tick too, as a safety
/// net for lost address notifications.
const TICK: Duration = Duration::from_secs(1);
/// How long after an address notification the addresses are read: changes come in bursts (an
/// address deleted and its successor added), and a flow is best moved once, to the successor.
const ADDRESS_SETTLE: Duration = Duration::from_millis(20);
/// Sockets that end are reported by the kernel's destroy notifications; the whole table is
/// read only this often, as a safety net (a socket that never existed, notifications lost),
/// and for a status request: reading it is what a rackd with 10,000 connections spent its idle
/// CPU on.
const SOCKET_TABLE_TICKS: u32 = 5;

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
    #[error("daemon channel: binding UDP port {port}: {source} (is another rackd running here?)")]
    Channel { port: u16, source: io::Error },
    #[error("reading the kernel's socket table (sock_diag): {0}")]
    Sockets(io::Error),
    #[error("address change notifications (rtnetlink): {0}")]
    Addresses(io::Error),
}

/// Facts about the running daemon that do not change.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub started: Instant,
    pub queue_mode: nft_rules::QueueMode,
    pub pid: u32,
    pub checkpoint: crate::config::CheckpointConfig,
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
        // Connections to `peer.edp_ports` are rewritten packet by packet (see `edp_port`).
        segment_gso: !cfg.peer.edp_ports.is_empty(),
    })
    .map_err(|source| DaemonError::Queue {
        queues: queues.clone(),
        source,
    })?;
    let injector = Injector::new(cfg.rules.mark).map_err(DaemonError::Inject)?;
    let channel = bind_channel(cfg.peer.port).map_err(|source| DaemonError::Channel {
        port: cfg.peer.port,
        source,
    })?;
    let sockets = SocketTable::open().map_err(DaemonError::Sockets)?;
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
        checkpoint: cfg.checkpoint.clone(),
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
    let io = Io {
        ruleset: &ruleset,
        injector,
        channel,
        sockets,
        kept: crate::addrs::KeptAddresses::new(&nft.table),
        senders: std::collections::HashMap::new(),
        state: crate::persist::StateFile::beside(&cfg.control.socket),
        probes: crate::edp_probe::Prober::new(cfg.rules.mark),
    };
    let result = event_loop(&info, engine_config(&cfg), sock, io, &mut calls).await;
    control_task.abort();
    control::unbind(&cfg.control);
    let _ = service::notify("STOPPING=1");
    match ruleset.remove() {
        Ok(()) => tracing::info!("rules removed"),
        Err(e) => tracing::error!("removing the rules: {e}"),
    }
    result
}

/// Everything the engine's actions are carried out with.
struct Io<'a> {
    ruleset: &'a nft_rules::Ruleset,
    injector: Injector,
    channel: UdpSocket,
    sockets: SocketTable,
    /// Addresses rackd added to `lo` for sockets bound to them; removed when rackd stops.
    kept: crate::addrs::KeptAddresses,
    /// Datagram sockets bound to each local address rackd sends from.
    senders: std::collections::HashMap<std::net::IpAddr, std::net::UdpSocket>,
    state: crate::persist::StateFile,
    /// EDP probes of user-level servers under way.
    probes: crate::edp_probe::Prober,
}

async fn event_loop(
    info: &DaemonInfo,
    engine_cfg: EngineConfig,
    sock: QueueSocket,
    mut io: Io<'_>,
    calls: &mut mpsc::Receiver<ControlCall>,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    // A hang-up (closed terminal, `systemctl kill -s HUP`) stops rackd cleanly like SIGTERM:
    // dying of it would leave the table behind and count as a clean exit for systemd.
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    // SAFETY: the QueueSocket owns its descriptor and is moved into the AsyncFd, which keeps it
    // open and unreplaced until the AsyncFd is dropped.
    let sock = unsafe { AsyncFd::register(sock) }.map_err(|e| DaemonError::QueueIo(e.into()))?;
    let mut pump = Pump::new();
    let entropy = Box::new(edp::crypto::SystemEntropy::new());
    let mut engine = Engine::new(random_seed(), entropy, engine_cfg);
    adopt_saved(&mut engine, &mut io);
    perform(&mut engine, &mut io);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let destroyed =
        DestroyEvents::subscribe().map_err(|e| DaemonError::Sockets(io::Error::other(e)))?;
    // SAFETY: DestroyEvents owns its descriptor and is moved into the AsyncFd, which keeps it
    // open and unreplaced until the AsyncFd is dropped.
    let mut destroyed =
        unsafe { AsyncFd::register(destroyed) }.map_err(|e| DaemonError::Sockets(e.into()))?;
    let address_events = AddressEvents::subscribe().map_err(DaemonError::Addresses)?;
    // SAFETY: AddressEvents owns its descriptor and is moved into the AsyncFd, which keeps it
    // open and unreplaced until the AsyncFd is dropped.
    let address_events = unsafe { AsyncFd::register(address_events) }
        .map_err(|e| DaemonError::Addresses(e.into()))?;
    // Addresses are read once a burst of changes is over (a delete and an add come together).
    let mut check_addresses_at: Option<Instant> = None;
    let mut gone = Vec::new();
    let mut datagram = vec![0u8; 2048];
    let mut checkpoints = Checkpoints::new(info.checkpoint.clone());
    loop {
        let deadline = engine.poll_timeout();
        tokio::select! {
            ready = sock.readable() => {
                let mut guard = ready.map_err(DaemonError::QueueIo)?;
                let mut handler = Handler::new(&mut engine);
                let (_, drained) = pump
                    .run_once(guard.get_inner(), &mut handler, Instant::now())
                    .map_err(DaemonError::QueueIo)?;
                // Not drained: stay ready, so the next round comes after the other branches.
                if drained {
                    guard.clear_ready();
                }
            }
            got = io.channel.recv_from(&mut datagram) => match got {
                Ok((n, from)) => {
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    engine.on_datagram(Instant::now(), from, &datagram[..n]);
                }
                Err(e) => tracing::debug!("daemon channel receive: {e}"),
            },
            () = sleep_until(deadline) => engine.handle_timeout(Instant::now()),
            () = sleep_until(checkpoints.poll_timeout()) => {}
            ready = destroyed.readable_mut() => {
                let mut guard = ready.map_err(DaemonError::Sockets)?;
                match guard.get_inner_mut().drain(&mut gone) {
                    Ok(drained) => {
                        let now = Instant::now();
                        for s in gone.drain(..) {
                            let key = FlowKey { local: s.local, remote: s.remote };
                            // A socket of the tuple may live on: a child the listener could not
                            // queue is destroyed, and the handshake completes with the next one.
                            if engine.flow(&key).is_some()
                                && matches!(io.sockets.lookup(&key), Ok(None))
                            {
                                engine.on_socket_gone(now, &key);
                            }
                        }
                        if drained.overrun {
                            tracing::warn!("socket destroy notifications lost: reading the table");
                            read_socket_table(&mut engine, &mut io);
                        }
                    }
                    Err(e) => tracing::warn!("socket destroy notifications: {e}"),
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                ticks = ticks.wrapping_add(1);
                if ticks % SOCKET_TABLE_TICKS == 0 {
                    read_socket_table(&mut engine, &mut io);
                }
                check_addresses(&mut engine, &io);
                if let Err(e) = io.state.save(&engine) {
                    tracing::warn!("{e}");
                }
            }
            ready = address_events.readable() => {
                let mut guard = ready.map_err(DaemonError::Addresses)?;
                match guard.get_inner().drain() {
                    Ok(true) => {
                        check_addresses_at.get_or_insert(Instant::now() + ADDRESS_SETTLE);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("address notifications: {e}"),
                }
                guard.clear_ready();
            }
            () = sleep_until(check_addresses_at) => {
                check_addresses_at = None;
                check_addresses(&mut engine, &io);
            }
            Some((key, enhanced)) = io.probes.next() => {
                engine.on_edp_probe(Instant::now(), key, enhanced);
            }
            Some(call) = calls.recv() => {
                answer_call(call, info, &mut engine, &pump.stats, &mut checkpoints, &mut io);
            }
            _ = term.recv() => break tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => break tracing::info!("SIGINT: stopping"),
            _ = hup.recv() => break tracing::info!("SIGHUP: stopping"),
        }
        finish_restores(&mut checkpoints, &mut engine);
        perform(&mut engine, &mut io);
    }
    abort_rewritten(&engine, &mut io);
    // The next run takes the managed connections over.
    if let Err(e) = io.state.save(&engine) {
        tracing::error!("{e}");
    }
    Ok(())
}

/// Connections whose packets rackd rewrites (`peer.edp_ports`) cannot outlive it: once its
/// rules are gone their packets would pass unrewritten and shift the stream. Their sockets are
/// aborted instead, so the program sees a reset and the peer is reset on its next packet.
fn abort_rewritten(engine: &Engine, io: &mut Io<'_>) {
    for key in engine.edp_port_flows() {
        match io.sockets.destroy(&key) {
            Ok(true) => tracing::warn!(flow = %key, "stopping: aborted a translated connection"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(flow = %key, "stopping: cannot abort a translated connection: {e}")
            }
        }
    }
}

fn check_addresses(engine: &mut Engine, io: &Io<'_>) {
    match crate::addrs::local_addresses() {
        Ok(present) => engine.on_local_addresses(
            Instant::now(),
            |a| present.contains(&a) && !io.kept.contains(&a),
            crate::addrs::source_for,
        ),
        Err(e) => tracing::warn!("listing local addresses: {e}"),
    }
}

fn read_socket_table(engine: &mut Engine, io: &mut Io<'_>) {
    match io.sockets.snapshot() {
        Ok(table) => engine.on_socket_table(Instant::now(), |k| table.get(k).copied()),
        Err(e) => tracing::warn!("reading the socket table: {e}"),
    }
}

/// Takes over the managed connections a previous run saved whose sockets still exist.
fn adopt_saved(engine: &mut Engine, io: &mut Io<'_>) {
    let saved = match io.state.load() {
        Ok(saved) => saved,
        Err(e) => return tracing::warn!("not taking over connections: {e}"),
    };
    let (mut adopted, mut gone) = (0, 0);
    for flow in &saved {
        match io.sockets.lookup(&flow.key()) {
            Ok(Some(_)) => match engine.adopt(Instant::now(), flow) {
                Ok(()) => adopted += 1,
                Err(e) => tracing::warn!(flow = %flow.key(), "not taken over: {e}"),
            },
            Ok(None) => gone += 1,
            Err(e) => tracing::warn!(flow = %flow.key(), "socket lookup: {e}"),
        }
    }
    if !saved.is_empty() {
        tracing::info!(
            adopted,
            gone,
            "took over the connections of the previous run"
        );
    }
}

/// Answers a control call. Checkpoint and restore need the I/O layer; the rest only the engine.
fn answer_call(
    call: ControlCall,
    info: &DaemonInfo,
    engine: &mut Engine,
    stats: &crate::queue::PumpStats,
    checkpoints: &mut Checkpoints<oneshot::Sender<Reply>>,
    io: &mut Io<'_>,
) {
    let now = Instant::now();
    match &call.request {
        Request::Checkpoint { pid, fd } => {
            let reply = match checkpoints.checkpoint(engine, now, *pid, *fd, |e| perform(e, io)) {
                Ok((info, blob)) => Reply {
                    response: Response::checkpoint(info),
                    attachment: blob,
                    fd: None,
                },
                Err(e) => Response::error(e.body()).into(),
            };
            let _ = call.reply.send(reply);
        }
        Request::Restore { local, .. } => {
            let local = match local.as_deref().map(str::parse::<IpAddr>).transpose() {
                Ok(local) => local,
                Err(_) => {
                    let message = format!("local {local:?} is not an IP address");
                    let refused = Response::error(ErrorBody::new(ErrorCode::BadRequest, message));
                    let _ = call.reply.send(refused.into());
                    return;
                }
            };
            let started =
                checkpoints.start_restore(engine, now, &call.attachment, local, call.reply);
            if let Err((reply, e)) = started {
                let _ = reply.send(Response::error(e.body()).into());
            }
        }
        Request::Status => {
            // Fresh byte counts (the table is otherwise read only every few seconds).
            read_socket_table(engine, io);
            control::answer(call, now, info, engine, stats)
        }
        _ => control::answer(call, now, info, engine, stats),
    }
}

/// Answers the restores that are over: the socket goes to the client with the answer.
fn finish_restores(checkpoints: &mut Checkpoints<oneshot::Sender<Reply>>, engine: &mut Engine) {
    for (reply, result) in checkpoints.poll(engine, Instant::now()) {
        let answer = match result {
            Ok((info, fd)) => Reply {
                response: Response::restored(info),
                attachment: Vec::new(),
                fd: Some(fd),
            },
            Err(e) => Response::error(e.body()).into(),
        };
        // A client that left takes nothing: the socket is closed with the reply.
        let _ = reply.send(answer);
    }
}

/// Carries out the engine's actions (some feed results straight back).
fn perform(engine: &mut Engine, io: &mut Io<'_>) {
    while let Some(action) = engine.poll_action() {
        match action {
            Action::Send { to, from, datagram } => {
                if let Err(e) = send_from(io, from, to, &datagram) {
                    // Datagrams are best effort: heartbeats and Init are repeated anyway.
                    tracing::debug!(%to, "daemon channel send: {e}");
                }
            }
            Action::Queue { key, wire, on } => queue(io.ruleset, key, wire, on, false),
            Action::QueueStrictly { key, on } => queue(io.ruleset, key, key, on, true),
            Action::Translate {
                key,
                old,
                wire,
                queued,
            } => translate(io.ruleset, key, old, wire, queued),
            Action::KeepLocal(addr) => match io.kept.keep(addr) {
                Ok(()) => {
                    tracing::info!(%addr, "keeping the departed address on lo for its sockets")
                }
                Err(e) => tracing::warn!(%addr, "cannot keep the departed address: {e}"),
            },
            Action::ReadSocket { key } => {
                let counters = match io.sockets.lookup(&key) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(flow = %key, "socket lookup: {e}");
                        continue;
                    }
                };
                engine.on_socket(Instant::now(), key, counters);
            }
            Action::Inject(packet) => {
                if let Err(e) = io.injector.send(&packet) {
                    tracing::warn!("injecting a packet: {e}");
                }
            }
            Action::Released { key } => tracing::debug!(flow = %key, "plain TCP"),
            Action::ProbeEdp { key } => io.probes.start(key),
        }
    }
}

/// Puts both directions of a flow in (or out of) the queue set: outgoing packets are looked up
/// after translation (as the wire sees them), incoming ones after translation back.
fn queue(ruleset: &nft_rules::Ruleset, key: FlowKey, wire: FlowKey, on: bool, strict: bool) {
    let keys = [
        nft_rules::FlowKey::new(wire.local, wire.remote),
        nft_rules::FlowKey::new(key.remote, key.local),
    ];
    let result = match (on, strict) {
        (true, false) => ruleset.queue_flows(&keys),
        (false, false) => ruleset.unqueue_flows(&keys),
        (true, true) => ruleset.queue_flows_strictly(&keys),
        (false, true) => ruleset.unqueue_flows_strictly(&keys),
    };
    if let Err(e) = result {
        tracing::warn!(flow = %key, on, strict, "changing the queue set: {e}");
    }
}

/// Replaces a flow's in-kernel translations: the socket's view `key` on the wire as `wire`.
fn translate(
    ruleset: &nft_rules::Ruleset,
    key: FlowKey,
    old: FlowKey,
    wire: FlowKey,
    queued: bool,
) {
    use nft_rules::{Direction, FlowKey as K, Translation};
    if old != key {
        let stale = [
            (Direction::Out, K::new(key.local, key.remote)),
            (Direction::In, K::new(old.remote, old.local)),
        ];
        if let Err(e) = ruleset.remove_translations(&stale) {
            tracing::debug!(flow = %key, "removing old translations: {e}");
        }
    }
    if wire != key {
        let entries = [
            (
                Direction::Out,
                K::new(key.local, key.remote),
                Translation {
                    src: wire.local,
                    dst: wire.remote,
                },
            ),
            (
                Direction::In,
                K::new(wire.remote, wire.local),
                Translation {
                    src: key.remote,
                    dst: key.local,
                },
            ),
        ];
        if let Err(e) = ruleset.add_translations(&entries) {
            tracing::warn!(flow = %key, "installing translations: {e}");
        }
    }
    if queued {
        // The outgoing queue entry follows the wire view.
        let _ = ruleset.unqueue_flows(&[K::new(old.local, old.remote)]);
        if let Err(e) = ruleset.queue_flows(&[K::new(wire.local, wire.remote)]) {
            tracing::warn!(flow = %key, "re-queueing after translation: {e}");
        }
    }
}

fn engine_config(cfg: &Config) -> EngineConfig {
    EngineConfig {
        heartbeat_interval: cfg.monitor.heartbeat_interval(),
        detect_after: cfg.monitor.detect_after(),
        reconnect_window: Duration::from_secs(cfg.reconnect.window_s),
        peer_port: cfg.peer.port,
        fallback: cfg.peer.fallback,
        // Validated when the configuration was read.
        edp_servers: cfg.peer.edp_server_list().unwrap_or_default(),
        edp_ports: cfg.peer.edp_ports.clone(),
        beat_base: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
    }
}

/// The daemon channel: one UDP socket for both families (IPv4 peers as mapped addresses).
fn bind_channel(port: u16) -> io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))
        .or_else(|_| std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))?;
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}

/// Sends a datagram from the given local address: through a socket bound to it (made on first
/// use), so the kernel's own source choice never announces an address rackd has not moved to.
/// An address that is gone fails to bind, and the datagram is not sent.
fn send_from(
    io: &mut Io<'_>,
    from: std::net::IpAddr,
    to: SocketAddr,
    datagram: &[u8],
) -> io::Result<()> {
    if let std::collections::hash_map::Entry::Vacant(slot) = io.senders.entry(from) {
        let s = std::net::UdpSocket::bind(SocketAddr::new(from, 0))?;
        s.set_nonblocking(true)?;
        slot.insert(s);
    }
    let sent = io.senders[&from].send_to(datagram, to);
    if sent.is_err() {
        io.senders.remove(&from); // rebuilt next time, in case the address came and went
    }
    sent.map(drop)
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
