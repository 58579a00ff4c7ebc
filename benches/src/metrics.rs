//! The metrics the benchmark reports, with their units and the targets of issue 10.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a measurement was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plain TCP, no rackd anywhere.
    Native,
    /// Plain TCP again, in a topology of its own: native against itself (A/A) shows how far
    /// two identical setups differ by chance, the noise floor of every ratio.
    NativeB,
    /// rackd's nftables table installed in both hosts, no daemon running (started, then
    /// SIGKILLed: the table stays and fails open). Isolates the per-packet cost of the chains.
    TableOnly,
    /// rackd on the client only: the server has none, so connections are released.
    Released,
    /// rackd on both hosts: connections are managed.
    Managed,
}

impl Mode {
    /// All modes, native first.
    pub const ALL: [Mode; 5] = [
        Mode::Native,
        Mode::NativeB,
        Mode::TableOnly,
        Mode::Released,
        Mode::Managed,
    ];

    /// `native`, `native-b`, `table-only`, `released` or `managed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::NativeB => "native-b",
            Mode::TableOnly => "table-only",
            Mode::Released => "released",
            Mode::Managed => "managed",
        }
    }

    /// Whether a rackd daemon runs in this mode.
    pub fn has_daemon(self) -> bool {
        matches!(self, Mode::Released | Mode::Managed)
    }

    /// Whether the mode serves only as a reference for the traffic measurements (noise floor,
    /// cost of the table) and sits out the failure scenario, where it would show nothing new.
    pub fn is_reference(self) -> bool {
        matches!(self, Mode::NativeB | Mode::TableOnly)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition a rackd mode's median must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// rackd / native at least this.
    RatioAtLeast(f64),
    /// rackd / native at most this.
    RatioAtMost(f64),
    /// rackd − native at most this, in the metric's unit.
    PlusAtMost(f64),
    /// The value itself at most this (no native counterpart).
    AtMost(f64),
}

impl Goal {
    /// Whether `value` (with `native` for ratios and differences) meets the goal; None if a
    /// native value is needed and missing.
    pub fn met(self, value: f64, native: Option<f64>) -> Option<bool> {
        Some(match self {
            Goal::RatioAtLeast(r) => value / native? >= r,
            Goal::RatioAtMost(r) => value / native? <= r,
            Goal::PlusAtMost(d) => value - native? <= d,
            Goal::AtMost(v) => value <= v,
        })
    }

    /// Whether the goal compares with native as a ratio (so the noise of ratios applies).
    pub fn is_ratio(self) -> bool {
        matches!(self, Goal::RatioAtLeast(_) | Goal::RatioAtMost(_))
    }

    /// The goal as the table shows it, e.g. `≥ 0.97×`.
    pub fn describe(self, unit: &str) -> String {
        match self {
            Goal::RatioAtLeast(r) => format!("≥ {r:.2}×"),
            Goal::RatioAtMost(r) => format!("≤ {r:.2}×"),
            Goal::PlusAtMost(d) => format!("≤ native + {d} {unit}"),
            Goal::AtMost(v) => format!("≤ {v} {unit}"),
        }
    }
}

/// One row of the results.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Key in the JSON.
    pub key: &'static str,
    /// Row label.
    pub label: &'static str,
    /// Unit of the values.
    pub unit: &'static str,
    /// Whether larger values are better (throughput) or worse (latency).
    pub higher_is_better: bool,
    /// Goal for released connections.
    pub released: Option<Goal>,
    /// Goal for managed connections.
    pub managed: Option<Goal>,
}

/// Throughput: managed ≥ 0.97× native, released ≥ 0.99× native.
const fn throughput(key: &'static str, label: &'static str) -> Metric {
    Metric {
        key,
        label,
        unit: "Gbit/s",
        higher_is_better: true,
        released: Some(Goal::RatioAtLeast(0.99)),
        managed: Some(Goal::RatioAtLeast(0.97)),
    }
}

/// Latency: managed ≤ 1.10× native; released "≥ 0.99× native" read as ≤ 1/0.99 ≈ 1.01×.
const fn latency(key: &'static str, label: &'static str) -> Metric {
    Metric {
        key,
        label,
        unit: "µs",
        higher_is_better: false,
        released: Some(Goal::RatioAtMost(1.01)),
        managed: Some(Goal::RatioAtMost(1.10)),
    }
}

