//! The kernel side of a checkpoint: a TCP socket read and re-created through `TCP_REPAIR`.
//!
//! [`grab`] duplicates a socket out of another process (`pidfd_getfd`), [`capture`] freezes it in
//! repair mode and reads everything the kernel holds for it into a [`SocketImage`], and
//! [`Prepared::new`] builds a new socket from an image in two steps: everything that sends nothing
//! first (addresses, sequence numbers, options, window, timestamp clock, the receive queue), so a
//! restore that is refused or times out leaves no trace on the wire; [`Prepared::finish`] then
//! refills the send queue and leaves repair mode once the peer has accepted the move.
//!
//! The send queue goes back in two parts, as it was: the part that had been sent is written in
//! repair mode, where the kernel counts it as sent without transmitting it (the socket's snd_nxt
//! is the original's again), and only the unsent rest after repair mode. The peer may hold and
//! acknowledge any byte that had been sent, and the kernel drops every segment — data included —
//! whose acknowledgement lies beyond snd_nxt (RFC 9293 3.10.7.4); with the whole queue written as
//! new data, the peer's segments were all dropped until the socket had retransmitted up to what
//! the peer acknowledged, which its congestion window could leave out of reach for ever.
//!
//! Sequence numbers and the timestamp clock are restored as they were, so the peer sees the same
//! stream and needs no sequence or timestamp translation; only addresses may differ.
//!
//! The order of operations follows the kernel's requirements (net/ipv4/tcp.c): queue sequence
//! numbers only while the socket is closed; options only once it is established and before any
//! data was sent; the window only once the receive sequence is known.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::{bind, connect};

use serde::{Deserialize, Serialize};

/// `TCP_REPAIR_QUEUE` values (include/uapi/linux/tcp.h).
const TCP_NO_QUEUE: libc::c_int = 0;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
/// `TCP_REPAIR` values: on, off (sending a window probe so the peer learns our window).
const REPAIR_ON: libc::c_int = 1;
const REPAIR_OFF: libc::c_int = 0;
/// `TCP_REPAIR_OPTIONS` codes (the TCP option kinds).
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
/// `tcpi_options` bits.
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
/// Queue sizes (`SIOCINQ` = `FIONREAD`, `SIOCOUTQ` = `TIOCOUTQ`, unsent part `SIOCOUTQNSD`).
const SIOCINQ: libc::c_ulong = 0x541B;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;
/// `tcpi_state` of an established connection.
const TCP_ESTABLISHED: u8 = 1;
/// Largest write into a queue in repair mode: the receive queue is refilled with one linear
/// buffer per call, which large sizes cannot get.
const REFILL_CHUNK: usize = 64 * 1024;

/// Largest value `TCP_MAXSEG` accepts (`MAX_TCP_WINDOW`).
const MAX_USER_MSS: u32 = 32767;

/// `struct tcp_repair_opt`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RepairOpt {
    code: u32,
    val: u32,
}

/// `struct tcp_repair_window`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// Options negotiated in the handshake, as `TCP_REPAIR_OPTIONS` restores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiated {
    pub mss: u32,
    pub sack: bool,
    /// Timestamps on: the socket's clock (`TCP_TIMESTAMP`) is in [`SocketImage::ts_clock`].
    pub timestamps: bool,
    /// (send, receive) window scale, when negotiated.
    pub wscale: Option<(u8, u8)>,
}

/// Options the application set that change how the socket behaves on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppOptions {
    pub nodelay: bool,
    pub keepalive: bool,
}

/// Everything the kernel held for an established TCP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketImage {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Sequence number of the first byte in the send queue (the oldest unacknowledged).
    pub snd_una: u32,
    /// How many bytes of the send queue's tail were never sent (the rest is in flight).
    pub unsent: u32,
    /// Sequence number of the first byte in the receive queue (the next the application reads).
    pub rcv_copied: u32,
    pub negotiated: Negotiated,
    pub window: Window,
    /// The socket's timestamp clock (`TCP_TIMESTAMP`), 0 without timestamps.
    pub ts_clock: u32,
    pub app: AppOptions,
    /// Received, not yet read by the application.
    #[serde(with = "serde_bytes_compat")]
    pub recv_queue: Vec<u8>,
    /// Sent but unacknowledged, then not yet sent.
    #[serde(with = "serde_bytes_compat")]
    pub send_queue: Vec<u8>,
}

impl SocketImage {
    /// The next sequence number the peer expects from this socket's send queue's start.
    pub fn rcv_nxt(&self) -> u32 {
        self.rcv_copied.wrapping_add(self.recv_queue.len() as u32)
    }
}

