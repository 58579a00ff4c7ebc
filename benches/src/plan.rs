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
    /// How long the path stays cut (at least; longer if the daemon needs longer to notice).
    /// Longer than rackd's default detection time (4 s), so every mode sees the same outage.
    pub outage_ms: u64,
    /// How long to wait for the daemon to notice a cut before calling it a miss.
    pub detect_limit_ms: u64,
    /// Interval between the bytes the failure probe sends.
    pub trickle_interval_ms: u64,
}

impl Plan {
    /// The full benchmark (`make bench`): medians of five, 10,000 idle connections; about
    /// five minutes on two cores.
    pub fn full() -> Plan {
        Plan {
            name: "full",
            reps: 5,
            bulk_bytes: 2 << 30,
            round_trips: 20_000,
            connections: 2_000,
            idle_connections: 10_000,
            idle_reps: 3,
            idle_cpu_window_ms: 5_000,
            failure_reps: 3,
            outage_ms: 4_500,
            detect_limit_ms: 10_000,
            trickle_interval_ms: 5,
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
            detect_limit_ms: 6_000,
            trickle_interval_ms: 5,
        }
    }
}
