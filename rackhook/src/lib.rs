//! The library checkpoint libraries link to move a rackd-managed TCP connection: `checkpoint`
//! captures the connection of a (stopped) process's socket into a sealed blob, `restore` turns
//! the blob into a new connected socket on this host, at the same or another address.
//!
//! A thin layer over rackd's control socket ([`rackctl::client::Client`]); the daemon does the
//! work and needs the caller to be root. C programs use the same calls through the C ABI in
//! [`ffi`] and `include/rackhook.h` (docs/checkpoint.md, "Library and C ABI").
//!
//! The control socket is `$RACKD_CONTROL_SOCKET`, or [`DEFAULT_CONTROL_SOCKET`] when that is
//! unset or empty.

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rackctl::client::{Client, ClientError};
use rackctl::proto::ErrorCode;
use rackctl::server::MAX_ATTACHMENT;

pub mod ffi;

/// The environment variable naming rackd's control socket.
pub const CONTROL_SOCKET_ENV: &str = "RACKD_CONTROL_SOCKET";

/// rackd's control socket when [`CONTROL_SOCKET_ENV`] is not set.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/rackd/control.sock";

/// Why a checkpoint or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rackd refused, or could not be reached; the message is the daemon's (or names the
    /// control socket that could not be used).
    #[error(transparent)]
    Rackd(#[from] ClientError),
    /// Process ids start at 1.
    #[error("invalid pid {0}: a process id is a positive number")]
    InvalidPid(i64),
    #[error("invalid file descriptor {0}: descriptors are not negative")]
    InvalidFd(i64),
    #[error("the blob is empty: pass the bytes a checkpoint returned")]
    EmptyBlob,
    #[error("the blob is {0} bytes, more than rackd accepts ({MAX_ATTACHMENT})")]
    BlobTooLarge(u64),
    /// A C caller passed NULL where the call needs a pointer (the argument's name).
    #[error("{0} is NULL")]
    NullArgument(&'static str),
    /// The local address given to a restore is not an IP address.
    #[error("invalid local address {0:?}: expected an IPv4 or IPv6 address such as 203.0.113.2")]
    InvalidLocal(String),
    /// A bug in this library, caught before it could unwind into a C caller.
    #[error("internal error in rackhook (please report): {0}")]
    Internal(String),
}

impl Error {
    /// rackd's error code, when the daemon answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Rackd(e) => e.code(),
            _ => None,
        }
    }
}

/// rackd's control socket: `$RACKD_CONTROL_SOCKET`, else [`DEFAULT_CONTROL_SOCKET`].
pub fn control_socket() -> PathBuf {
    control_socket_from(std::env::var_os(CONTROL_SOCKET_ENV))
}

fn control_socket_from(var: Option<OsString>) -> PathBuf {
    match var {
        Some(path) if !path.is_empty() => path.into(),
        _ => DEFAULT_CONTROL_SOCKET.into(),
    }
}

/// Captures the connection of socket `fd` in process `pid` and returns the sealed blob. Stop
/// the process first; the socket is frozen afterwards (it sends nothing, not even on close), so
/// end the process once the blob is safe.
pub fn checkpoint(pid: u32, fd: RawFd) -> Result<Vec<u8>, Error> {
    checkpoint_at(&control_socket(), pid, fd)
}

/// [`checkpoint`] through the control socket at `socket`.
pub fn checkpoint_at(socket: &Path, pid: u32, fd: RawFd) -> Result<Vec<u8>, Error> {
    if pid == 0 {
        return Err(Error::InvalidPid(0));
    }
    if fd < 0 {
        return Err(Error::InvalidFd(fd.into()));
    }
    let captured = Client::connect(socket)?.checkpoint(pid, fd)?;
    Ok(captured.blob)
}

/// Restores `blob` into a new connected socket on this host, bound to `local` (an address of
/// this host; the kernel's choice of source towards the peer when `None`). The descriptor is
/// close-on-exec.
pub fn restore(blob: &[u8], local: Option<IpAddr>) -> Result<OwnedFd, Error> {
    restore_at(&control_socket(), blob, local)
}

/// [`restore`] through the control socket at `socket`.
pub fn restore_at(socket: &Path, blob: &[u8], local: Option<IpAddr>) -> Result<OwnedFd, Error> {
    check_blob_len(blob.len())?;
    let restored = Client::connect(socket)?.restore(blob, local)?;
    Ok(restored.socket)
}

/// A blob rackd could accept is not empty and not larger than the protocol's limit.
fn check_blob_len(len: usize) -> Result<(), Error> {
    match len as u64 {
        0 => Err(Error::EmptyBlob),
        len if len > MAX_ATTACHMENT => Err(Error::BlobTooLarge(len)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISSING: &str = "/nonexistent/rackhook-test/control.sock";

    #[test]
    fn the_control_socket_comes_from_the_environment_or_the_default() {
        assert_eq!(control_socket_from(None), Path::new(DEFAULT_CONTROL_SOCKET));
        assert_eq!(
            control_socket_from(Some("".into())),
            Path::new(DEFAULT_CONTROL_SOCKET)
        );
        assert_eq!(
            control_socket_from(Some("/tmp/other.sock".into())),
            Path::new("/tmp/other.sock")
        );
    }

    #[test]
    fn a_missing_control_socket_is_named_in_the_error() {
        let socket = Path::new(MISSING);
        let e = checkpoint_at(socket, 1, 3).unwrap_err();
        assert!(matches!(e, Error::Rackd(ClientError::NoSocket(_))), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("is rackd running? no control socket at {MISSING} (see --control-socket)")
        );
        let e = restore_at(socket, b"RKCP", None).unwrap_err();
        assert!(e.to_string().contains(MISSING), "{e}");
        assert_eq!(e.code(), None);
    }

    #[test]
    fn arguments_are_checked_before_rackd_is_asked() {
        // The socket does not exist: each of these errors must come before connecting.
        let socket = Path::new(MISSING);
        let e = checkpoint_at(socket, 0, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid pid 0: a process id is a positive number"
        );
        let e = checkpoint_at(socket, 1, -1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid file descriptor -1: descriptors are not negative"
        );
        let e = restore_at(socket, &[], None).unwrap_err();
        assert!(matches!(e, Error::EmptyBlob), "{e:?}");
        // Zeroed pages are not touched: this costs no memory.
        let huge = vec![0u8; MAX_ATTACHMENT as usize + 1];
        let e = restore_at(socket, &huge, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the blob is 268435457 bytes, more than rackd accepts ({MAX_ATTACHMENT})")
        );
    }

    #[test]
    fn daemon_refusals_keep_rackd_code_and_message() {
        let line = r#"{"v":1,"ok":false,"error":{"code":"invalid_state","message":"blob authentication failed"}}"#;
        let e = Error::from(rackctl::client::decode_response(line).unwrap_err());
        assert_eq!(e.code(), Some(ErrorCode::InvalidState));
        assert_eq!(
            e.to_string(),
            "rackd refused (invalid_state): blob authentication failed"
        );
    }
}