/// Byte vectors as one length-prefixed string in binary formats (serde's default for `Vec<u8>`
/// is a sequence of integers, one varint each).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// Why a socket could not be captured or restored. Each variant names the step and the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    #[error("process {pid}: {source} (is it running, and is rackd root?)")]
    Process { pid: u32, source: io::Error },
    #[error("process {pid} has no file descriptor {fd}: {source}")]
    NoFd {
        pid: u32,
        fd: RawFd,
        source: io::Error,
    },
    #[error("descriptor is not a TCP socket ({0})")]
    NotTcp(String),
    #[error(
        "the connection is in TCP state {0}; only established connections can be checkpointed"
    )]
    NotEstablished(u8),
    #[error("{step}: {source}")]
    Kernel {
        step: &'static str,
        source: io::Error,
    },
    #[error("{queue} queue holds {expected} bytes but {got} could be read")]
    ShortQueue {
        queue: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("binding {addr} for the restored socket: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("the image's addresses {local} and {remote} are of different families")]
    MixedFamilies {
        local: SocketAddr,
        remote: SocketAddr,
    },
}

fn kernel(step: &'static str) -> impl FnOnce(io::Error) -> RepairError {
    move |source| RepairError::Kernel { step, source }
}

/// Duplicates descriptor `fd` of process `pid` into this process (`pidfd_getfd`, which needs
/// ptrace rights over the process: root).
pub fn grab(pid: u32, fd: RawFd) -> Result<OwnedFd, RepairError> {
    let pid_t = libc::pid_t::try_from(pid).map_err(|_| RepairError::Process {
        pid,
        source: io::Error::from_raw_os_error(libc::ESRCH),
    })?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_t, 0) };
    if pidfd < 0 {
        let source = io::Error::last_os_error();
        return Err(RepairError::Process { pid, source });
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and flags; it
    // returns a new descriptor (close-on-exec) or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EBADF) => RepairError::NoFd { pid, fd, source },
            _ => RepairError::Process { pid, source },
        });
    }
    // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// The local and remote addresses of `sock` if it is a connected TCP socket (IPv4-mapped IPv6
