//! The per-packet cost of rackd's nftables table, from the paired round-trip runs of
//! [`measure::table_cost`](crate::measure::table_cost).

use serde::Serialize;

use crate::metrics::Mode;
use crate::samples::Samples;
use crate::stats::{median, quantile};

/// Per round: median round trip with rackd's table minus without, in ns.
pub const DELTA_KEY: &str = "table_cost_delta_ns";
/// Per round: median round trip with empty chains at rackd's hooks minus without, in ns.
pub const HOOKS_KEY: &str = "table_cost_hooks_ns";
/// Per round: median round trip without the table, in ns.
pub const BASE_KEY: &str = "table_cost_base_ns";

/// Times a round trip passes through rackd's chains when both hosts have the table: the
/// request leaves the client (chain `out`) and arrives at the server (chain `pre`), the answer
/// the other way round. Each packet is one skb, evaluated once per chain.
pub const TRAVERSALS_PER_ROUND_TRIP: f64 = 4.0;

/// What the paired runs show.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TableCost {
    /// Rounds of runs (with rackd's table, with empty chains, without; order rotating).
    pub pairs: usize,
    /// Median round trip without the table, ns.
    pub base_ns: f64,
    /// Median over pairs of (with − without), ns per round trip.
    pub delta_ns: f64,
    /// First and third quartile of the per-pair differences, ns.
    pub delta_p25_ns: f64,
    /// See `delta_p25_ns`.
    pub delta_p75_ns: f64,
    /// Median over rounds of (empty chains − without), ns per round trip: the part of
    /// `delta_ns` that entering netfilter at those hooks costs, whatever the rules.
    pub hooks_ns: Option<f64>,
    /// `delta_ns` per chain traversal, ns.
    pub per_traversal_ns: f64,
    /// `delta_ns` / `base_ns`.
    pub share_of_round_trip: f64,
}

impl TableCost {
    /// The summary of the table-cost samples; None if there are none.
    pub fn from_samples(samples: &Samples) -> Option<TableCost> {
        let deltas = samples.get(DELTA_KEY, Mode::TableOnly);
        let base_ns = median(samples.get(BASE_KEY, Mode::TableOnly))?;
        let delta_ns = median(deltas)?;
        Some(TableCost {
            pairs: deltas.len(),
            base_ns,
            delta_ns,
            hooks_ns: median(samples.get(HOOKS_KEY, Mode::TableOnly)),
            delta_p25_ns: quantile(deltas, 0.25)?,
            delta_p75_ns: quantile(deltas, 0.75)?,
            per_traversal_ns: delta_ns / TRAVERSALS_PER_ROUND_TRIP,
            share_of_round_trip: delta_ns / base_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_the_median_pair_difference() {
        let mut s = Samples::default();
        assert_eq!(TableCost::from_samples(&s), None);
        for (d, b) in [(400.0, 40_000.0), (-200.0, 41_000.0), (800.0, 39_000.0)] {
            s.add(DELTA_KEY, Mode::TableOnly, d);
            s.add(HOOKS_KEY, Mode::TableOnly, d / 2.0);
            s.add(BASE_KEY, Mode::TableOnly, b);
        }
        let c = TableCost::from_samples(&s).unwrap();
        assert_eq!(c.pairs, 3);
        assert_eq!(c.delta_ns, 400.0);
        assert_eq!(c.per_traversal_ns, 100.0);
        assert_eq!(c.hooks_ns, Some(200.0));
        assert!((c.share_of_round_trip - 0.01).abs() < 1e-12);
        assert_eq!((c.delta_p25_ns, c.delta_p75_ns), (100.0, 600.0));
    }
}
