//! How much of each measurement a run does: the full benchmark or the CI smoke run.

use serde::Serialize;

/// Sizes and repetitions of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `full` or `quick`.
    pub name: &'static str,
    /// Repetitions of the bulk, latency and connection measurements.
    pub reps: u32,
    /// Bytes per bulk transfer (split over the flows).
    pub bulk_bytes: u64,
    /// Measured round trips per latency run.
    pub round_trips: u64,
    /// Connections per connection-rate run.
    pub connections: u64,
    /// Idle connections held for the memory measurement.
    pub idle_connections: u64,
    /// Repetitions of the idle-connection measurement.
    pub idle_reps: u32,
    /// How long daemon CPU is sampled while the idle connections are held.
    pub idle_cpu_window_ms: u64,
    /// Repetitions of the failure/restore measurement.
    pub failure_reps: u32,
    /// How long the path stays cut (at least; see `held_ms`). Well beyond rackd's default
    /// detection time (4 s), so that the kernels' retransmission timers have backed off and
    /// data flows again soon after the restore only if rackd resumes the connection.
    pub outage_ms: u64,
    /// How long the path stays cut after the client's daemon noticed the failure, at least:
    /// the connection is held (suspended) for that long before the path returns.
    pub held_ms: u64,
    /// How long to wait for the daemon to notice a cut before calling it a miss.
    pub detect_limit_ms: u64,
    /// Interval between the bytes the failure probe sends.
    pub trickle_interval_ms: u64,
    /// Pairs of round-trip runs, with and without rackd's table, for its per-packet cost.
    pub cost_pairs: u32,
    /// Round trips per run of a pair.
    pub cost_round_trips: u64,
}

impl Plan {
    /// The full benchmark (`make bench`): medians of eleven short runs (single-flow bulk
    /// throughput varies by ±40 % from run to run here, so many short runs interleaved across
    /// the modes beat a few long ones), 10,000 idle connections, 10 s outages; about seven
    /// minutes on two cores.
    pub fn full() -> Plan {
        Plan {
            name: "full",
            reps: 11,
            bulk_bytes: 1 << 30,
            round_trips: 10_000,
            connections: 1_000,
            idle_connections: 10_000,
            idle_reps: 3,
            idle_cpu_window_ms: 5_000,
            failure_reps: 3,
            outage_ms: 10_000,
            held_ms: 5_000,
            detect_limit_ms: 10_000,
            trickle_interval_ms: 5,
            cost_pairs: 21,
            cost_round_trips: 10_000,
        }
    }

    /// The smoke run for CI: every path once, small sizes, well under a minute.
    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            reps: 1,
            bulk_bytes: 32 << 20,
            round_trips: 2_000,
            connections: 200,
            idle_connections: 500,
            idle_reps: 1,
            idle_cpu_window_ms: 1_000,
            failure_reps: 1,
            outage_ms: 4_500,
            held_ms: 1_000,
            detect_limit_ms: 6_000,
            trickle_interval_ms: 5,
            cost_pairs: 2,
            cost_round_trips: 1_000,
        }
    }
}
