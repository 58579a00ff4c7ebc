//! The soak run (`rk-soak`, `scripts/soak.sh`): many managed connections echoing all the time,
//! an outage at a fixed interval, and rackd's resident memory and flow table sampled
//! throughout. The run fails if a connection is lost or a byte differs, or if memory or the
//! table grow beyond their bounds once the first outage is behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::daemon::Daemon;
use crate::fanout::{payload, Fanout};
use crate::flags::Flags;
use crate::testbed::{OutageReport, Result, ScenarioError, Testbed};

/// The echo server's port.
const PORT: u16 = 7100;
/// Bytes per echo at most (each connection sends `MAX/2..=MAX` per round).
const ECHO_MAX: usize = 4096;
/// How long one echo round may take outside an outage.
const ROUND_LIMIT: Duration = Duration::from_secs(30);

/// What a soak run does and what it tolerates.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakConfig {
    pub duration: Duration,
    pub connections: usize,
    /// From the start of one outage to the next (the first comes after one interval).
    pub outage_every: Duration,
    pub outage: Duration,
    pub sample_every: Duration,
    /// Pause between echo rounds.
    pub round_every: Duration,
    /// How far a daemon's RSS may rise above its peak during the first outage cycle.
    pub rss_growth_kib: u64,
    /// Flows a daemon may list beyond the connections under test.
    pub flow_slack: usize,
    /// Every this many outages, the client also moves to its next address after the outage
    /// (0: never).
    pub move_every: usize,
}

impl Default for SoakConfig {
    fn default() -> Self {
        SoakConfig {
            duration: Duration::from_secs(3600),
            connections: 100,
            outage_every: Duration::from_secs(120),
            outage: Duration::from_secs(30),
            sample_every: Duration::from_secs(10),
            round_every: Duration::from_secs(1),
            rss_growth_kib: 4 * 1024,
            flow_slack: 0,
            move_every: 0,
        }
    }
}

impl SoakConfig {
    /// The defaults, changed by `--duration-s`, `--connections`, `--outage-every-s`,
    /// `--outage-s`, `--sample-every-s`, `--round-every-ms`, `--rss-growth-kib`, `--flow-slack`,
    /// `--move-every`.
    pub fn from_flags(flags: &Flags) -> Result<SoakConfig, String> {
        let d = SoakConfig::default();
        let secs = |name: &str, default: Duration| -> Result<Duration, String> {
            Ok(Duration::from_secs(flags.get_or(name, default.as_secs())?))
        };
        let cfg = SoakConfig {
            duration: secs("duration-s", d.duration)?,
            connections: flags.get_or("connections", d.connections)?,
            outage_every: secs("outage-every-s", d.outage_every)?,
            outage: secs("outage-s", d.outage)?,
            sample_every: secs("sample-every-s", d.sample_every)?,
            round_every: Duration::from_millis(
                flags.get_or("round-every-ms", d.round_every.as_millis() as u64)?,
            ),
            rss_growth_kib: flags.get_or("rss-growth-kib", d.rss_growth_kib)?,
            flow_slack: flags.get_or("flow-slack", d.flow_slack)?,
            move_every: flags.get_or("move-every", d.move_every)?,
        };
        if cfg.outage >= cfg.outage_every {
            return Err(format!(
                "--outage-s {} must be shorter than --outage-every-s {}",
                cfg.outage.as_secs(),
                cfg.outage_every.as_secs()
            ));
        }
        if cfg.connections == 0 || cfg.sample_every.is_zero() {
            return Err("--connections and --sample-every-s must be positive".into());
        }
        Ok(cfg)
    }
}

/// One sample of both daemons.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the connections opened.
    pub t_s: f64,
    /// Whether an outage was on.
    pub outage: bool,
    /// Outages begun so far.
    pub cycle: usize,
    pub client_rss_kib: u64,
    pub server_rss_kib: u64,
    /// Flows each daemon lists (`rackctl status --json`, `connections`).
    pub client_flows: usize,
    pub server_flows: usize,
}

impl Sample {
    pub const CSV_HEADER: &'static str =
        "t_s,outage,cycle,client_rss_kib,server_rss_kib,client_flows,server_flows";

    pub fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{}",
            self.t_s,
            u8::from(self.outage),
            self.cycle,
            self.client_rss_kib,
            self.server_rss_kib,
            self.client_flows,
            self.server_flows
        )
    }
}

/// What a finished soak run saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub samples: Vec<Sample>,
    pub outages: Vec<OutageReport>,
    pub rounds: u64,
}

