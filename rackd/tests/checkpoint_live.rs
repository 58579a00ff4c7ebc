//! The checkpoint hook against the running kernel.
//!
//! - The repair layer alone (`rackd::checkpoint::repair`): a connected socket with data queued
//!   both ways is captured through `pidfd_getfd` + `TCP_REPAIR`, closed (silently), rebuilt at
//!   the same address, and the stream continues on both sides — in a private network namespace
//!   per test.
//!
//! Needs root (namespaces, pidfd_getfd, TCP_REPAIR); fails, never skips, without it.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netns_tests::stream::Pattern;
use rackd::checkpoint::repair::{self, Prepared, RepairError};

fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "checkpoint_live needs root: namespaces, pidfd_getfd and TCP_REPAIR (euid is {euid})"
    );
}

/// Runs `body` on a thread of its own in a fresh network namespace with `lo` up; the namespace
/// and its sockets go with the thread, also on panic.
fn in_fresh_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    assert_root();
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET moves only this thread into a new namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        );
        loopback_up();
        body()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn loopback_up() {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket for ioctls");
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    assert_eq!(rc, 0, "bringing lo up: {}", io::Error::last_os_error());
}

/// The bytes `from..from+len` of the stream for `seed`.
fn pattern(seed: u64, from: usize, len: usize) -> Vec<u8> {
    let mut p = Pattern::new(seed);
    let mut skip = vec![0u8; from];
    p.fill(&mut skip);
    let mut out = vec![0u8; len];
    p.fill(&mut out);
    out
}

fn set_rcvbuf(fd: &impl AsRawFd, bytes: libc::c_int) {
    // SAFETY: SO_RCVBUF reads one int.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
}

/// Writes the stream for `seed` without blocking until the socket takes no more; returns how
/// many bytes it took.
fn fill_until_blocked(s: &mut TcpStream, seed: u64, limit: usize) -> usize {
    s.set_nonblocking(true).unwrap();
    let data = pattern(seed, 0, limit);
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent < limit && Instant::now() < deadline {
        match s.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The peer's window may still open a little: give loopback a moment.
                std::thread::sleep(Duration::from_millis(20));
                if s.write(&data[sent..sent + 1]).is_err() {
                    break;
                }
                sent += 1;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    sent
}

fn read_exactly(s: &mut TcpStream, len: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {len} bytes: {e}"));
    buf
}

/// A connection with data queued both ways at the client: unread data from the server in its
/// receive queue, and more than the server's small receive buffer takes in its send queue.
struct Queued {
    client: TcpStream,
    server: TcpStream,
    client_sent: usize,
    server_sent: usize,
}

fn queued_connection(server_ip: IpAddr) -> Queued {
    let listener = TcpListener::bind(SocketAddr::new(server_ip, 0)).unwrap();
    set_rcvbuf(&listener, 16 * 1024);
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let server_sent = 50_000;
    server.write_all(&pattern(2, 0, server_sent)).unwrap();
    let client_sent = fill_until_blocked(&mut client, 1, 1 << 20);
    // Both queues settle (the server's window closes; the client's receive queue fills).
    std::thread::sleep(Duration::from_millis(100));
    Queued {
        client,
        server,
        client_sent,
        server_sent,
    }
}

fn repair_round_trip(server_ip: IpAddr) {
    let Queued {
        client,
        mut server,
        client_sent,
        server_sent,
    } = queued_connection(server_ip);
    let original_local = client.local_addr().unwrap();
    let remote = client.peer_addr().unwrap();

    let started = Instant::now();
    let grabbed: OwnedFd = repair::grab(std::process::id(), client.as_raw_fd()).unwrap();
    let image = repair::capture(grabbed.as_fd()).unwrap();
    let capture_time = started.elapsed();

    assert_eq!(image.local, original_local);
    assert_eq!(image.remote, remote);
    assert_eq!(
        image.recv_queue,
        pattern(2, 0, server_sent),
        "the receive queue holds what the server sent and the client did not read"
    );
    let queued = image.send_queue.len();
    assert!(
        queued > 0 && queued <= client_sent,
        "send queue {queued} of {client_sent} written"
    );
    assert_eq!(
        image.send_queue,
        pattern(1, client_sent - queued, queued),
        "the send queue is the tail of what the client wrote"
    );

    // The original closes silently in repair mode (no FIN, no RST): the server must not notice.
    drop(grabbed);
    drop(client);

    let started = Instant::now();
    let prepared = Prepared::new(&image, original_local, remote).unwrap();
    assert_eq!(prepared.local(), original_local, "the port was free again");
    let mut restored = TcpStream::from(prepared.finish().unwrap());
    let restore_time = started.elapsed();
    eprintln!(
        "{server_ip}: captured {} + {} queued bytes in {capture_time:?}, restored in {restore_time:?}",
        image.send_queue.len(),
        image.recv_queue.len()
    );

    // The stream continues where it was, both ways.
    assert_eq!(
        read_exactly(&mut server, client_sent),
        pattern(1, 0, client_sent)
    );
    assert_eq!(
        read_exactly(&mut restored, server_sent),
        pattern(2, 0, server_sent)
    );
    let more = 1 << 20;
    let writer = {
        let mut r = restored.try_clone().unwrap();
        std::thread::spawn(move || r.write_all(&pattern(1, client_sent, more)).unwrap())
    };
    server.write_all(&pattern(2, server_sent, more)).unwrap();
    assert_eq!(
        read_exactly(&mut server, more),
        pattern(1, client_sent, more)
    );
    assert_eq!(
        read_exactly(&mut restored, more),
        pattern(2, server_sent, more)
    );
    writer.join().unwrap();
}

#[test]
fn repair_layer_restores_a_socket_with_queues_both_ways_v4() {
    in_fresh_netns(|| repair_round_trip("127.0.0.1".parse().unwrap()));
}

#[test]
fn repair_layer_restores_a_socket_with_queues_both_ways_v6() {
    in_fresh_netns(|| repair_round_trip("::1".parse().unwrap()));
}

#[test]
fn repair_layer_refuses_what_is_not_an_established_tcp_socket() {
    in_fresh_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = repair::capture(listener.as_fd()).unwrap_err();
        assert!(
            matches!(e, RepairError::NotTcp(ref m) if m.contains("not connected")),
            "{e}"
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = repair::capture(udp.as_fd()).unwrap_err();
        assert!(matches!(e, RepairError::NotTcp(_)), "{e}");
        // A connection whose peer closed (CLOSE_WAIT) is not established.
        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(listener.accept().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let e = repair::capture(c.as_fd()).unwrap_err();
        assert!(matches!(e, RepairError::NotEstablished(8)), "{e}");
    });
}
