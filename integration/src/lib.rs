//! End-to-end scenarios for rackd on the namespace harness (crate `netns-tests`).
//!
//! The library holds what the scenario tests and their helper program `rk-craft` share:
//! hand-made packets ([`craft`]), the catalogue of malformed SYNs ([`catalogue`]), a paced
//! SYN flood through a raw socket ([`flood`]), blind injection ([`inject`]), rackd in a test
//! host ([`daemon`]) and its memory ([`procfs`]).

#![forbid(unsafe_code)]

pub mod catalogue;
pub mod craft;
pub mod daemon;
pub mod flood;
pub mod inject;
pub mod procfs;
