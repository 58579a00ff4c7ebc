//! The results of a run: medians, ratios against native, verdicts against the targets, and
//! the three output files (markdown table, JSON with every sample, SVG plot of the ratios).

pub mod cost;
mod svg;
mod table;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::metrics::{Metric, Mode, METRICS};
use crate::plan::Plan;
use crate::samples::Samples;
use crate::stats::{median, Spread};

use crate::{Error, Result};
pub use cost::TableCost;

pub use svg::render as render_svg;
pub use table::render as render_table;

/// Conditions of the run, for the reader of the results.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Start of the run, UTC, `YYYY-MM-DD HH:MM:SS`.
    pub date_utc: String,
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg at the start (other work on the machine skews the numbers).
    pub loadavg_at_start: String,
    /// /proc/loadavg at the end.
    pub loadavg_at_end: String,
    /// The rackd configuration used.
    pub rackd_config: String,
    /// Wall time of the whole run in seconds.
    pub duration_s: f64,
}

/// One cell of the table: a median, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    /// Median of the samples.
    Median(f64),
    /// Not measured, with the reason shown.
    Unavailable(String),
    /// Not meaningful for this mode (e.g. daemon memory without a daemon).
    None,
}

/// How a rackd mode fares against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Target met.
    Pass,
    /// Target missed.
    Miss,
    /// The ratio differs from 1 by less than the noise of ratios in this run (the row's
    /// `noise`): neither pass nor miss can be told.
    WithinNoise,
    /// Target exists but there is nothing to judge (not implemented yet).
    NotApplicable,
    /// No target for this metric and mode.
    NoTarget,
}

impl Verdict {
    /// As shown in the table; `noise` is the row's noise (relative), named by `WithinNoise`.
    pub fn text(self, noise: Option<f64>) -> String {
        match self {
            Verdict::Pass => "pass".into(),
            Verdict::Miss => "**miss**".into(),
            Verdict::WithinNoise => {
                format!("within noise (±{:.0} %)", noise.unwrap_or(f64::NAN) * 100.0)
            }
            Verdict::NotApplicable => "n/a".into(),
            Verdict::NoTarget => "—".into(),
        }
    }
}

/// The result of a mode for one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// Median or reason.
    pub cell: Cell,
    /// How the samples scatter around the median.
    pub spread: Option<Spread>,
    /// Median / native median (none for native itself).
    pub ratio: Option<f64>,
    /// The target, as text.
    pub target: Option<String>,
    /// Against the target.
    pub verdict: Verdict,
}

/// One metric's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Metric key.
    pub metric: &'static str,
    /// Label.
    pub label: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Native TCP.
    pub native: Judged,
    /// Native TCP in a second topology: its ratio is the A/A comparison.
    pub native_b: Judged,
    /// rackd's table installed, no daemon.
    pub table_only: Judged,
    /// How far a ratio may stray from 1 by chance in this run (relative): the larger of the
    /// A/A deviation |native B / native − 1| and half the interquartile range of either
    /// native's samples. None without native samples in both topologies.
    pub noise: Option<f64>,
    /// Released connections.
    pub released: Judged,
    /// Managed connections.
    pub managed: Judged,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Conditions.
    pub meta: Meta,
    /// Sizes and repetitions.
    pub plan: Plan,
    /// The summary table.
    pub rows: Vec<Row>,
    /// Why the run stopped early, if it did (the results are then partial).
    pub error: Option<String>,
    /// The per-packet cost of rackd's table, if measured.
    pub table_cost: Option<TableCost>,
    /// Every sample.
    pub samples: Samples,
}

fn cell(samples: &Samples, metric: &Metric, mode: Mode) -> Cell {
    if let Some(m) = median(samples.get(metric.key, mode)) {
        Cell::Median(m)
    } else if let Some(u) = samples.why_unavailable(metric.key, mode) {
        Cell::Unavailable(u.reason.clone())
    } else {
        Cell::None
    }
}

