//! One netlink batch = one nf_tables transaction: all its messages apply, or none do.
//!
//! Every message is recorded with a label naming its object, so that when the kernel rejects
//! one, the error says which table, chain, set or rule it was.

use std::collections::HashSet;
use std::io;
use std::os::fd::RawFd;

use nftnl::{Batch, MsgType, NlMsg};

use super::reply::parse_acks;
use super::set::{ElemsMsgs, NftSet};
use crate::error::{Error, Result};

/// A netfilter netlink socket.
pub(crate) struct NlSocket {
    inner: mnl::Socket,
}

impl std::fmt::Debug for NlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NlSocket").field("fd", &self.fd()).finish()
    }
}

// SAFETY: an mnl socket is a file descriptor plus a bound address; it has no thread affinity
// and every use goes through `&mut`-free calls that the kernel serialises.
unsafe impl Send for NlSocket {}

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
/// Room for the acknowledgements of large batches.
const RCVBUF: usize = 1 << 20;

impl NlSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open(operation: &'static str) -> Result<Self> {
        let sock_err = |step| {
            move |source| Error::Socket {
                operation,
                step,
                source,
            }
        };
        let inner = mnl::Socket::new(mnl::Bus::Netfilter).map_err(sock_err("socket"))?;
        let this = Self { inner };
        // Replies echo only the header of a failed message (not e.g. 64 KiB of elements) and
        // carry the kernel's explanation when it has one.
        this.set_opt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            .map_err(sock_err("NETLINK_CAP_ACK"))?;
        this.set_opt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            .map_err(sock_err("NETLINK_EXT_ACK"))?;
        this.set_opt(
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            RCVBUF as libc::c_int,
        )
        .or_else(|_| this.set_opt(libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF as libc::c_int))
        .map_err(sock_err("SO_RCVBUF"))?;
        Ok(this)
    }

    fn fd(&self) -> RawFd {
        // SAFETY: the mnl socket is live for as long as `self`.
        unsafe { mnl::mnl_sys::mnl_socket_get_fd(self.inner.as_raw_socket()) }
    }

    fn set_opt(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` is a live c_int and we pass its exact size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `data` as one datagram: nf_tables only treats messages in one `sendmsg` as a
    /// batch, so a large batch must not be split.
    fn send_whole(&self, data: &[u8]) -> io::Result<()> {
        // The kernel refuses datagrams larger than the send buffer.
        let want = (data.len() + 4096).max(1 << 16);
        let want = libc::c_int::try_from(want)
            .map_err(|_| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        self.set_opt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
            .or_else(|_| self.set_opt(libc::SOL_SOCKET, libc::SO_SNDBUF, want))?;
        let sent = self.inner.send(data)?;
        if sent != data.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                data.len()
            )));
        }
        Ok(())
    }

    /// Receives one datagram if one is queued; `None` when there is nothing more.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                self.fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                _ => Err(err),
            };
        }
        Ok(Some(n as usize))
    }
}

/// A batch under construction, with a label per message.
pub(crate) struct Txn {
    batch: Batch,
    labels: Vec<String>,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Txn {
    pub(crate) fn new() -> Self {
        Self {
            batch: Batch::new(),
            labels: Vec::new(),
        }
    }

    /// Appends one message.
    pub(crate) fn add(&mut self, msg: &impl NlMsg, ty: MsgType, label: impl Into<String>) {
        self.batch.add(msg, ty);
        self.labels.push(label.into());
    }

    /// Appends the element messages of `set` (as many as its elements need).
    pub(crate) fn add_elems(&mut self, set: &NftSet, ty: MsgType, label: &str) {
        let msgs = ElemsMsgs::new(set);
        while msgs.has_more() {
            self.add(&msgs, ty, label);
        }
    }

    /// Sends the batch and waits for the kernel's verdict on every message.
    pub(crate) fn commit(self, sock: &NlSocket, operation: &'static str) -> Result<()> {
        let batch = self.batch.finalize();
        let seqs = batch.sequence_numbers();
        let bytes: Vec<u8> = batch.iter().flatten().copied().collect();
        let sock_err = |step| {
            move |source| Error::Socket {
                operation,
                step,
                source,
            }
        };
        sock.send_whole(&bytes).map_err(sock_err("send"))?;

        // Whether batch begin/end are acknowledged depends on the kernel (nftnl decides);
        // the range has either exactly our messages or two more, one at each end.
        let extra = (seqs.len().saturating_sub(self.labels.len())) / 2;
        let first = seqs.start + extra as u32;
        let label_of = |seq: u32| {
            seq.checked_sub(first)
                .and_then(|i| self.labels.get(i as usize))
                .map_or_else(
                    || format!("batch control message (seq {seq})"),
                    Clone::clone,
                )
        };

        let mut pending: HashSet<u32> = seqs.clone().collect();
        let mut first_failure = None;
        let mut buf = vec![0u8; 1 << 16];
        // The kernel processes a batch inside sendmsg, so all answers are already queued.
        while let Some(n) = sock.try_recv(&mut buf).map_err(sock_err("recv"))? {
            let acks =
                parse_acks(&buf[..n]).map_err(|source| Error::Malformed { operation, source })?;
            for ack in acks {
                pending.remove(&ack.seq);
                if ack.errno != 0 && first_failure.is_none() {
                    first_failure = Some(Error::Rejected {
                        operation,
                        object: label_of(ack.seq),
                        errno: ack.errno,
                        detail: ack.message,
                    });
                }
            }
        }
        if let Some(err) = first_failure {
            return Err(err);
        }
        if !pending.is_empty() {
            return Err(Error::MissingAcks {
                operation,
                missing: pending.len(),
                expected: seqs.len(),
            });
        }
        Ok(())
    }
}
