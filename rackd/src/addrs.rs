//! The host's own addresses: which exist, which source the kernel picks towards a peer, and
//! keeping a departed one usable for the sockets bound to it.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

/// Every address assigned to an interface of this network namespace.
pub fn local_addresses() -> io::Result<HashSet<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = HashSet::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says how long it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.insert(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The kernel's address notifications (rtnetlink groups `IPV4_IFADDR` and `IPV6_IFADDR`), so a
/// departed address is kept and its flows moved within milliseconds instead of at the next tick:
/// until then a socket bound to it cannot send. Only the fact of a change is used; the addresses
/// are then read whole with [`local_addresses`].
#[derive(Debug)]
pub struct AddressEvents {
    fd: OwnedFd,
}

impl AddressEvents {
    pub fn subscribe() -> io::Result<Self> {
        let flags = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, flags, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data, for which all zeroes is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes.
        let bound = unsafe { libc::bind(raw, (&raw const addr).cast(), len) };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AddressEvents { fd })
    }

    /// Reads every pending notification: whether any came. Notifications the kernel dropped
    /// for a full buffer count as a change too.
    pub fn drain(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        let mut changed = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                changed = true;
                continue;
            }
            if n == 0 {
                return Ok(changed);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(changed),
                Some(libc::ENOBUFS) => changed = true,
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }
}

impl AsRawFd for AddressEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The source address the kernel would use towards `dst` now (a connected UDP socket sends
/// nothing but reveals the routing decision).
pub fn source_for(dst: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match dst {
        IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        IpAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(dst, 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Departed local addresses rackd keeps on `lo` as host addresses, so that sockets bound to them
/// can still send and receive (their packets are translated to the new address on the wire);
/// all removed when it is dropped.
///
/// Linux answers ARP for any of its IPv4 addresses on every interface (`arp_ignore=0`), so a kept
/// address would still be claimed on the link it left, where it may belong to another host by
/// now. An `arp` table named like rackd's own drops those replies. (IPv6 neighbour solicitations
/// are answered only for addresses of the interface they arrive on.)
#[derive(Debug)]
pub struct KeptAddresses {
    arp_table: String,
    kept: Vec<IpAddr>,
}

impl KeptAddresses {
    /// Also removes an `arp` table `table` left by an earlier run.
    pub fn new(table: &str) -> Self {
        let _ = nft(&format!("delete table arp {table}\n"));
        KeptAddresses {
            arp_table: table.to_string(),
            kept: Vec::new(),
        }
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.kept.contains(addr)
    }

    pub fn keep(&mut self, addr: IpAddr) -> io::Result<()> {
        if self.contains(&addr) {
            return Ok(());
        }
        if let IpAddr::V4(v4) = addr {
            // Before the address is added, so it is never claimed.
            let t = &self.arp_table;
            let silenced = nft(&format!(
                "add table arp {t}\n\
                 add set arp {t} kept {{ type ipv4_addr; }}\n\
                 add chain arp {t} out {{ type filter hook output priority 0; }}\n\
                 flush chain arp {t} out\n\
                 add rule arp {t} out arp operation reply arp saddr ip @kept drop\n\
                 add element arp {t} kept {{ {v4} }}\n"
            ));
            if let Err(e) = silenced {
                tracing::warn!(%addr, "the kept address may still answer ARP: {e}");
            }
        }
        self.kept.push(addr);
        ip(&["addr", "add", &host_prefix(addr), "dev", "lo"])
    }
}

impl Drop for KeptAddresses {
    fn drop(&mut self) {
        for addr in &self.kept {
            if let Err(e) = ip(&["addr", "del", &host_prefix(*addr), "dev", "lo"]) {
                tracing::warn!(%addr, "removing the kept address: {e}");
            }
        }
        if self.kept.iter().any(IpAddr::is_ipv4) {
            if let Err(e) = nft(&format!("delete table arp {}\n", self.arp_table)) {
                tracing::warn!("removing the arp table: {e}");
            }
        }
    }
}

fn host_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn nft(script: &str) -> io::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_events_report_an_added_address() {
        // Needs its own network namespace (root): unshare(CLONE_NEWNET) in a thread of its own.
        let seen = std::thread::spawn(|| {
            // SAFETY: unshare affects only the calling thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNET) needs root: {}",
                    io::Error::last_os_error()
                ));
            }
            let events = AddressEvents::subscribe().map_err(|e| e.to_string())?;
            let quiet = events.drain().map_err(|e| e.to_string())?;
            ip(&["link", "set", "lo", "up"]).map_err(|e| e.to_string())?;
            ip(&["addr", "add", "192.0.2.9/32", "dev", "lo"]).map_err(|e| e.to_string())?;
            Ok((quiet, events.drain().map_err(|e| e.to_string())?))
        })
        .join()
        .unwrap();
        assert_eq!(seen, Ok((false, true)));
    }

    #[test]
    fn loopback_is_a_local_address_and_its_own_source() {
        let all = local_addresses().unwrap();
        assert!(all.contains(&IpAddr::from([127, 0, 0, 1])), "{all:?}");
        assert_eq!(
            source_for(IpAddr::from([127, 0, 0, 1])),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
    }
}