/// addresses of a dual-stack socket are given as IPv4).
pub fn tcp_endpoints(sock: BorrowedFd<'_>) -> Result<(SocketAddr, SocketAddr), RepairError> {
    let ty = get_int(sock, libc::SOL_SOCKET, libc::SO_TYPE)
        .map_err(|e| RepairError::NotTcp(format!("not a socket: {e}")))?;
    let proto =
        get_int(sock, libc::SOL_SOCKET, libc::SO_PROTOCOL).map_err(kernel("SO_PROTOCOL"))?;
    let domain = get_int(sock, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(kernel("SO_DOMAIN"))?;
    if ty != libc::SOCK_STREAM
        || proto != libc::IPPROTO_TCP
        || !(domain == libc::AF_INET || domain == libc::AF_INET6)
    {
        return Err(RepairError::NotTcp(format!(
            "domain {domain}, type {ty}, protocol {proto}"
        )));
    }
    let local = sock_name(sock, libc::getsockname).map_err(kernel("getsockname"))?;
    let remote = sock_name(sock, libc::getpeername)
        .map_err(|e| RepairError::NotTcp(format!("not connected: {e}")))?;
    Ok((canonical(local), canonical(remote)))
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Puts `sock` in repair mode and reads its state and queues. The socket stays in repair mode:
/// it is frozen (sends nothing, not even when closed), which is what a checkpoint wants — the
/// connection now lives in the image.
pub fn capture(sock: BorrowedFd<'_>) -> Result<SocketImage, RepairError> {
    let (local, remote) = tcp_endpoints(sock)?;
    set_int(sock, libc::SOL_TCP, libc::TCP_REPAIR, REPAIR_ON).map_err(kernel("TCP_REPAIR on"))?;
    let info = tcp_info(sock)?;
    if info.tcpi_state != TCP_ESTABLISHED {
        return Err(RepairError::NotEstablished(info.tcpi_state));
    }
    let in_len = ioctl_len(sock, SIOCINQ).map_err(kernel("SIOCINQ"))?;
    let out_len = ioctl_len(sock, SIOCOUTQ).map_err(kernel("SIOCOUTQ"))?;
    let unsent = ioctl_len(sock, SIOCOUTQNSD).map_err(kernel("SIOCOUTQNSD"))?;
    let mss = get_int(sock, libc::SOL_TCP, libc::TCP_MAXSEG).map_err(kernel("TCP_MAXSEG"))?;
    let timestamps = info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0;
    let ts_clock = if timestamps {
        get_int(sock, libc::SOL_TCP, libc::TCP_TIMESTAMP).map_err(kernel("TCP_TIMESTAMP"))? as u32
    } else {
        0
    };
    let negotiated = Negotiated {
        mss: mss as u32,
        sack: info.tcpi_options & TCPI_OPT_SACK != 0,
        timestamps,
        wscale: (info.tcpi_options & TCPI_OPT_WSCALE != 0).then_some((
            info.tcpi_snd_rcv_wscale & 0x0f,
            info.tcpi_snd_rcv_wscale >> 4,
        )),
    };
    let window = get_struct::<Window>(sock, libc::SOL_TCP, libc::TCP_REPAIR_WINDOW)
        .map_err(kernel("TCP_REPAIR_WINDOW"))?;
    let app = AppOptions {
        nodelay: get_int(sock, libc::SOL_TCP, libc::TCP_NODELAY).map_err(kernel("TCP_NODELAY"))?
            != 0,
        keepalive: get_int(sock, libc::SOL_SOCKET, libc::SO_KEEPALIVE)
            .map_err(kernel("SO_KEEPALIVE"))?
            != 0,
    };
    let (rcv_nxt, recv_queue) = read_queue(sock, TCP_RECV_QUEUE, "receive", in_len)?;
    let (write_seq, send_queue) = read_queue(sock, TCP_SEND_QUEUE, "send", out_len)?;
    set_int(sock, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
        .map_err(kernel("TCP_REPAIR_QUEUE none"))?;
    Ok(SocketImage {
        local,
        remote,
        snd_una: write_seq.wrapping_sub(out_len as u32),
        unsent: unsent as u32,
        rcv_copied: rcv_nxt.wrapping_sub(in_len as u32),
        negotiated,
        window,
        ts_clock,
        app,
        recv_queue,
        send_queue,
    })
}

/// The queue's end sequence number (`TCP_QUEUE_SEQ`: rcv_nxt or write_seq) and its `len` bytes.
fn read_queue(
    sock: BorrowedFd<'_>,
    queue: libc::c_int,
    name: &'static str,
    len: usize,
) -> Result<(u32, Vec<u8>), RepairError> {
    set_int(sock, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, queue)
        .map_err(kernel("TCP_REPAIR_QUEUE"))?;
    let seq = get_int(sock, libc::SOL_TCP, libc::TCP_QUEUE_SEQ).map_err(kernel("TCP_QUEUE_SEQ"))?;
    // One byte more than expected, to notice a queue that holds more than its size said.
    let mut buf = vec![0u8; len + 1];
    let got = if len == 0 {
        0
    } else {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(RepairError::Kernel {
                step: "reading a queue (MSG_PEEK)",
                source: io::Error::last_os_error(),
            });
        }
        n as usize
    };
    if got != len {
        return Err(RepairError::ShortQueue {
            queue: name,
            expected: len,
            got,
        });
    }
    buf.truncate(len);
    Ok((seq as u32, buf))
}

/// A socket rebuilt from an image, still in repair mode (frozen): nothing has been sent. Dropping
/// it closes the socket silently.
#[derive(Debug)]
pub struct Prepared {
    sock: OwnedFd,
    local: SocketAddr,
    send_queue: Vec<u8>,
    /// How many bytes at the end of `send_queue` had never been sent.
    unsent: usize,
}

impl Prepared {
    /// Builds the socket from `image` at local address `local` (another port the kernel picks
    /// if that one is taken), connected to `remote`, with the receive queue refilled. The send
    /// queue waits for [`Prepared::finish`].
    pub fn new(
        image: &SocketImage,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Prepared, RepairError> {
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(RepairError::MixedFamilies { local, remote });
        }
        let domain = if remote.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: socket() takes plain integers and returns a new descriptor or -1.
        let raw = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(kernel("socket")(io::Error::last_os_error()));
        }
        // SAFETY: socket() returned a new descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let fd = sock.as_fd();
        set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR, REPAIR_ON).map_err(kernel("TCP_REPAIR on"))?;
        let local = bind_preferring_port(fd, local)?;
        // Queue sequence numbers can only be set while the socket is closed. The receive side
        // starts at the first unread byte: refilling the queue advances it to rcv_nxt.
        set_queue_seq(fd, TCP_RECV_QUEUE, image.rcv_copied)?;
        set_queue_seq(fd, TCP_SEND_QUEUE, image.snd_una)?;
        // The segment size is fixed at connect (from the clamp, default 536): clamp it to the
        // negotiated one first, or the socket would send 524-byte segments for ever.
        // (TCP_MAXSEG takes at most MAX_TCP_WINDOW; loopback's clamp is larger.)
        let mss = image.negotiated.mss.min(MAX_USER_MSS) as libc::c_int;
        set_int(fd, libc::SOL_TCP, libc::TCP_MAXSEG, mss).map_err(kernel("TCP_MAXSEG"))?;
        connect(fd, remote).map_err(kernel("connect in repair mode"))?;
        set_options(fd, &image.negotiated)?;
        if image.negotiated.timestamps {
            set_int(
                fd,
                libc::SOL_TCP,
                libc::TCP_TIMESTAMP,
                image.ts_clock as libc::c_int,
            )
            .map_err(kernel("TCP_TIMESTAMP"))?;
        }
        set_int(
            fd,
            libc::SOL_TCP,
            libc::TCP_NODELAY,
            image.app.nodelay.into(),
        )
        .map_err(kernel("TCP_NODELAY"))?;
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            image.app.keepalive.into(),
        )
        .map_err(kernel("SO_KEEPALIVE"))?;
        refill(
            fd,
            TCP_RECV_QUEUE,
            &image.recv_queue,
            "refilling the receive queue",
        )?;
        crate::sys::setsockopt(fd, libc::SOL_TCP, libc::TCP_REPAIR_WINDOW, &image.window)
            .map_err(kernel("TCP_REPAIR_WINDOW"))?;
        Ok(Prepared {
            sock,
            local,
            send_queue: image.send_queue.clone(),
            unsent: (image.unsent as usize).min(image.send_queue.len()),
        })
    }

    /// The address the socket is bound to.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Refills the send queue and leaves repair mode. The part that had been sent goes in while
    /// still in repair mode, counted as sent and not transmitted (see the module comment); the
    /// kernel then sends a window probe (the peer learns where we are), retransmits what the
    /// peer's acknowledgements show missing, and sends the unsent rest as new data.
    pub fn finish(self) -> Result<OwnedFd, RepairError> {
        let fd = self.sock.as_fd();
        let (sent, unsent) = self
            .send_queue
            .split_at(self.send_queue.len() - self.unsent);
        ensure_sndbuf(fd, self.send_queue.len())?;
        refill(
            fd,
            TCP_SEND_QUEUE,
            sent,
            "refilling the sent part of the send queue",
        )?;
        set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
            .map_err(kernel("TCP_REPAIR_QUEUE none"))?;
        set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR, REPAIR_OFF)
            .map_err(kernel("TCP_REPAIR off"))?;
        write_all_nonblocking(fd, unsent)?;
        Ok(self.sock)
    }
}

