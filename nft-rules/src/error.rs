//! Errors of this crate. Each names the operation, the object involved and the errno.

use std::io;

use crate::nl::reply::MalformedReply;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while installing, changing or removing the ruleset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel rejected one message of a batch; the whole batch was rolled back.
    #[error("{operation}: kernel rejected {object}: {} (errno {errno}){}", errno_text(*errno), detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rejected {
        /// What we were doing (`install`, `queue flows`, ...).
        operation: &'static str,
        /// The table, chain, set or rule the failing message carried.
        object: String,
        /// The kernel's errno.
        errno: i32,
        /// The kernel's extended-ack text, if any.
        detail: Option<String>,
    },
    /// A netlink socket operation failed.
    #[error("{operation}: netlink {step} failed: {source}")]
    Socket {
        /// What we were doing.
        operation: &'static str,
        /// The socket call that failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer every message of a batch (replies lost or never sent).
    #[error("{operation}: {missing} of {expected} messages were not acknowledged by the kernel")]
    MissingAcks {
        /// What we were doing.
        operation: &'static str,
        /// Messages without an answer.
        missing: usize,
        /// Messages sent.
        expected: usize,
    },
    /// The kernel's reply did not parse.
    #[error("{operation}: {source}")]
    Malformed {
        /// What we were doing.
        operation: &'static str,
        /// Where the reply was malformed.
        #[source]
        source: MalformedReply,
    },
    /// Neither the native `queue` expression nor the xtables NFQUEUE target is usable.
    #[error("no way to queue packets: native queue expression: {native}; xtables NFQUEUE target: {compat}")]
    NoQueueMode {
        /// Why the native expression failed.
        native: Box<Error>,
        /// Why the compat target failed.
        compat: Box<Error>,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// A flow key mixes IPv4 and IPv6 addresses.
    #[error("flow {src} -> {dst} mixes IPv4 and IPv6")]
    MixedFamilies {
        /// Source of the offending key.
        src: std::net::SocketAddr,
        /// Destination of the offending key.
        dst: std::net::SocketAddr,
    },
}

/// The OS's description of an errno, without std's " (os error N)" suffix.
fn errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_names_operation_object_and_errno() {
        let e = Error::Rejected {
            operation: "install",
            object: "set flows4".into(),
            errno: libc::EINVAL,
            detail: Some("bad key".into()),
        };
        assert_eq!(
            e.to_string(),
            "install: kernel rejected set flows4: Invalid argument (errno 22): bad key"
        );
    }
}