impl SoakReport {
    /// Everything that breaks the bounds of `cfg`; empty when the run was flat.
    ///
    /// Memory: each daemon's RSS in any sample after the first outage cycle (samples with
    /// `cycle >= 2`) must stay within `rss_growth_kib` of its highest RSS during that first
    /// cycle, which covers the buffers a suspension and a resumption need. Flows: no sample
    /// may list more than `connections + flow_slack`.
    pub fn problems(&self, cfg: &SoakConfig) -> Vec<String> {
        let mut problems = Vec::new();
        let flow_bound = cfg.connections + cfg.flow_slack;
        for s in &self.samples {
            for (side, flows) in [("client", s.client_flows), ("server", s.server_flows)] {
                if flows > flow_bound {
                    problems.push(format!(
                        "{:.0} s: the {side} rackd lists {flows} flows, bound {flow_bound}",
                        s.t_s
                    ));
                }
            }
        }
        type Rss = fn(&Sample) -> u64;
        let sides: [(&str, Rss); 2] = [
            ("client", |s| s.client_rss_kib),
            ("server", |s| s.server_rss_kib),
        ];
        for (side, rss) in sides {
            let Some(baseline) = self.samples.iter().filter(|s| s.cycle <= 1).map(rss).max() else {
                problems.push("no samples".into());
                continue;
            };
            let bound = baseline + cfg.rss_growth_kib;
            if let Some(s) = self.samples.iter().find(|s| s.cycle >= 2 && rss(s) > bound) {
                problems.push(format!(
                    "{:.0} s: the {side} rackd's RSS is {} KiB, above {bound} KiB (its first-cycle \
                     peak {baseline} KiB + {} KiB)",
                    s.t_s,
                    rss(s),
                    cfg.rss_growth_kib
                ));
            }
        }
        if self.samples.iter().all(|s| s.cycle < 2) {
            problems.push(format!(
                "the run ended before a second outage: nothing to compare with the first cycle \
                 (duration {} s, outage every {} s)",
                cfg.duration.as_secs(),
                cfg.outage_every.as_secs()
            ));
        }
        problems
    }
}

fn sample(bed: &Testbed, t: Duration, outage: bool, cycle: usize) -> Result<Sample> {
    let rss = |d: &Daemon| {
        d.memory()
            .map(|m| m.rss_kib)
            .map_err(ScenarioError::io("reading rackd's memory"))
    };
    let flows = |d: &Daemon, side: &str| {
        d.status()
            .map(|s| s.connections.len())
            .map_err(|e| ScenarioError::program(format!("{side} rackd"), format!("status: {e}")))
    };
    Ok(Sample {
        t_s: t.as_secs_f64(),
        outage,
        cycle,
        client_rss_kib: rss(&bed.client_rackd)?,
        server_rss_kib: rss(&bed.server_rackd)?,
        client_flows: flows(&bed.client_rackd, "client")?,
        server_flows: flows(&bed.server_rackd, "server")?,
    })
}

/// Runs the soak; `emit` gets the CSV header, one line per sample and one per outage (starting
/// with `#`) as they happen.
pub fn run(cfg: &SoakConfig, emit: &(dyn Fn(&str) + Sync)) -> Result<SoakReport> {
    let bed = Testbed::start("warn")?;
    let to = std::net::SocketAddr::new(bed.server().ip(netns_tests::Family::V4), PORT);
    let fan = Fanout::start(bed.client(), bed.server(), to, cfg.connections, ECHO_MAX)?;
    let ids = bed.managed_on(PORT, cfg.connections, Duration::from_secs(60))?;
    let start = Instant::now();
    let in_outage = AtomicBool::new(false);
    let cycle = std::sync::atomic::AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let samples = Mutex::new(Vec::new());
    emit(Sample::CSV_HEADER);
    let driven = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let s = sample(
                    &bed,
                    start.elapsed(),
                    in_outage.load(Ordering::Relaxed),
                    cycle.load(Ordering::Relaxed),
                )?;
                emit(&s.csv());
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                let next = Instant::now() + cfg.sample_every;
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Ok(())
        });
        let driven = drive(&bed, &fan, &ids, cfg, start, emit, &in_outage, &cycle);
        stop.store(true, Ordering::Relaxed);
        let sampled = sampler
            .join()
            .unwrap_or_else(|_| Err(ScenarioError::program("rk-soak", "the sampler panicked")));
        driven.and_then(|report| sampled.map(|()| report))
    });
    let (outages, rounds) =
        driven.map_err(|e| ScenarioError::program("soak", format!("{e}\n{}", bed.logs())))?;
    let echoed = fan.close(ROUND_LIMIT)?;
    let expected: u64 = (0..cfg.connections)
        .flat_map(|i| (0..rounds).map(move |r| payload(i, r, ECHO_MAX).len() as u64))
        .sum();
    if echoed != expected {
        return Err(ScenarioError::program(
            "rk-fanout",
            format!("the server echoed {echoed} bytes, the client sent {expected}"),
        ));
    }
    Ok(SoakReport {
        samples: samples.into_inner().unwrap_or_else(|p| p.into_inner()),
        outages,
        rounds,
    })
}