fn judge(
    samples: &Samples,
    metric: &Metric,
    mode: Mode,
    native: Option<f64>,
    noise: Option<f64>,
) -> Judged {
    let cell = cell(samples, metric, mode);
    let value = match cell {
        Cell::Median(v) => Some(v),
        _ => None,
    };
    let ratio = value.zip(native).map(|(v, n)| v / n);
    let goal = metric.goal(mode);
    let verdict = match (goal, value) {
        (None, _) => Verdict::NoTarget,
        (Some(goal), Some(v)) => match (goal.met(v, native), ratio, noise) {
            (None, _, _) => Verdict::NotApplicable,
            (Some(_), Some(r), Some(n)) if goal.is_ratio() && (r - 1.0).abs() <= n => {
                Verdict::WithinNoise
            }
            (Some(true), _, _) => Verdict::Pass,
            (Some(false), _, _) => Verdict::Miss,
        },
        (Some(_), None) => match samples.why_unavailable(metric.key, mode) {
            Some(u) if u.miss => Verdict::Miss,
            _ => Verdict::NotApplicable,
        },
    };
    Judged {
        cell,
        spread: Spread::of(samples.get(metric.key, mode)),
        ratio,
        target: goal.map(|g| g.describe(metric.unit)),
        verdict,
    }
}

/// The noise of ratios of `metric` in this run (see [`Row::noise`]).
fn noise(samples: &Samples, metric: &Metric) -> Option<f64> {
    let (a, b) = (
        samples.get(metric.key, Mode::Native),
        samples.get(metric.key, Mode::NativeB),
    );
    let aa = (median(b)? / median(a)? - 1.0).abs();
    let half_iqr = |s: &[f64]| Spread::of(s).map_or(0.0, |s| s.half_iqr());
    Some(aa.max(half_iqr(a)).max(half_iqr(b)))
}

/// The summary rows of `samples`, in table order.
pub fn summarize(samples: &Samples) -> Vec<Row> {
    METRICS
        .iter()
        .map(|m| {
            let native = judge(samples, m, Mode::Native, None, None);
            let native_value = match native.cell {
                Cell::Median(v) => Some(v),
                _ => None,
            };
            let noise = noise(samples, m);
            let judge = |mode| judge(samples, m, mode, native_value, noise);
            Row {
                metric: m.key,
                label: m.label,
                unit: m.unit,
                higher_is_better: m.higher_is_better,
                native_b: judge(Mode::NativeB),
                table_only: judge(Mode::TableOnly),
                released: judge(Mode::Released),
                managed: judge(Mode::Managed),
                noise,
                native,
            }
        })
        .collect()
}

/// The files written by [`write`].
#[derive(Debug, Clone)]
pub struct Written {
    /// The markdown table.
    pub table: PathBuf,
    /// All samples.
    pub json: PathBuf,
    /// The ratio plot.
    pub svg: PathBuf,
}

/// Writes `results.md`, `results.json` and `ratios.svg` into `dir`.
pub fn write(results: &Results, dir: &Path) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {dir:?}")))?;
    let written = Written {
        table: dir.join("results.md"),
        json: dir.join("results.json"),
        svg: dir.join("ratios.svg"),
    };
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| Error::io("serialising the results")(e.into()))?;
    for (path, text) in [
        (&written.table, render_table(results)),
        (&written.json, json),
        (&written.svg, render_svg(&results.rows)),
    ] {
        std::fs::write(path, text).map_err(Error::io(format!("writing {path:?}")))?;
    }
    Ok(written)
}

