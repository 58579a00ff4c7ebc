//! The checkpoint hook (issue 9): capture a managed connection into a sealed blob and restore
//! it into a new socket on this or another host. docs/checkpoint.md describes the design.
//!
//! - [`repair`]: the kernel side (`pidfd_getfd`, `TCP_REPAIR`): socket in, image out, and back.
//! - [`blob`]: the versioned, authenticated container the image and the engine's record travel in.
//! - [`service`]: the daemon's operations, driving the engine and the two above.

pub mod blob;
pub mod repair;
pub mod service;