/// Echo rounds without pause, an outage (with a round in flight) every `outage_every`.
#[allow(clippy::too_many_arguments)]
fn drive(
    bed: &Testbed,
    fan: &Fanout,
    ids: &[String],
    cfg: &SoakConfig,
    start: Instant,
    emit: &(dyn Fn(&str) + Sync),
    in_outage: &AtomicBool,
    cycle: &std::sync::atomic::AtomicUsize,
) -> Result<(Vec<OutageReport>, u64)> {
    let mut outages = Vec::new();
    let mut round = 0;
    let mut next_outage = start + cfg.outage_every;
    while start.elapsed() < cfg.duration {
        if Instant::now() >= next_outage {
            cycle.fetch_add(1, Ordering::Relaxed);
            in_outage.store(true, Ordering::Relaxed);
            let outage = bed.begin_outage(ids)?;
            fan.begin_round(round)?;
            let report = outage.end_after(cfg.outage)?;
            in_outage.store(false, Ordering::Relaxed);
            fan.finish_round(round, ROUND_LIMIT)?;
            emit(&format!(
                "# outage {}: held after {:.2} s, all connected {:.2} s after the link came back",
                outages.len() + 1,
                report.detected_in.as_secs_f64(),
                report.resumed_in.as_secs_f64()
            ));
            outages.push(report);
            if cfg.move_every > 0 && outages.len() % cfg.move_every == 0 {
                let moved = bed.move_client(ids)?;
                emit(&format!(
                    "# move to {}: followed in {:.2} s",
                    moved.new_v4,
                    moved.followed_in.as_secs_f64()
                ));
            }
            next_outage += cfg.outage_every;
        } else {
            fan.round(round, ROUND_LIMIT)?;
            std::thread::sleep(cfg.round_every);
        }
        round += 1;
    }
    Ok((outages, round))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_s: f64, cycle: usize, rss: u64, flows: usize) -> Sample {
        Sample {
            t_s,
            outage: false,
            cycle,
            client_rss_kib: rss,
            server_rss_kib: 5000,
            client_flows: flows,
            server_flows: 100,
        }
    }

    fn report(samples: Vec<Sample>) -> SoakReport {
        SoakReport {
            samples,
            ..SoakReport::default()
        }
    }

    #[test]
    fn a_flat_run_has_no_problems() {
        let cfg = SoakConfig::default();
        let r = report(vec![
            s(0.0, 0, 5000, 100),
            s(150.0, 1, 6000, 100),
            s(300.0, 2, 9000, 100),
        ]);
        assert_eq!(r.problems(&cfg), Vec::<String>::new());
    }

    #[test]
    fn growth_beyond_the_bound_and_extra_flows_are_reported() {
        let cfg = SoakConfig::default();
        let r = report(vec![
            s(0.0, 0, 5000, 100),
            s(150.0, 1, 6000, 101),
            s(300.0, 2, 10_241, 100),
        ]);
        let problems = r.problems(&cfg);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("101 flows"), "{problems:?}");
        assert!(problems[1].contains("10241 KiB"), "{problems:?}");
    }

    #[test]
    fn a_run_without_a_second_cycle_cannot_pass() {
        let r = report(vec![s(0.0, 0, 5000, 100), s(150.0, 1, 5000, 100)]);
        assert!(r.problems(&SoakConfig::default())[0].contains("before a second outage"));
    }

    #[test]
    fn flags_override_defaults_and_are_checked() {
        let args = |a: &[&str]| Flags::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let cfg =
            SoakConfig::from_flags(&args(&["--duration-s", "600", "--outage-s", "20"]).unwrap())
                .unwrap();
        assert_eq!(cfg.duration, Duration::from_secs(600));
        assert_eq!(cfg.outage, Duration::from_secs(20));
        assert_eq!(cfg.connections, 100);
        assert!(SoakConfig::from_flags(&args(&["--outage-s", "120"]).unwrap()).is_err());
    }
}