/// Binds to `want`, or to the same address with a port the kernel picks when that port is taken.
fn bind_preferring_port(fd: BorrowedFd<'_>, want: SocketAddr) -> Result<SocketAddr, RepairError> {
    match bind(fd, want) {
        Ok(()) => Ok(want),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let any = SocketAddr::new(want.ip(), 0);
            bind(fd, any).map_err(|source| RepairError::Bind { addr: any, source })?;
            sock_name(fd, libc::getsockname).map_err(kernel("getsockname"))
        }
        Err(source) => Err(RepairError::Bind { addr: want, source }),
    }
}

fn set_queue_seq(fd: BorrowedFd<'_>, queue: libc::c_int, seq: u32) -> Result<(), RepairError> {
    set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, queue)
        .map_err(kernel("TCP_REPAIR_QUEUE"))?;
    set_int(fd, libc::SOL_TCP, libc::TCP_QUEUE_SEQ, seq as libc::c_int)
        .map_err(kernel("TCP_QUEUE_SEQ"))
}

fn set_options(fd: BorrowedFd<'_>, n: &Negotiated) -> Result<(), RepairError> {
    let mut opts = vec![RepairOpt {
        code: TCPOPT_MAXSEG,
        val: n.mss,
    }];
    if n.sack {
        opts.push(RepairOpt {
            code: TCPOPT_SACK_PERM,
            val: 0,
        });
    }
    if let Some((snd, rcv)) = n.wscale {
        opts.push(RepairOpt {
            code: TCPOPT_WINDOW,
            val: u32::from(snd) | (u32::from(rcv) << 16),
        });
    }
    if n.timestamps {
        opts.push(RepairOpt {
            code: TCPOPT_TIMESTAMP,
            val: 0,
        });
    }
    // SAFETY: `opts` is a live array of `opts.len()` repr(C) tcp_repair_opt records.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_REPAIR_OPTIONS,
            opts.as_ptr().cast(),
            (opts.len() * size_of::<RepairOpt>()) as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(kernel("TCP_REPAIR_OPTIONS")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Writes `data` into `queue` in repair mode (nothing is transmitted).
fn refill(
    fd: BorrowedFd<'_>,
    queue: libc::c_int,
    data: &[u8],
    step: &'static str,
) -> Result<(), RepairError> {
    if data.is_empty() {
        return Ok(());
    }
    set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, queue).map_err(kernel(step))?;
    if queue == TCP_RECV_QUEUE {
        let need = data.len().saturating_mul(2);
        if get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).map_err(kernel(step))? < need as i32 {
            set_int(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                need as libc::c_int,
            )
            .map_err(kernel(step))?;
        }
    }
    for chunk in data.chunks(REFILL_CHUNK) {
        let mut off = 0;
        while off < chunk.len() {
            // SAFETY: the pointer and length describe the live slice `chunk[off..]`.
            let n = unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    chunk[off..].as_ptr().cast(),
                    chunk.len() - off,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                return Err(kernel(step)(if n == 0 {
                    io::Error::from(io::ErrorKind::WriteZero)
                } else {
                    io::Error::last_os_error()
                }));
            }
            off += n as usize;
        }
    }
    Ok(())
}

