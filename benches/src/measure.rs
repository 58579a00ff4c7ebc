//! The measurements: each runs traffic programs in one scenario and records samples.

use std::time::{Duration, Instant};

use rackctl::proto::{ConnState, ConnectionStatus};

use crate::daemon::{is_failure_noticed, Daemon};
use crate::metrics::Mode;
use crate::peer::client::echo_times;
use crate::peer::{
    monotonic_ns, BulkResult, ConnectResult, Direction, HoldResult, PingResult, LOCAL_LINE,
};
use crate::plan::Plan;
use crate::report::cost;
use crate::samples::Samples;
use crate::scenario::{parse_json_line, poll, Hooks, Scenario, SERVICE_PORT};
use crate::{Error, Result};

/// Time limit of one traffic program run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the probe may take to see its first echo.
const FIRST_ECHO: Duration = Duration::from_secs(5);
/// How long data may take to flow again after the path is restored before the run fails.
const FLOW_LIMIT: Duration = Duration::from_secs(30);
/// How long to keep watching for the daemon to show a connection connected again after data
/// flows.
const RESUME_GRACE_NS: u64 = 2_000_000_000;
/// How long a managed connection may take to reach `connected` in the daemon's status.
const CONNECTED_LIMIT: Duration = Duration::from_secs(3);
/// Idle connections: ports of the servers holding them, one per repetition.
const IDLE_PORT: u16 = 6000;
/// Interval over which the daemons' CPU use is checked before memory is read.
const CALM_INTERVAL: Duration = Duration::from_millis(500);
/// Share of a core below which the daemons count as done with the new idle connections.
const CALM_SHARE: f64 = 0.2;
/// How long the daemons may stay busy after the idle connections opened.
const CALM_LIMIT: Duration = Duration::from_secs(60);

fn check(mode: Mode, measurement: &'static str, detail: String) -> Error {
    Error::Check {
        mode: mode.as_str(),
        measurement,
        detail,
    }
}

