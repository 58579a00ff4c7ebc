//! End-to-end benchmark of rackd against native TCP, on the namespace harness (`netns-tests`).
//!
//! One run measures three setups side by side, each a client — router — server topology:
//! **native** (no rackd), **released** (rackd on the client only, so its connections to the
//! server are released) and **managed** (rackd on both hosts). Traffic comes from `rkb-peer`
//! ([`peer`]), real processes in the hosts; the daemons are watched through their control
//! sockets and /proc. The results ([`report`]) are a markdown table of medians, ratios to native
//! and verdicts against the targets of issue 10 ([`metrics`]), a JSON file with every sample
//! and an SVG plot of the ratios.
//!
//! The `e2e` binary runs it: `e2e [--quick] [--out DIR]`. Root is required.

#![forbid(unsafe_code)]

pub mod daemon;
mod error;
pub mod measure;
pub mod metrics;
pub mod peer;
pub mod plan;
pub mod procstat;
pub mod report;
pub mod run;
pub mod samples;
pub mod scenario;
pub mod stats;

pub use error::{Error, Result};
