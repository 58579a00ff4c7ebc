//! The harness's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result with the harness [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while building, changing or using a test topology.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The harness creates namespaces, links and rules: it needs root.
    #[error("the network-namespace harness needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN); effective uid is {euid}: run the tests as root")]
    NotRoot {
        /// The effective uid the process has.
        euid: u32,
    },
    /// A program could not be started at all.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why `exec` failed.
        source: io::Error,
    },
    /// A setup command (ip, nft, tc, sysctl) or a checked program exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A program did not finish (or did not print what was awaited) in time.
    #[error("`{command}` {what} within {timeout:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// What did not happen, e.g. "did not exit".
        what: String,
        /// How long the harness waited.
        timeout: Duration,
    },
    /// A host name that the topology does not have.
    #[error("no host named {0:?} in this topology")]
    UnknownHost(String),
    /// A host name that cannot be used (interface names are limited to 15 bytes).
    #[error("invalid host name {name:?}: {reason}")]
    InvalidHostName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More hosts than the documentation address ranges have room for.
    #[error("{count} hosts asked for; the address plan has room for {max}")]
    TooManyHosts {
        /// Hosts asked for.
        count: usize,
        /// Hosts the address plan supports.
        max: usize,
    },
    /// A new address that overlaps another link of the topology or is not a host address.
    #[error("address {addr} cannot be given to host {host:?}: {reason}")]
    BadAddress {
        /// The host.
        host: String,
        /// The address asked for.
        addr: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A workspace program was not found where cargo puts binaries.
    #[error("program {name:?} not found (looked at {looked:?}); build it first, e.g. `cargo build --workspace --bins`")]
    BinaryNotFound {
        /// The binary name.
        name: String,
        /// The paths tried.
        looked: Vec<PathBuf>,
    },
    /// A program's output was not what the harness expected.
    #[error("unexpected output from `{command}`: {detail}: {output:?}")]
    BadOutput {
        /// The command line.
        command: String,
        /// What was wrong.
        detail: String,
        /// The offending output.
        output: String,
    },
    /// Local file or I/O trouble in the harness itself.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The I/O error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
