//! The netlink socket that receives queued packets and sends verdicts.
//!
//! Written directly over `libc` rather than the `nfq` crate, which cannot expose its descriptor to
//! an event loop, batch verdicts or size the receive buffer (docs/decisions.md).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::wire::{self, Batch, Message, CFG_F_FAIL_OPEN, CFG_F_GSO};

/// How a queue is bound.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Queue numbers to bind (one per fan-out slot).
    pub queues: Vec<u16>,
    /// Kernel-side queue length before packets are dropped (or accepted, with fail-open).
    pub max_len: u32,
    /// Receive buffer size; the 208 KiB default overflows under load (DESIGN.md §4).
    pub rcvbuf: usize,
    /// Accept packets instead of dropping them when the queue is full.
    pub fail_open: bool,
    /// Let the kernel segment GSO packets before queueing them, so each queued packet is at most
    /// one MSS: a packet rackd rewrites must fit in a verdict (64 KiB) and be copied whole.
    /// Off, GSO packets are queued as they are, which is cheaper when rackd only decides.
    pub segment_gso: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            queues: vec![0],
            max_len: 8192,
            rcvbuf: 8 << 20,
            fail_open: true,
            segment_gso: false,
        }
    }
}

/// A bound nfnetlink_queue socket in non-blocking mode.
#[derive(Debug)]
pub struct QueueSocket {
    fd: OwnedFd,
    queues: Vec<u16>,
}

impl QueueSocket {
    /// Opens the socket and binds every queue in `opts`, waiting for the kernel to confirm each.
    pub fn open(opts: &QueueOptions) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_rcvbuf(fd.as_raw_fd(), opts.rcvbuf)?;
        set_recv_timeout(fd.as_raw_fd(), Duration::from_secs(2))?;
        let sock = Self {
            fd,
            queues: opts.queues.clone(),
        };
        let mut flags = if opts.segment_gso { 0 } else { CFG_F_GSO };
        if opts.fail_open {
            flags |= CFG_F_FAIL_OPEN;
        }
        for &q in &opts.queues {
            let mut b = Batch::new();
            let seq_bind = b.bind(q);
            let seq_params = b.params(q, 0xffff, opts.max_len, flags);
            sock.send(&b)?;
            sock.wait_ack(seq_bind, "bind queue", q)?;
            sock.wait_ack(seq_params, "configure queue", q)?;
        }
        set_nonblocking(sock.fd.as_raw_fd())?;
        Ok(sock)
    }

    pub fn queues(&self) -> &[u16] {
        &self.queues
    }

    /// Sends every message of `batch` in one datagram.
    pub fn send(&self, batch: &Batch) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = batch.as_bytes();
        let mut addr = kernel_addr();
        loop {
            // SAFETY: `bytes` is a valid buffer for its length; `addr` is a sockaddr_nl.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&mut addr as *mut libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Receives one datagram (possibly many messages). `WouldBlock` when none is waiting;
    /// `ENOBUFS` means the kernel dropped messages because the buffer was full.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is a valid writable buffer for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn wait_ack(&self, seq: u32, what: &str, queue: u16) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < deadline {
            let n = self.recv(&mut buf)?;
            for msg in wire::messages(&buf[..n]) {
                match msg {
                    Ok(Message::Ack { seq: s, errno }) if s == seq => {
                        return if errno == 0 {
                            Ok(())
                        } else {
                            let e = io::Error::from_raw_os_error(errno);
                            Err(io::Error::new(e.kind(), format!("{what} {queue}: {e}")))
                        };
                    }
                    // Packets may already arrive; they are re-queued by the kernel on
                    // unbind or accepted by fail-open, so dropping them here loses nothing
                    // that TCP does not retransmit.
                    _ => {}
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} {queue}: no answer from the kernel"),
        ))
    }
}

impl AsFd for QueueSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for QueueSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (pid 0 = kernel).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

fn set_rcvbuf(fd: RawFd, size: usize) -> io::Result<()> {
    let size = size.min(i32::MAX as usize) as libc::c_int;
    // SO_RCVBUFFORCE exceeds rmem_max (needs CAP_NET_ADMIN, which rackd has); fall back to the
    // capped SO_RCVBUF otherwise.
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `size` lives for the call and its length is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

fn set_recv_timeout(fd: RawFd, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as _,
    };
    // SAFETY: `tv` lives for the call and its length is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
