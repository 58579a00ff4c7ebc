//! rackd: keeps TCP connections alive across outages, address changes and migration.
//!
//! The daemon's I/O edges live here; protocol logic lives in the `edp` and `tcpseq` crates and in
//! the sans-IO connection state machines.

pub mod addrs;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod edp_probe;
pub mod engine;
pub mod inject;
pub mod packets;
pub mod persist;
pub mod queue;
pub mod rules;
pub mod service;
pub mod sockdiag;
pub mod sockets;
pub mod status;
pub mod sys;
