//! Passing a socket over the control connection (`SCM_RIGHTS`), attached to a response line.
//!
//! The daemon sends the line with the descriptor in the same `sendmsg`; the kernel attaches it to
//! the line's first byte. The client must read that byte with `recvmsg` (a plain `read` would
//! discard the descriptor), so it reads the whole answer line this way.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Sends `data` with `fd` attached; returns how many bytes of `data` went (at least one, or an
/// error). The rest, if any, is sent as plain bytes by the caller.
pub fn send_with_fd(sock: &impl AsRawFd, data: &[u8], fd: RawFd) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Room for one descriptor, aligned as cmsghdr requires.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    // SAFETY: msg_control points to `control`, large enough for one cmsghdr with one int, so
    // CMSG_FIRSTHDR is non-null and its data area holds a RawFd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` points to live buffers described above.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Reads one line (up to and including `\n`) with `recvmsg`, keeping the first descriptor
/// attached to it; any further descriptors are closed.
pub fn read_line_with_fd(sock: &impl AsRawFd) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fd = None;
    // One byte at a time past the first read: nothing after the newline may be consumed.
    let mut buf = [0u8; 1];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 8]>();
        // SAFETY: `msg` points to live buffers described above.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_FIRSTHDR/NXTHDR walk
        // it within those bounds, and SCM_RIGHTS data holds whole descriptors it gave us.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / size_of::<RawFd>();
                    for i in 0..count {
                        let got = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                        if fd.is_none() {
                            fd = Some(got);
                        }
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "rackd closed the connection without answering",
            ));
        }
        line.push(buf[0]);
        if buf[0] == b'\n' {
            return Ok((line, fd));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_travels_with_its_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let line = b"{\"v\":1,\"ok\":true}\n";
        let sent = send_with_fd(&a, line, file.as_fd().as_raw_fd()).unwrap();
        (&a).write_all(&line[sent..]).unwrap();
        (&a).write_all(b"next").unwrap();
        let (got, fd) = read_line_with_fd(&b).unwrap();
        assert_eq!(got, line);
        let fd = fd.expect("descriptor attached");
        let mut received = std::fs::File::from(fd);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut received, &mut text).unwrap();
        assert!(text.starts_with(&std::process::id().to_string()), "{text}");
        let mut rest = [0u8; 4];
        std::io::Read::read_exact(&mut &b, &mut rest).unwrap();
        assert_eq!(&rest, b"next", "nothing after the line was consumed");
    }

    #[test]
    fn a_line_without_descriptor_reads_as_such() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"plain\n").unwrap();
        let (line, fd) = read_line_with_fd(&b).unwrap();
        assert_eq!((line.as_slice(), fd.is_none()), (&b"plain\n"[..], true));
        drop(a);
        let e = read_line_with_fd(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
