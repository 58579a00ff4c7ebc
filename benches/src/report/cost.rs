//! The per-packet cost of rackd's nftables table, from the paired round-trip runs of
//! [`measure::table_cost`](crate::measure::table_cost).

use serde::Serialize;

use crate::metrics::Mode;
use crate::samples::Samples;
use crate::stats::{median, quantile};

/// Per pair: median round trip with the table minus without, in ns.
pub const DELTA_KEY: &str = "table_cost_delta_ns";
/// Per pair: median round trip without the table, in ns.
pub const BASE_KEY: &str = "table_cost_base_ns";

/// Times a round trip passes through rackd's chains when both hosts have the table: the
/// request leaves the client (chain `out`) and arrives at the server (chain `pre`), the answer
/// the other way round. Each packet is one skb, evaluated once per chain.
pub const TRAVERSALS_PER_ROUND_TRIP: f64 = 4.0;

/// What the paired runs show.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TableCost {
    /// Pairs of runs (one with, one without the table, order alternating).
    pub pairs: usize,
    /// Median round trip without the table, ns.
    pub base_ns: f64,
    /// Median over pairs of (with − without), ns per round trip.
    pub delta_ns: f64,
    /// First and third quartile of the per-pair differences, ns.
    pub delta_p25_ns: f64,
    /// See `delta_p25_ns`.
    pub delta_p75_ns: f64,
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
            s.add(BASE_KEY, Mode::TableOnly, b);
        }
        let c = TableCost::from_samples(&s).unwrap();
        assert_eq!(c.pairs, 3);
        assert_eq!(c.delta_ns, 400.0);
        assert_eq!(c.per_traversal_ns, 100.0);
        assert!((c.share_of_round_trip - 0.01).abs() < 1e-12);
        assert_eq!((c.delta_p25_ns, c.delta_p75_ns), (100.0, 600.0));
    }
}