/// Connection setup: ≤ native + 200 µs, for both rackd modes.
const CONNECT_GOAL: Option<Goal> = Some(Goal::PlusAtMost(200.0));

/// Every metric, in table order.
pub const METRICS: &[Metric] = &[
    throughput("bulk_1_up", "bulk 1 flow, client→server"),
    throughput("bulk_1_down", "bulk 1 flow, server→client"),
    throughput("bulk_8_up", "bulk 8 flows, client→server"),
    throughput("bulk_8_down", "bulk 8 flows, server→client"),
    latency("rr_p50", "1-byte request/response p50"),
    latency("rr_p99", "1-byte request/response p99"),
    Metric {
        key: "connect_p50",
        label: "connection setup (connect) p50",
        unit: "µs",
        higher_is_better: false,
        released: CONNECT_GOAL,
        managed: CONNECT_GOAL,
    },
    Metric {
        key: "connect_rate",
        label: "connections per second (sequential)",
        unit: "conn/s",
        higher_is_better: true,
        released: None,
        managed: None,
    },
    Metric {
        key: "detect",
        label: "time to detect a failure",
        unit: "ms",
        higher_is_better: false,
        released: None,
        managed: None,
    },
    Metric {
        key: "restore",
        label: "path restored → data flowing",
        unit: "ms",
        higher_is_better: false,
        released: None,
        managed: Some(Goal::AtMost(200.0)),
    },
    Metric {
        key: "resumed",
        label: "path restored → connection `connected` in rackd's status",
        unit: "ms",
        higher_is_better: false,
        released: None,
        managed: None,
    },
    Metric {
        key: "cpu_per_gb",
        label: "daemon CPU per GB transferred (all daemons)",
        unit: "ms/GB",
        higher_is_better: false,
        released: None,
        managed: None,
    },
    Metric {
        key: "daemon_rss",
        label: "daemon RSS after bulk (largest daemon)",
        unit: "KiB",
        higher_is_better: false,
        released: None,
        managed: None,
    },
    Metric {
        key: "idle_mem_per_conn",
        label: "daemon memory per idle connection",
        unit: "B",
        higher_is_better: false,
        released: None,
        managed: Some(Goal::AtMost(2048.0)),
    },
    Metric {
        key: "idle_cpu",
        label: "daemon CPU with the idle connections",
        unit: "% of a core",
        higher_is_better: false,
        released: None,
        managed: Some(Goal::AtMost(2.0)),
    },
];

/// The metric with `key`.
///
/// # Panics
/// For a key not in [`METRICS`] (a mistake in this crate).
pub fn metric(key: &str) -> &'static Metric {
    METRICS
        .iter()
        .find(|m| m.key == key)
        .unwrap_or_else(|| panic!("no metric {key:?}"))
}

impl Metric {
    /// The goal for `mode` (the reference modes have none).
    pub fn goal(&self, mode: Mode) -> Option<Goal> {
        match mode {
            Mode::Native | Mode::NativeB | Mode::TableOnly => None,
            Mode::Released => self.released,
            Mode::Managed => self.managed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_compare_against_native() {
        assert_eq!(Goal::RatioAtLeast(0.97).met(9.8, Some(10.0)), Some(true));
        assert_eq!(Goal::RatioAtLeast(0.97).met(9.6, Some(10.0)), Some(false));
        assert_eq!(Goal::RatioAtMost(1.10).met(11.5, Some(10.0)), Some(false));
        assert_eq!(Goal::PlusAtMost(200.0).met(250.0, Some(60.0)), Some(true));
        assert_eq!(Goal::PlusAtMost(200.0).met(300.0, Some(60.0)), Some(false));
        assert_eq!(Goal::AtMost(2048.0).met(100.0, None), Some(true));
        assert_eq!(Goal::RatioAtLeast(0.97).met(1.0, None), None);
    }

    #[test]
    fn metric_keys_are_unique() {
        for (i, m) in METRICS.iter().enumerate() {
            assert!(METRICS[..i].iter().all(|o| o.key != m.key), "{}", m.key);
        }
    }
}
