//! Handing a restored socket to a program: as descriptor 3 (`RACKHOOK_FD=3` in its
//! environment), or as its stdin and stdout.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};

/// The descriptor number a program receives the socket as.
pub const SOCKET_FD: i32 = 3;

/// Runs `program` with the socket and waits for it.
pub fn run(
    program: &OsString,
    args: &[OsString],
    socket: OwnedFd,
    stdio: bool,
) -> io::Result<ExitStatus> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if stdio {
        cmd.stdin(Stdio::from(socket.try_clone()?));
        cmd.stdout(Stdio::from(socket));
        return cmd.status();
    }
    let raw = socket.as_raw_fd();
    cmd.env("RACKHOOK_FD", SOCKET_FD.to_string());
    // SAFETY: the closure runs in the child between fork and exec and calls only dup2 and
    // fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if raw == SOCKET_FD {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                if libc::fcntl(raw, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, SOCKET_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status();
    drop(socket);
    status
}

/// The signal that ended a program, for an exit status of 128 + n.
pub fn signal_of(status: &ExitStatus) -> u8 {
    status
        .signal()
        .and_then(|s| u8::try_from(s).ok())
        .unwrap_or(0)
        .min(127)
}
