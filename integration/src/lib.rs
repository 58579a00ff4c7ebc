//! End-to-end scenarios for rackd on the namespace harness (crate `netns-tests`).
//!
//! The library holds what the scenario tests and their helper programs share:
//! - hostile input (`rk-craft`): hand-made packets ([`craft`]), the catalogue of malformed SYNs
//!   ([`catalogue`]), a paced SYN flood through a raw socket ([`flood`]), blind injection
//!   ([`inject`]);
//! - real programs: the stage with its faults ([`testbed`]), servers from Debian packages set up
//!   in a scratch directory ([`programs`], [`scratch`], [`service`]), many connections in one
//!   process (`rk-fanout`, [`fanout`]) and the long soak run (`rk-soak`, [`soak`]);
//! - rackd in a test host ([`daemon`]) and its memory ([`procfs`]).

#![forbid(unsafe_code)]

pub mod catalogue;
pub mod craft;
pub mod daemon;
pub mod fanout;
pub mod flags;
pub mod flood;
pub mod inject;
pub mod procfs;
pub mod programs;
pub mod scratch;
pub mod service;
pub mod soak;
pub mod testbed;
