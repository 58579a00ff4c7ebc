//! The client side of rackd's control protocol, and the protocol types both sides share.
//!
//! The protocol is JSON lines over a unix stream socket; README.md is its specification.

pub mod client;
pub mod fdpass;
pub mod proto;
pub mod render;
pub mod server;
