//! Everything measured in a run: the values per metric and mode, what could not be measured and
//! why, and the raw result of every program run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::Mode;

/// A metric that has no value for a mode, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unavailable {
    /// Shown in the table, e.g. `n/a (not implemented)`.
    pub reason: String,
    /// Whether this counts against the target (the feature exists but failed) or not (it does
    /// not exist yet).
    pub miss: bool,
}

/// One program run's raw result, kept for the JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawRun {
    /// Where it ran.
    pub mode: Mode,
    /// Which measurement.
    pub measurement: String,
    /// Repetition number, from 0.
    pub rep: u32,
    /// What it produced.
    pub data: serde_json::Value,
}

/// All samples of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Samples {
    /// Metric key → mode → one value per repetition.
    pub values: BTreeMap<String, BTreeMap<Mode, Vec<f64>>>,
    /// Metric key → mode → why there is no value.
    pub unavailable: BTreeMap<String, BTreeMap<Mode, Unavailable>>,
    /// Every program run, in order.
    pub raw: Vec<RawRun>,
}

impl Samples {
    /// Records one value of `metric` for `mode`.
    pub fn add(&mut self, metric: &str, mode: Mode, value: f64) {
        self.values
            .entry(metric.to_owned())
            .or_default()
            .entry(mode)
            .or_default()
            .push(value);
    }

    /// Records that `metric` has no value for `mode` (the last reason given wins).
    pub fn unavailable(&mut self, metric: &str, mode: Mode, reason: impl Into<String>, miss: bool) {
        self.unavailable
            .entry(metric.to_owned())
            .or_default()
            .insert(
                mode,
                Unavailable {
                    reason: reason.into(),
                    miss,
                },
            );
    }

    /// Keeps a program's raw result.
    pub fn raw(&mut self, mode: Mode, measurement: &str, rep: u32, data: impl Serialize) {
        self.raw.push(RawRun {
            mode,
            measurement: measurement.to_owned(),
            rep,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        });
    }

    /// The values of `metric` for `mode`.
    pub fn get(&self, metric: &str, mode: Mode) -> &[f64] {
        self.values
            .get(metric)
            .and_then(|m| m.get(&mode))
            .map_or(&[], Vec::as_slice)
    }

    /// Why `metric` has no value for `mode`, if recorded.
    pub fn why_unavailable(&self, metric: &str, mode: Mode) -> Option<&Unavailable> {
        self.unavailable.get(metric).and_then(|m| m.get(&mode))
    }
}
