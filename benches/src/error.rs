//! The benchmark's error type: every failure names what broke, so that a smoke run that fails
//! says why.

use std::io;
use std::path::PathBuf;

/// Result with the benchmark [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while benchmarking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Namespaces, nftables and NFQUEUE need root.
    #[error("the end-to-end benchmark needs root (network namespaces, nftables, NFQUEUE); effective uid is {euid}: run it as root")]
    NotRoot {
        /// The effective uid the process has.
        euid: u32,
    },
    /// Building a topology, running a program or injecting a fault failed.
    #[error(transparent)]
    Harness(#[from] netns_tests::Error),
    /// A rackd did not start, answer or behave as the scenario needs.
    #[error("rackd in host {host:?}: {detail}")]
    Daemon {
        /// The host the daemon runs in.
        host: String,
        /// What was wrong.
        detail: String,
    },
    /// A traffic program's result could not be read.
    #[error("`{command}` printed no readable result ({detail}): {output:?}")]
    BadResult {
        /// The command line.
        command: String,
        /// Why it could not be read.
        detail: String,
        /// What it printed.
        output: String,
    },
    /// A measurement produced something impossible (e.g. a wrong byte count).
    #[error("{mode}: {measurement}: {detail}")]
    Check {
        /// native, released or managed.
        mode: &'static str,
        /// Which measurement.
        measurement: &'static str,
        /// What was wrong, with the values seen.
        detail: String,
    },
    /// A /proc file of a daemon could not be read or parsed.
    #[error("reading {path}: {detail}")]
    Proc {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Writing the results failed.
    #[error("{context}: {source}")]
    Io {
        /// What the benchmark was doing.
        context: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Bad command-line arguments.
    #[error("{0}")]
    Usage(String),
    /// The run stopped early; the partial results were written.
    #[error("run incomplete (partial results written): {0}")]
    Incomplete(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