/// Makes room for `len` bytes in the send buffer, so the queue can be written at once.
fn ensure_sndbuf(fd: BorrowedFd<'_>, len: usize) -> Result<(), RepairError> {
    let step = "sizing the send buffer";
    let need = len.saturating_mul(2).saturating_add(64 * 1024);
    if get_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).map_err(kernel(step))? < need as i32 {
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            need as libc::c_int,
        )
        .map_err(kernel(step))?;
    }
    Ok(())
}

fn write_all_nonblocking(fd: BorrowedFd<'_>, data: &[u8]) -> Result<(), RepairError> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: the pointer and length describe the live slice `data[off..]`.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                data[off..].as_ptr().cast(),
                data.len() - off,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            let e = io::Error::last_os_error();
            return Err(RepairError::Kernel {
                step: "refilling the send queue",
                source: if n == 0 {
                    io::ErrorKind::WriteZero.into()
                } else {
                    e
                },
            });
        }
        off += n as usize;
    }
    Ok(())
}

fn tcp_info(fd: BorrowedFd<'_>) -> Result<libc::tcp_info, RepairError> {
    get_struct::<libc::tcp_info>(fd, libc::SOL_TCP, libc::TCP_INFO).map_err(kernel("TCP_INFO"))
}

fn ioctl_len(fd: BorrowedFd<'_>, request: libc::c_ulong) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int to the pointer given.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut v as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(v).map_err(|_| io::Error::other(format!("negative queue size {v}")))
}

fn get_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    get_struct::<libc::c_int>(fd, level, name)
}

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    crate::sys::setsockopt(fd, level, name, &value)
}

/// getsockopt into a plain-data `T` (integers only, any bit pattern valid).
fn get_struct<T: Copy>(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is valid for `len` writable bytes; the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised, and T is plain integers for which any bytes are valid.
    Ok(unsafe { value.assume_init() })
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        f => Err(io::Error::other(format!("address family {f} is not IP"))),
    }
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sock_name(fd: BorrowedFd<'_>, f: NameFn) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data for which all zeroes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is valid for `len` writable bytes (getsockname/getpeername).
    let rc = unsafe {
        f(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    from_sockaddr(&storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_conversion_round_trips() {
        for a in ["192.0.2.7:4000", "[2001:db8::5]:22", "[2001:db8::5%3]:22"] {
            let a: SocketAddr = a.parse().unwrap();
            let (s, _) = crate::sys::sockaddr(&a);
            assert_eq!(from_sockaddr(&s).unwrap(), a);
        }
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let m: SocketAddr = "[::ffff:198.51.100.7]:80".parse().unwrap();
        assert_eq!(canonical(m), "198.51.100.7:80".parse().unwrap());
    }

    #[test]
    fn grabbing_from_a_missing_process_names_it() {
        // pid_max is at most 2^22: this pid cannot exist.
        let e = grab(0x7fff_fff0, 3).unwrap_err();
        assert!(e.to_string().contains("process 2147483632"), "{e}");
    }

    #[test]
    fn grabbing_a_closed_descriptor_names_it() {
        let e = grab(std::process::id(), 9999).unwrap_err();
        assert!(matches!(e, RepairError::NoFd { fd: 9999, .. }), "{e}");
    }

    #[test]
    fn a_non_socket_is_refused() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let e = tcp_endpoints(f.as_fd()).unwrap_err();
        assert!(matches!(e, RepairError::NotTcp(_)), "{e}");
    }
}
