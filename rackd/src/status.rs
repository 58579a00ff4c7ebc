//! The status snapshot the control socket sends: built from the engine on the event loop.

use std::collections::BTreeMap;
use std::time::Instant;

use rackctl::proto::{ConnState, ConnectionStatus, DaemonStatus, Status};

use crate::daemon::DaemonInfo;
use crate::engine::{Engine, Flow, State};
use crate::queue::PumpStats;

/// What status shows as `peer` for a connection to a user-level EDP program (no rackd there).
pub const USER_PEER: &str = "user-level EDP";

pub fn snapshot(info: &DaemonInfo, engine: &Engine, stats: &PumpStats) -> Status {
    let now = Instant::now();
    let counts = engine.state_counts();
    let states: BTreeMap<String, u64> = State::NAMES
        .iter()
        .zip(counts)
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    let mut connections: Vec<ConnectionStatus> = engine
        .flows()
        .map(|f| connection(f, engine.last_heartbeat(f), now))
        .collect();
    connections.sort_by(|a, b| a.age_s.cmp(&b.age_s).then_with(|| a.id.cmp(&b.id)));
    Status {
        daemon: DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: info.pid,
            uptime_s: now.duration_since(info.started).as_secs(),
            queue_mode: match info.queue_mode {
                nft_rules::QueueMode::Native => "native",
                nft_rules::QueueMode::Compat => "compat",
            }
            .into(),
            packets_queued: stats.packets,
            packets_dropped: stats.dropped_by_rackd + stats.overruns,
            states,
        },
        connections,
    }
}

fn connection(f: &Flow, last_heartbeat: Option<Instant>, now: Instant) -> ConnectionStatus {
    let state = match f.state {
        State::Negotiating { .. } => ConnState::Negotiating,
        State::Connected => ConnState::Connected,
        State::Suspended { .. } => ConnState::Suspended,
        State::Reconnecting { .. } => ConnState::Reconnecting,
        State::Released => ConnState::Released,
        State::Closed { .. } => ConnState::Closed,
    };
    let suspended_for_s = match f.state {
        State::Suspended { since } | State::Reconnecting { since } => {
            now.duration_since(since).as_secs()
        }
        _ => 0,
    };
    ConnectionStatus {
        id: f.id_hex(),
        state,
        local: f.wire.local.to_string(),
        remote: f.wire.remote.to_string(),
        original_local: f.key.local.to_string(),
        original_remote: f.key.remote.to_string(),
        age_s: now.duration_since(f.created).as_secs(),
        suspended_for_s,
        reconnects: f.reconnects,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        peer: f.user_peer.then(|| USER_PEER.to_owned()),
        last_heartbeat_ms_ago: last_heartbeat.map(|t| now.duration_since(t).as_millis() as u64),
    }
}