/// A number with as many decimals as its size deserves.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Samples {
        let mut s = Samples::default();
        for v in [10.0, 9.0, 11.0] {
            s.add("bulk_1_up", Mode::Native, v);
        }
        for v in [9.9, 9.8, 9.9] {
            s.add("bulk_1_up", Mode::Released, v);
        }
        for v in [9.0, 9.5, 9.2] {
            s.add("bulk_1_up", Mode::Managed, v);
        }
        s.unavailable("detect", Mode::Managed, "n/a (not implemented)", false);
        s.unavailable("restore", Mode::Managed, "not detected", true);
        s
    }

    fn row<'a>(rows: &'a [Row], key: &str) -> &'a Row {
        rows.iter().find(|r| r.metric == key).unwrap()
    }

    #[test]
    fn medians_ratios_and_verdicts() {
        let rows = summarize(&samples());
        let bulk = row(&rows, "bulk_1_up");
        assert_eq!(bulk.native.cell, Cell::Median(10.0));
        assert_eq!(bulk.released.cell, Cell::Median(9.9));
        assert_eq!(bulk.released.verdict, Verdict::Pass); // 0.99 ≥ 0.99
        assert!((bulk.managed.ratio.unwrap() - 0.92).abs() < 1e-9);
        assert_eq!(bulk.managed.verdict, Verdict::Miss); // 0.92 < 0.97
    }

    #[test]
    fn ratios_closer_to_one_than_the_noise_are_within_noise() {
        let mut s = samples();
        // A/A: native B's median is 10 % off native's, so the noise is at least ±10 %.
        for v in [11.0, 10.0, 12.0] {
            s.add("bulk_1_up", Mode::NativeB, v);
        }
        let rows = summarize(&s);
        let bulk = row(&rows, "bulk_1_up");
        assert!((bulk.noise.unwrap() - 0.1).abs() < 1e-9);
        assert!((bulk.native_b.ratio.unwrap() - 1.1).abs() < 1e-9);
        // Managed 0.92× misses 0.97×, but by less than the noise.
        assert_eq!(bulk.managed.verdict, Verdict::WithinNoise);
        assert_eq!(
            bulk.managed.verdict.text(bulk.noise),
            "within noise (±10 %)"
        );
        assert_eq!(bulk.native.ratio, None);
        // Without a second native topology there is no noise estimate: plain verdicts.
        assert_eq!(row(&summarize(&samples()), "bulk_1_up").noise, None);
    }

    #[test]
    fn a_ratio_beyond_the_noise_keeps_its_verdict() {
        let mut s = samples();
        for v in [10.0, 9.9, 10.1] {
            s.add("bulk_1_up", Mode::NativeB, v);
        }
        let rows = summarize(&s);
        let bulk = row(&rows, "bulk_1_up");
        // Native's own quartiles (9.5, 10.5) make the noise ±5 %.
        assert!((bulk.noise.unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(bulk.managed.verdict, Verdict::Miss); // 0.92×: 8 % off
        assert_eq!(bulk.released.verdict, Verdict::WithinNoise); // 0.99×
        let spread = bulk.native.spread.unwrap();
        assert_eq!(spread.n, 3);
        assert!((spread.p25 + 0.05).abs() < 1e-9 && (spread.p75 - 0.05).abs() < 1e-9);
    }

    #[test]
    fn unavailable_values_are_not_numbers() {
        let rows = summarize(&samples());
        let detect = row(&rows, "detect");
        assert_eq!(
            detect.managed.cell,
            Cell::Unavailable("n/a (not implemented)".into())
        );
        assert_eq!(detect.managed.verdict, Verdict::NoTarget);
        let restore = row(&rows, "restore");
        assert_eq!(restore.managed.verdict, Verdict::Miss);
        assert_eq!(restore.managed.ratio, None);
        assert_eq!(
            row(&rows, "idle_cpu").managed.verdict,
            Verdict::NotApplicable
        );
    }

    #[test]
    fn an_incomplete_run_says_so_at_the_top() {
        let samples = samples();
        let mut results = Results {
            meta: Meta {
                date_utc: "2026-01-01 00:00:00".into(),
                cores: 2,
                cpu_model: "test".into(),
                kernel: "6.18".into(),
                loadavg_at_start: "0".into(),
                loadavg_at_end: "0".into(),
                rackd_config: "built-in defaults".into(),
                duration_s: 1.0,
            },
            plan: Plan::quick(),
            rows: summarize(&samples),
            error: None,
            table_cost: None,
            samples,
        };
        assert!(!render_table(&results).contains("Incomplete"));
        results.error = Some("rackd in host \"server\": exited".into());
        let table = render_table(&results);
        let (head, _) = table.split_once("| metric |").unwrap();
        assert!(
            head.contains("**Incomplete") && head.contains("exited"),
            "{table}"
        );
    }

    #[test]
    fn numbers_get_sensible_precision() {
        assert_eq!(format_number(13_524.3), "13524");
        assert_eq!(format_number(42.17), "42.2");
        assert_eq!(format_number(0.123), "0.12");
    }
}