fn args(parts: &[&dyn ToString]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// Bulk throughput with `flows` connections in `direction`; the daemons' CPU time and the
/// bytes moved are added to the scenario's [`BulkAccount`](crate::scenario::BulkAccount).
pub fn bulk(
    sc: &mut Scenario,
    plan: &Plan,
    rep: u32,
    (flows, direction): (u32, Direction),
    samples: &mut Samples,
) -> Result<()> {
    let mode = sc.mode();
    let addr = sc.server_addr(SERVICE_PORT);
    let cpu_before = sc.daemon_cpu_seconds()?;
    let run = args(&[
        &"bulk",
        &addr,
        &"--flows",
        &flows,
        &"--bytes",
        &plan.bulk_bytes,
        &"--direction",
        &direction.as_str(),
    ]);
    let result: BulkResult = sc.run_client(&run, RUN_TIMEOUT)?;
    if result.bytes != plan.bulk_bytes || result.flows != flows || result.elapsed_ns == 0 {
        return Err(check(
            mode,
            "bulk",
            format!(
                "asked for {} bytes over {flows} flows, got {result:?}",
                plan.bulk_bytes
            ),
        ));
    }
    let cpu = sc.daemon_cpu_seconds()? - cpu_before;
    sc.bulk_account.add(cpu, result.bytes);
    // Bits per nanosecond are Gbit/s.
    let gbps = result.bytes as f64 * 8.0 / result.elapsed_ns as f64;
    samples.add(&format!("bulk_{flows}_{}", direction.as_str()), mode, gbps);
    samples.raw(mode, "bulk", rep, &result);
    Ok(())
}

/// The daemons' CPU per GB over the bulk runs since the last call, and their RSS.
pub fn daemon_after_bulk(sc: &mut Scenario, rep: u32, samples: &mut Samples) -> Result<()> {
    let mode = sc.mode();
    let account = std::mem::take(&mut sc.bulk_account);
    if !mode.has_daemon() || account.bytes == 0 {
        return Ok(());
    }
    samples.add(
        "cpu_per_gb",
        mode,
        account.cpu_seconds * 1000.0 / (account.bytes as f64 / 1e9),
    );
    let rss = rss_of(sc.daemons())?;
    let largest = rss.iter().copied().max().unwrap_or(0);
    samples.add("daemon_rss", mode, largest as f64 / 1024.0);
    samples.raw(
        mode,
        "daemon_after_bulk",
        rep,
        serde_json::json!({
            "cpu_seconds": account.cpu_seconds,
            "bytes": account.bytes,
            "rss_bytes": rss,
        }),
    );
    Ok(())
}

/// 1-byte request/response latency on one connection.
pub fn pingpong(sc: &Scenario, plan: &Plan, rep: u32, samples: &mut Samples) -> Result<()> {
    let mode = sc.mode();
    let addr = sc.server_addr(SERVICE_PORT);
    let run = args(&[&"pingpong", &addr, &"--count", &plan.round_trips]);
    let result: PingResult = sc.run_client(&run, RUN_TIMEOUT)?;
    if result.round_trips != plan.round_trips || result.p50_ns == 0 {
        return Err(check(
            mode,
            "ping-pong",
            format!("implausible result {result:?}"),
        ));
    }
    samples.add("rr_p50", mode, result.p50_ns as f64 / 1e3);
    samples.add("rr_p99", mode, result.p99_ns as f64 / 1e3);
    samples.raw(mode, "pingpong", rep, &result);
    Ok(())
}

/// One round of round-trip runs in a table-only scenario: with rackd's table, with empty
/// chains at the same hooks, and with no table (the order rotates with `rep`); rackd's table is
/// installed again at the end. Records each arm's median round trip minus the bare one.
pub fn table_cost(sc: &Scenario, plan: &Plan, rep: u32, samples: &mut Samples) -> Result<()> {
    if sc.mode() != Mode::TableOnly {
        return Ok(());
    }
    let addr = sc.server_addr(SERVICE_PORT);
    let run = args(&[&"pingpong", &addr, &"--count", &plan.cost_round_trips]);
    let mut order = Hooks::ALL;
    order.rotate_left(rep as usize % Hooks::ALL.len());
    let mut state = Hooks::RackdTable;
    let mut median_rt = [0.0; 3];
    for arm in order {
        sc.set_hooks(state, arm)?;
        state = arm;
        let result: PingResult = sc.run_client(&run, RUN_TIMEOUT)?;
        if result.round_trips != plan.cost_round_trips || result.p50_ns == 0 {
            return Err(check(
                sc.mode(),
                "table cost",
                format!("{}: implausible result {result:?}", arm.as_str()),
            ));
        }
        median_rt[arm as usize] = result.p50_ns as f64;
    }
    sc.set_hooks(state, Hooks::RackdTable)?;
    let at = |arm: Hooks| median_rt[arm as usize];
    let bare = at(Hooks::None);
    samples.add(
        cost::DELTA_KEY,
        Mode::TableOnly,
        at(Hooks::RackdTable) - bare,
    );
    samples.add(
        cost::HOOKS_KEY,
        Mode::TableOnly,
        at(Hooks::EmptyChains) - bare,
    );
    samples.add(cost::BASE_KEY, Mode::TableOnly, bare);
    samples.raw(
        Mode::TableOnly,
        "table_cost",
        rep,
        serde_json::json!({
            "order": order.map(Hooks::as_str),
            "p50_ns": Hooks::ALL.map(|a| (a.as_str(), at(a))),
        }),
    );
    Ok(())
}

/// Connection setup time and sequential connection rate.
pub fn connections(sc: &Scenario, plan: &Plan, rep: u32, samples: &mut Samples) -> Result<()> {
    let mode = sc.mode();
    let addr = sc.server_addr(SERVICE_PORT);
    let run = args(&[&"connect", &addr, &"--count", &plan.connections]);
    let result: ConnectResult = sc.run_client(&run, RUN_TIMEOUT)?;
    if result.connections != plan.connections || result.elapsed_ns == 0 {
        return Err(check(
            mode,
            "connections",
            format!("implausible result {result:?}"),
        ));
    }
    samples.add("connect_p50", mode, result.connect_p50_ns as f64 / 1e3);
    samples.add(
        "connect_rate",
        mode,
        result.connections as f64 / (result.elapsed_ns as f64 / 1e9),
    );
    samples.raw(mode, "connect", rep, &result);
    Ok(())
}

/// Daemon memory per idle connection and daemon CPU while they idle (rackd modes only).
///
/// The daemons are restarted first, so that memory freed by earlier measurements does not hide
/// the cost, and their status is not asked for before memory is read (a status of thousands
/// of connections needs megabytes of buffers): they are left until their CPU use calms down.
pub fn idle(sc: &mut Scenario, plan: &Plan, rep: u32, samples: &mut Samples) -> Result<()> {
    let mode = sc.mode();
    if !mode.has_daemon() {
        return Ok(());
    }
    sc.restart_daemons()?;
    let port = IDLE_PORT + u16::try_from(rep).unwrap_or(0);
    let count = plan.idle_connections;
    let server = sc.extra_server(port)?;
    let rss_before = rss_of(sc.daemons())?;
    let addr = sc.server_addr(port);
    let holder = sc
        .client()
        .command(sc.peer())
        .args(args(&[&"hold", &addr, &"--count", &count]))
        .stdin_piped()
        .spawn()?;
    holder.wait_for_output("connections", RUN_TIMEOUT)?;
    let held: HoldResult = parse_json_line(holder.command(), &holder.stdout())?;
    if held.connections != count {
        return Err(check(
            mode,
            "idle",
            format!("{count} connections asked for, {held:?}"),
        ));
    }
    let calm = wait_calm(sc.daemons())?;
    let rss_after = rss_of(sc.daemons())?;
    let states = check_idle_listing(sc, port, count)?;
    let per_conn = rss_before
        .iter()
        .zip(&rss_after)
        .map(|(b, a)| (*a as f64 - *b as f64) / count as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let window = Duration::from_millis(plan.idle_cpu_window_ms);
    let cpu_before = cpu_of(sc.daemons())?;
    std::thread::sleep(window);
    let cpu_pct: Vec<f64> = cpu_of(sc.daemons())?
        .iter()
        .zip(&cpu_before)
        .map(|(a, b)| (a - b) / window.as_secs_f64() * 100.0)
        .collect();
    samples.add("idle_mem_per_conn", mode, per_conn);
    samples.add(
        "idle_cpu",
        mode,
        cpu_pct.iter().copied().fold(0.0, f64::max),
    );
    samples.raw(
        mode,
        "idle",
        rep,
        serde_json::json!({
            "connections": count,
            "open_elapsed_ns": held.elapsed_ns,
            "calm_after_ms": calm.as_millis() as u64,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "cpu_percent": cpu_pct,
            "client_daemon_states": states,
        }),
    );
    // The server closes first, so TIME_WAIT stays there and the client's ports are free again.
    server.kill()?;
    holder.close_stdin();
    holder.wait(Duration::from_secs(10))?;
    Ok(())
}

/// Waits until the daemons together use less than [`CALM_SHARE`] of a core over two
/// consecutive [`CALM_INTERVAL`]s; returns how long that took.
fn wait_calm(daemons: &[Daemon]) -> Result<Duration> {
    let start = Instant::now();
    let mut calm_intervals = 0;
    let mut last: f64 = cpu_of(daemons)?.iter().sum();
    while calm_intervals < 2 {
        if start.elapsed() > CALM_LIMIT {
            return Err(Error::Daemon {
                host: daemons
                    .iter()
                    .map(Daemon::host)
                    .collect::<Vec<_>>()
                    .join(", "),
                detail: format!("still busy {CALM_LIMIT:?} after the idle connections opened"),
            });
        }
        std::thread::sleep(CALM_INTERVAL);
        let now: f64 = cpu_of(daemons)?.iter().sum();
        if now - last < CALM_INTERVAL.as_secs_f64() * CALM_SHARE {
            calm_intervals += 1;
        } else {
            calm_intervals = 0;
        }
        last = now;
    }
    Ok(start.elapsed())
}

/// Checks that managed mode's daemons list all `count` idle connections on `port` and released
/// mode's daemon none — within a few seconds: a released connection is listed while its rackd
/// probes the server's (`peer.fallback`, 1.5 s); returns the client daemon's count per state.
fn check_idle_listing(sc: &Scenario, port: u16, count: u64) -> Result<Vec<(String, u64)>> {
    let mode = sc.mode();
    let expected = if mode == Mode::Managed { count } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let mut listed = Vec::new();
        for daemon in sc.daemons() {
            listed.push(daemon.connections_on(port)?);
        }
        let counts: Vec<usize> = listed.iter().map(Vec::len).collect();
        if counts.iter().all(|n| *n as u64 == expected) {
            break listed;
        }
        if Instant::now() >= deadline {
            return Err(check(
                mode,
                "idle",
                format!("{count} connections open, {expected} expected in each daemon's status, listed: {counts:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut states: Vec<(String, u64)> = Vec::new();
    for c in listed.first().into_iter().flatten() {
        let name = c.state.as_str();
        match states.iter_mut().find(|(s, _)| s == name) {
            Some((_, n)) => *n += 1,
            None => states.push((name.to_owned(), 1)),
        }
    }
    Ok(states)
}

fn rss_of(daemons: &[Daemon]) -> Result<Vec<u64>> {
    daemons.iter().map(Daemon::rss_bytes).collect()
}

fn cpu_of(daemons: &[Daemon]) -> Result<Vec<f64>> {
    daemons.iter().map(Daemon::cpu_seconds).collect()
}

/// What the client daemon can show of the probe connection before the cut.
enum Watch<'a> {
    /// No daemon tracks it (native, released).
    Nothing,
    /// The daemon tracks it as connected: failure detection can be timed.
    Connected(&'a Daemon, String),
    /// The daemon tracks it but never reached `connected` (heartbeats not there yet).
    NotConnected(Option<ConnState>),
}

/// Time to detect a cut and time from restoring the path to data flowing again.
pub fn failure(sc: &Scenario, plan: &Plan, rep: u32, samples: &mut Samples) -> Result<()> {
    let mode = sc.mode();
    if mode.is_reference() {
        return Ok(());
    }
    let addr = sc.server_addr(SERVICE_PORT);
    let probe = sc.client().spawn(
        sc.peer(),
        args(&[
            &"trickle",
            &addr,
            &"--interval-ms",
            &plan.trickle_interval_ms,
        ]),
    )?;
    probe.wait_for_output(crate::peer::ECHO_LINE, FIRST_ECHO)?;
    let local = probe
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix(LOCAL_LINE).map(str::to_owned))
        .ok_or_else(|| {
            check(
                mode,
                "failure",
                format!("probe printed no local address: {:?}", probe.stdout()),
            )
        })?;
    let watch = match (mode, sc.client_daemon()) {
        (Mode::Managed, Some(daemon)) => {
            let mut last = None;
            let connected = poll(CONNECTED_LIMIT, Duration::from_millis(20), || {
                last = find_conn(daemon, &local)?.map(|c| c.state);
                Ok(last == Some(ConnState::Connected))
            })?;
            if connected {
                Watch::Connected(daemon, local.clone())
            } else {
                Watch::NotConnected(last)
            }
        }
        _ => Watch::Nothing,
    };

    let cut_at = monotonic_ns();
    sc.topology().cut("client", "server")?;
    let detected_at = match &watch {
        Watch::Connected(daemon, local) => {
            let limit = Duration::from_millis(plan.detect_limit_ms);
            let noticed = poll(limit, Duration::from_millis(10), || {
                Ok(find_conn(daemon, local)?.is_some_and(|c| is_failure_noticed(c.state)))
            })?;
            noticed.then(monotonic_ns)
        }
        _ => None,
    };
    let outage_ns = plan.outage_ms * 1_000_000;
    let held_ns = plan.held_ms * 1_000_000;
    let restore_due = (cut_at + outage_ns).max(detected_at.map_or(0, |t| t + held_ns));
    std::thread::sleep(Duration::from_nanos(
        restore_due.saturating_sub(monotonic_ns()),
    ));
    let before_restore = monotonic_ns();
    sc.topology().restore("client", "server")?;
    let restored_at = monotonic_ns();
    // Until data flows again, and until the client's daemon shows the connection connected
    // again (or for up to RESUME_GRACE after data flows): the two tell apart how long rackd
    // takes to resume and how long the socket then takes to send.
    let (mut first_echo, mut resumed_at) = (None, None);
    poll(FLOW_LIMIT, Duration::from_millis(5), || {
        if let (Watch::Connected(daemon, local), None) = (&watch, resumed_at) {
            if find_conn(daemon, local)?.is_some_and(|c| c.state == ConnState::Connected) {
                resumed_at = Some(monotonic_ns());
            }
        }
        first_echo = first_echo.or_else(|| {
            echo_times(&probe.stdout())
                .into_iter()
                .find(|t| *t > before_restore)
        });
        let waiting_for_daemon = matches!(watch, Watch::Connected(..))
            && resumed_at.is_none()
            && first_echo.is_none_or(|t| monotonic_ns() < t + RESUME_GRACE_NS);
        Ok(first_echo.is_some() && !waiting_for_daemon)
    })?;
    let Some(first_echo) = first_echo else {
        let states: Vec<String> = sc
            .daemons()
            .iter()
            .map(|d| match d.connections_on(SERVICE_PORT) {
                Ok(conns) => format!("{}: {conns:?}", d.host()),
                Err(e) => format!("{}: {e}", d.host()),
            })
            .collect();
        return Err(check(
            mode,
            "failure",
            format!(
                "no data flowed within {FLOW_LIMIT:?} after the path was restored (daemon \
                 resumed: {resumed_at:?}); the daemons list {states:?}"
            ),
        ));
    };
    let resumed_ms = resumed_at.map(|t| t.saturating_sub(restored_at) as f64 / 1e6);
    if let Some(ms) = resumed_ms {
        samples.add("resumed", mode, ms);
    }
    probe.kill()?;
    let restore_ms = first_echo.saturating_sub(restored_at) as f64 / 1e6;
    let detect_ms = detected_at.map(|t| (t - cut_at) as f64 / 1e6);
    samples.raw(
        mode,
        "failure",
        rep,
        serde_json::json!({
            "outage_ms": (restored_at - cut_at) as f64 / 1e6,
            "detect_ms": detect_ms,
            "restore_to_data_ms": restore_ms,
            "restore_to_connected_ms": resumed_ms,
        }),
    );
    match watch {
        Watch::Nothing => {
            samples.unavailable("detect", mode, "— (plain TCP)", false);
            samples.add("restore", mode, restore_ms);
        }
        Watch::NotConnected(state) => {
            let reason = match state {
                Some(s) => format!("n/a (not implemented: connection stays {})", s.as_str()),
                None => "n/a (not implemented: connection not tracked)".to_owned(),
            };
            samples.unavailable("detect", mode, &reason, false);
            samples.unavailable("restore", mode, &reason, false);
            samples.raw(mode, "restore_kernel_only_ms", rep, restore_ms);
        }
        Watch::Connected(..) => match detect_ms {
            Some(ms) => {
                samples.add("detect", mode, ms);
                samples.add("restore", mode, restore_ms);
            }
            None => {
                let reason = format!("not detected within {} ms", plan.detect_limit_ms);
                samples.unavailable("detect", mode, &reason, true);
                samples.unavailable("restore", mode, "n/a (failure not detected)", true);
                samples.raw(mode, "restore_kernel_only_ms", rep, restore_ms);
            }
        },
    }
    Ok(())
}

/// The daemon's entry for the connection whose local end (as the socket sees it) is `local`.
fn find_conn(daemon: &Daemon, local: &str) -> Result<Option<ConnectionStatus>> {
    Ok(daemon
        .connections_on(SERVICE_PORT)?
        .into_iter()
        .find(|c| c.original_local == local || c.local == local))
}
