//! One benchmark run: the three scenarios side by side, the measurements interleaved so that
//! background load on the machine hits every mode alike.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::measure;
use crate::metrics::Mode;
use crate::peer::Direction;
use crate::plan::Plan;
use crate::report::{summarize, Meta, Results, TableCost};
use crate::samples::Samples;
use crate::scenario::{Scenario, Tools};
use crate::{Error, Result};

/// A measurement over one scenario and one repetition.
struct Measurement {
    name: &'static str,
    run: fn(&mut Scenario, &Plan, u32, &mut Samples) -> Result<()>,
}

/// Bulk, latency and connection measurements, repeated `plan.reps` times.
const TRAFFIC: &[Measurement] = &[
    Measurement {
        name: "bulk, 1 flow up",
        run: |sc, plan, rep, s| measure::bulk(sc, plan, rep, (1, Direction::Up), s),
    },
    Measurement {
        name: "bulk, 1 flow down",
        run: |sc, plan, rep, s| measure::bulk(sc, plan, rep, (1, Direction::Down), s),
    },
    Measurement {
        name: "bulk, 8 flows up",
        run: |sc, plan, rep, s| measure::bulk(sc, plan, rep, (8, Direction::Up), s),
    },
    Measurement {
        name: "bulk, 8 flows down",
        run: |sc, plan, rep, s| measure::bulk(sc, plan, rep, (8, Direction::Down), s),
    },
    Measurement {
        name: "daemon CPU and memory after bulk",
        run: |sc, _, rep, s| measure::daemon_after_bulk(sc, rep, s),
    },
    Measurement {
        name: "request/response",
        run: |sc, plan, rep, s| measure::pingpong(sc, plan, rep, s),
    },
    Measurement {
        name: "connections",
        run: |sc, plan, rep, s| measure::connections(sc, plan, rep, s),
    },
];

/// Idle connections, repeated `plan.idle_reps` times.
const IDLE: &[Measurement] = &[Measurement {
    name: "idle connections",
    run: measure::idle,
}];

/// The per-packet cost of rackd's table, `plan.cost_pairs` pairs of runs.
const TABLE_COST: &[Measurement] = &[Measurement {
    name: "round trips with and without rackd's table",
    run: |sc, plan, rep, s| measure::table_cost(sc, plan, rep, s),
}];

/// Failure detection and restore, repeated `plan.failure_reps` times.
const FAILURE: &[Measurement] = &[Measurement {
    name: "failure and restore",
    run: |sc, plan, rep, s| measure::failure(sc, plan, rep, s),
}];

/// Runs every measurement of `plan` in every mode. `progress` gets a line per step. An error
/// after some measurements ends the run early with the results so far and the error in
/// [`Results::error`]; one before any is returned.
pub fn run(plan: &Plan, tools: &Tools, mut progress: impl FnMut(&str)) -> Result<Results> {
    require_root()?;
    let started = Instant::now();
    let date_utc = utc_date_time(SystemTime::now());
    let loadavg_at_start = read_trimmed("/proc/loadavg");
    let mut step = |what: &str| {
        progress(&format!(
            "[{:6.1} s] {what}",
            started.elapsed().as_secs_f64()
        ))
    };

    let mut scenarios = Mode::ALL
        .iter()
        .map(|mode| {
            step(&format!("{mode}: starting topology and daemons"));
            Scenario::start(*mode, tools)
        })
        .collect::<Result<Vec<_>>>()?;
    for sc in &scenarios {
        step(&format!(
            "{}: checking the mode with a live connection",
            sc.mode()
        ));
        sc.verify_mode(plan.trickle_interval_ms)?;
    }

    let mut samples = Samples::default();
    let outcome = measure_all(plan, &mut scenarios, &mut samples, &mut step);
    // Results so far are worth keeping (a failure scenario comes after minutes of traffic);
    // nothing measured yet means nothing to report but the error.
    let error = match outcome {
        Ok(()) => None,
        Err(e) if samples.raw.is_empty() => return Err(e),
        Err(e) => Some(e.to_string()),
    };
    step(if error.is_some() {
        "stopped by an error"
    } else {
        "done"
    });
    let meta = Meta {
        date_utc,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model: cpu_model(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        loadavg_at_start,
        loadavg_at_end: read_trimmed("/proc/loadavg"),
        rackd_config: "built-in defaults".into(),
        duration_s: started.elapsed().as_secs_f64(),
    };
    Ok(Results {
        meta,
        plan: plan.clone(),
        rows: summarize(&samples),
        table_cost: TableCost::from_samples(&samples),
        error,
        samples,
    })
}

/// Every measurement of `plan`, in every scenario, into `samples`; stops at the first error.
fn measure_all(
    plan: &Plan,
    scenarios: &mut [Scenario],
    samples: &mut Samples,
    step: &mut impl FnMut(&str),
) -> Result<()> {
    for (measurements, reps) in [
        (TRAFFIC, plan.reps),
        (TABLE_COST, plan.cost_pairs),
        (IDLE, plan.idle_reps),
        (FAILURE, plan.failure_reps),
    ] {
        for rep in 0..reps {
            for measurement in measurements {
                step(&format!("{} {}/{reps}", measurement.name, rep + 1));
                // Modes take turns run by run, a different one first each repetition, so
                // that load from elsewhere on the machine hits them alike.
                let count = scenarios.len();
                for i in 0..count {
                    let sc = &mut scenarios[(rep as usize + i) % count];
                    (measurement.run)(sc, plan, rep, samples)?;
                    sc.check_daemons()?;
                }
            }
        }
    }
    Ok(())
}

fn require_root() -> Result<()> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot {
            euid: euid.as_raw(),
        })
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|e| format!("unknown ({e})"), |s| s.trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc_date_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's days-to-civil algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_date_time(UNIX_EPOCH), "1970-01-01 00:00:00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(utc_date_time(leap), "2000-02-29 01:02:03");
        let later = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // 2025-12-31 23:59:59
        assert_eq!(utc_date_time(later), "2025-12-31 23:59:59");
    }
}
