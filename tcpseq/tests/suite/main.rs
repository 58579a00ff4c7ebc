//! Integration tests for tcpseq, one binary: views cross-checked against etherparse, builders,
//! rewrites, property tests and a fixed-seed robustness run.

mod builders;
mod common;
mod crosscheck;
mod properties;
mod rewrites;
mod robustness;
