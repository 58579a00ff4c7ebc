//! End-to-end test harness for rackd: test hosts in network namespaces behind a router.
//!
//! A [`Topology`] is a set of network namespaces — one per host plus a router — joined by veth
//! pairs, each host with an IPv4 and an IPv6 address from the documentation ranges. Through it a
//! test can break paths ([`Topology::cut`], [`Topology::link_down`], [`Topology::change_address`],
//! [`Topology::rate_limit`]), run unmodified programs inside a host ([`Host::spawn`],
//! [`Host::run`]) and check that data crossed intact ([`stream_both_ways`]).
//!
//! Everything a topology creates is removed when it is dropped, also while a test panics:
//! processes are killed by pid and the namespaces (with their links, addresses and rules) deleted.
//! Namespaces left behind by a run that was killed are removed by the next [`Topology`] build.
//!
//! The harness needs root; without it [`Topology::build`](TopologyBuilder::build) fails with
//! [`Error::NotRoot`].

#![forbid(unsafe_code)]

mod bins;
mod cmd;
mod error;
mod faults;
mod firewall;
mod naming;
mod netcat;

mod process;
pub mod stream;
mod sync;
mod topology;
mod transfer;

pub use bins::workspace_bin;
pub use error::{Error, Result};
pub use netcat::{nc_transfer, NcReport};

pub use process::{HostCommand, Output, Process};
pub use topology::{Addresses, Host, Topology, TopologyBuilder};
pub use transfer::{stream_both_ways, Family, StreamOptions, StreamRun, TwoWayReport};
