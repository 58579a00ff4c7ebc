//! Sending packets rackd builds itself (zero-window ACKs, crafted handshakes) through raw sockets.
//!
//! Packets carry rackd's mark so its own rules let them pass unqueued. A packet addressed to a
//! local address is delivered to the local socket through loopback, which is how rackd speaks to
//! a suspended socket "as the peer".

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Raw IPv4 and IPv6 sockets that send complete L3 packets.
#[derive(Debug)]
pub struct Injector {
    v4: OwnedFd,
    v6: OwnedFd,
}

impl Injector {
    pub fn new(mark: u32) -> io::Result<Self> {
        let v4 = raw_socket(libc::AF_INET, mark)?;
        let v6 = raw_socket(libc::AF_INET6, mark)?;
        Ok(Self { v4, v6 })
    }

    /// Sends one IPv4 or IPv6 packet (header included) to its destination address.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let dst = destination(packet).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 or IPv6 packet")
        })?;
        let (fd, addr) = match dst {
            IpAddr::V4(a) => (&self.v4, SocketAddr::V4(SocketAddrV4::new(a, 0))),
            IpAddr::V6(a) => (&self.v6, SocketAddr::V6(SocketAddrV6::new(a, 0, 0, 0))),
        };
        let (storage, len) = crate::sys::sockaddr(&addr);
        // SAFETY: `packet` is valid for its length; `storage` holds a sockaddr of `len` bytes.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The destination address of an L3 packet, read from its header.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

fn raw_socket(family: libc::c_int, mark: u32) -> io::Result<OwnedFd> {
    // IPPROTO_RAW implies "header included" for both families.
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_MARK,
        mark as libc::c_int,
    )?;
    Ok(fd)
}

fn set_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_is_read_from_either_header() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[192, 0, 2, 7]);
        assert_eq!(destination(&v4), Some("192.0.2.7".parse().unwrap()));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[24..40].copy_from_slice(
            &"2001:db8::9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert_eq!(destination(&v6), Some("2001:db8::9".parse().unwrap()));
        assert_eq!(destination(&v4[..10]), None);
        assert_eq!(destination(&[0x50; 40]), None);
        assert_eq!(destination(&[]), None);
    }
}
