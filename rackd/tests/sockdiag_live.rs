//! `rackd::sockdiag` against the running kernel: loopback connections in a private network
//! namespace per test. Each test body runs in a thread that unshares its network namespace, so
//! the namespace (and every socket left in it) disappears with the thread, also on panic.
//!
//! Needs root (to create the namespace and to use TCP_REPAIR); fails, never skips, without it.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use rackd::sockdiag::{
    DestroyEvents, Error, Family, Opening, SockDiag, SockInfo, States, TcpState,
};

/// Runs `body` in a fresh network namespace with `lo` up.
fn in_fresh_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns_thread(None, body)
}

/// Like [`in_fresh_netns`], with a TCP hash table of its own (`buckets` entries) instead of the
/// host-wide one. Dumps walk the whole table, and the host-wide one (262,144 buckets here) holds
/// the sockets of every namespace on the machine, so its cost depends on whatever else runs.
fn in_fresh_netns_with_own_tcp_table<T: Send + 'static>(
    buckets: u32,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    in_netns_thread(Some(buckets), body)
}

fn in_netns_thread<T: Send + 'static>(
    own_tcp_table: Option<u32>,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "sockdiag_live needs root: it creates network namespaces and uses TCP_REPAIR (euid is {euid})"
    );
    let thread = std::thread::spawn(move || {
        unshare_netns();
        if let Some(buckets) = own_tcp_table {
            // The setting applies to namespaces created from this one: nest once more.
            // /proc/sys/net shows the namespace of the thread that opens it.
            let key = "/proc/sys/net/ipv4/tcp_child_ehash_entries";
            std::fs::write(key, buckets.to_string()).unwrap_or_else(|e| panic!("write {key}: {e}"));
            unshare_netns();
            let size = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries").unwrap();
            // A negative size means "shared with the initial namespace".
            assert!(
                !size.trim().starts_with('-'),
                "no private TCP hash table (tcp_ehash_entries = {size})"
            );
        }
        set_loopback_up();
        body()
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn unshare_netns() {
    // SAFETY: unshare(2) with CLONE_NEWNET moves only this thread into a new namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        io::Error::last_os_error()
    );
}

/// `ip link set lo up` for this thread's namespace (a subprocess would not be in it).
fn set_loopback_up() {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket for ioctls");
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo" and outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    assert_eq!(rc, 0, "SIOCGIFFLAGS lo: {}", io::Error::last_os_error());
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    assert_eq!(rc, 0, "SIOCSIFFLAGS lo up: {}", io::Error::last_os_error());
}

/// Retries `f` for up to two seconds until it returns Some.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// IPv4-mapped IPv6 as IPv4, the way sockdiag reports addresses.
fn wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// (local, remote) of a stream as sockdiag reports it.
fn tuple(s: &TcpStream) -> (SocketAddr, SocketAddr) {
    (wire(s.local_addr().unwrap()), wire(s.peer_addr().unwrap()))
}

fn connect(listener: &TcpListener, to: SocketAddr) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(to).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Sends `up` bytes client → server and `down` bytes server → client, reading them all.
fn transfer(client: &mut TcpStream, server: &mut TcpStream, up: usize, down: usize) {
    std::thread::scope(|s| {
        s.spawn(|| client.write_all(&vec![0xa5; up]).unwrap());
        let mut got = vec![0; up];
        server.read_exact(&mut got).unwrap();
    });
    std::thread::scope(|s| {
        s.spawn(|| server.write_all(&vec![0x5a; down]).unwrap());
        let mut got = vec![0; down];
        client.read_exact(&mut got).unwrap();
    });
}

fn lookup(diag: &mut SockDiag, s: &TcpStream) -> Option<SockInfo> {
    let (local, remote) = tuple(s);
    diag.lookup(local, remote)
        .unwrap_or_else(|e| panic!("lookup {local} -> {remote}: {e}"))
}

/// The socket's inode, as `ls -l /proc/self/fd` shows it.
fn inode(s: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
        .unwrap()
        .ino()
}

fn getsockopt_u64(s: &impl AsRawFd, level: libc::c_int, name: libc::c_int) -> u64 {
    let mut v = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes and describe an 8-byte buffer.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt {level}/{name}: {}",
        io::Error::last_os_error()
    );
    v
}

fn setsockopt_int(s: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `value` lives for the call and its length is passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {level}/{name}={value}: {}",
        io::Error::last_os_error()
    );
}

/// The kernel's own (write_seq, rcv_nxt), read in TCP_REPAIR mode and left again without a
/// window probe.
fn repair_seqs(s: &TcpStream) -> (u32, u32) {
    const TCP_SEND_QUEUE: libc::c_int = 2;
    const TCP_RECV_QUEUE: libc::c_int = 1;
    const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
    setsockopt_int(s, libc::IPPROTO_TCP, libc::TCP_REPAIR, 1);
    setsockopt_int(s, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    let write_seq = getsockopt_u64(s, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ) as u32;
    setsockopt_int(s, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    let rcv_nxt = getsockopt_u64(s, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ) as u32;
    setsockopt_int(s, libc::IPPROTO_TCP, libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    (write_seq, rcv_nxt)
}

/// Both ends of a connection once everything sent is acknowledged.
fn settled(diag: &mut SockDiag, client: &TcpStream, server: &TcpStream) -> (SockInfo, SockInfo) {
    poll("all data acknowledged", || {
        let c = lookup(diag, client)?;
        let s = lookup(diag, server)?;
        (c.unacked == 0 && s.unacked == 0 && c.send_queue == 0 && s.send_queue == 0)
            .then_some((c, s))
    })
}

#[test]
fn lookup_reports_both_ends_of_v4_v6_and_dual_stack_connections() {
    in_fresh_netns(|| {
        let mut diag = SockDiag::open().expect("open sock_diag");
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let dual = TcpListener::bind("[::]:0").unwrap(); // net.ipv6.bindv6only=0: dual-stack
        let dual_port = dual.local_addr().unwrap().port();
        let cases = [
            ("v4", &v4, v4.local_addr().unwrap()),
            ("v6", &v6, v6.local_addr().unwrap()),
            (
                "v4 client, dual-stack server",
                &dual,
                SocketAddr::from(([127, 0, 0, 1], dual_port)),
            ),
            (
                "dual-stack client and server",
                &dual,
                format!("[::ffff:127.0.0.1]:{dual_port}").parse().unwrap(),
            ),
        ];
        let (up, down) = (1_000_000usize, 300_000usize);
        let mut ends = Vec::new();
        for (name, listener, to) in cases {
            let (mut client, mut server) = connect(listener, to);
            transfer(&mut client, &mut server, up, down);
            let (c, s) = settled(&mut diag, &client, &server);
            for (info, stream, opening) in [
                (&c, &client, Opening::Active),
                (&s, &server, Opening::Passive),
            ] {
                let what = format!("{name}, {opening:?} end {info:?}");
                assert_eq!((info.local, info.remote), tuple(stream), "{what}");
                assert_eq!(info.state, TcpState::Established, "{what}");
                assert!(info.has_tcp_info && info.timestamps, "{what}");
                assert!(
                    info.snd_wscale > 0 && info.rcv_wscale > 0 && info.snd_wnd > 0,
                    "{what}"
                );
                assert_eq!(info.inode, inode(stream), "{what}");
                assert_eq!(
                    info.cookie,
                    getsockopt_u64(stream, libc::SOL_SOCKET, libc::SO_COOKIE),
                    "{what}"
                );
                assert_eq!(
                    (info.uid, info.recv_queue, info.send_queue),
                    (0, 0, 0),
                    "{what}"
                );
                let v6_socket = stream.local_addr().unwrap().is_ipv6();
                assert_eq!(info.socket_family == Family::V6, v6_socket, "{what}");
            }
            // The active opener's bytes_acked counts its SYN; received counts never include the SYN.
            let (up, down) = (up as u64, down as u64);
            assert_eq!((c.bytes_acked, c.bytes_received), (up + 1, down), "{name}");
            assert_eq!((s.bytes_acked, s.bytes_received), (down, up), "{name}");
            // bytes_sent counts retransmissions too (seen here under load).
            assert!(
                c.bytes_sent >= up && s.bytes_sent >= down,
                "{name}: {c:?} {s:?}"
            );
            ends.push((client, server));
        }

        // One dump has every end and every listener; a Listen-only dump has just the listeners.
        let all: HashSet<_> = diag
            .dump(States::all())
            .unwrap()
            .iter()
            .map(|s| (s.local, s.remote, s.state))
            .collect();
        for (client, server) in &ends {
            for stream in [client, server] {
                let (l, r) = tuple(stream);
                assert!(
                    all.contains(&(l, r, TcpState::Established)),
                    "dump lacks {l} -> {r}: {all:?}"
                );
            }
        }
        let listeners = diag.dump(States::of(TcpState::Listen)).unwrap();
        assert!(
            listeners.iter().all(|s| s.state == TcpState::Listen),
            "{listeners:?}"
        );
        let mut bound: Vec<_> = listeners.iter().map(|s| s.local).collect();
        bound.sort();
        let mut expected: Vec<_> = [&v4, &v6, &dual].map(|l| l.local_addr().unwrap()).into();
        expected.sort();
        assert_eq!(bound, expected);
    });
}

#[test]
fn lookup_of_absent_tuples_is_none_even_where_a_listener_would_accept() {
    in_fresh_netns(|| {
        let mut diag = SockDiag::open().unwrap();
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let dual = TcpListener::bind("[::]:0").unwrap();
        let port = |l: &TcpListener| l.local_addr().unwrap().port();
        let absent: [(SocketAddr, SocketAddr); 5] = [
            (v4.local_addr().unwrap(), "127.0.0.1:9".parse().unwrap()),
            (v6.local_addr().unwrap(), "[::1]:9".parse().unwrap()),
            (
                SocketAddr::from(([127, 0, 0, 1], port(&dual))),
                "127.0.0.1:9".parse().unwrap(),
            ),
            (
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ),
            (
                "[2001:db8::1]:1".parse().unwrap(),
                "[2001:db8::2]:2".parse().unwrap(),
            ),
        ];
        for (local, remote) in absent {
            assert_eq!(
                diag.lookup(local, remote).unwrap(),
                None,
                "{local} -> {remote}"
            );
        }
        let mixed = diag.lookup("127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert!(
            matches!(mixed, Err(Error::MixedFamilies { .. })),
            "{mixed:?}"
        );
    });
}

#[test]
fn closed_connections_leave_time_wait_or_nothing() {
    in_fresh_netns(|| {
        let mut diag = SockDiag::open().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();

        // Orderly close, client first: the client lingers in TIME_WAIT (no tcp_info), the
        // server's socket is gone once its FIN is acknowledged.
        let (client, server) = connect(&listener, to);
        let (c, s) = (tuple(&client), tuple(&server));
        client.shutdown(Shutdown::Both).unwrap();
        let half = poll("server in CLOSE_WAIT", || {
            diag.lookup(s.0, s.1)
                .unwrap()
                .filter(|i| i.state == TcpState::CloseWait)
        });
        assert_eq!(half.bytes_received, 1, "the FIN counts in bytes_received");
        drop((client, server));
        let tw = poll("client in TIME_WAIT", || {
            diag.lookup(c.0, c.1)
                .unwrap()
                .filter(|i| i.state == TcpState::TimeWait)
        });
        assert!(!tw.has_tcp_info, "{tw:?}");
        poll("server socket gone", || {
            diag.lookup(s.0, s.1).unwrap().is_none().then_some(())
        });
        let dumped = diag.dump(States::of(TcpState::TimeWait)).unwrap();
        assert!(
            dumped.iter().any(|i| (i.local, i.remote) == c),
            "{dumped:?}"
        );

        // Abort (SO_LINGER 0 sends a RST): both ends disappear.
        let (client, server) = connect(&listener, to);
        let (c, s) = (tuple(&client), tuple(&server));
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `linger` lives for the call and its length is passed.
        let rc = unsafe {
            libc::setsockopt(
                client.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
        drop(client);
        poll("both ends gone after RST", || {
            (diag.lookup(c.0, c.1).unwrap().is_none() && diag.lookup(s.0, s.1).unwrap().is_none())
                .then_some(())
        });
        drop(server);
    });
}

#[test]
fn byte_counts_give_the_kernels_exact_sequence_numbers() {
    in_fresh_netns(|| {
        let mut diag = SockDiag::open().unwrap();
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(bind).unwrap();
            let (mut client, mut server) = connect(&listener, listener.local_addr().unwrap());
            // Before any data the kernel's write_seq is ISS + 1 and rcv_nxt is IRS + 1.
            let (c_iss, c_irs) = repair_seqs(&client);
            let (s_iss, s_irs) = repair_seqs(&server);
            let (c_iss, c_irs, s_iss, s_irs) = (c_iss - 1, c_irs - 1, s_iss - 1, s_irs - 1);
            assert_eq!(
                (c_iss, c_irs),
                (s_irs, s_iss),
                "{bind}: the ends disagree on the ISNs"
            );

            let check =
                |diag: &mut SockDiag, client: &TcpStream, server: &TcpStream, when: &str| {
                    let (c, s) = settled(diag, client, server);
                    let (c_snd, c_rcv) = repair_seqs(client);
                    let (s_snd, s_rcv) = repair_seqs(server);
                    assert_eq!(
                        c.snd_una(c_iss, Opening::Active),
                        Some(c_snd),
                        "{bind} {when}: client snd_una"
                    );
                    assert_eq!(
                        c.rcv_nxt(c_irs),
                        Some(c_rcv),
                        "{bind} {when}: client rcv_nxt"
                    );
                    assert_eq!(
                        s.snd_una(s_iss, Opening::Passive),
                        Some(s_snd),
                        "{bind} {when}: server snd_una"
                    );
                    assert_eq!(
                        s.rcv_nxt(s_irs),
                        Some(s_rcv),
                        "{bind} {when}: server rcv_nxt"
                    );
                };
            check(&mut diag, &client, &server, "after the handshake");
            transfer(&mut client, &mut server, 123_457, 98_765);
            check(&mut diag, &client, &server, "after data both ways");
            // A FIN takes a sequence number: it counts on both sides.
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(server.read(&mut [0; 1]).unwrap(), 0);
            check(&mut diag, &client, &server, "after the client's FIN");
        }
    });
}

/// Drains `events` until `done` says the notifications so far are enough.
fn collect_destroyed(
    events: &mut DestroyEvents,
    what: &str,
    mut done: impl FnMut(&[SockInfo]) -> bool,
) -> Vec<SockInfo> {
    let mut seen = Vec::new();
    poll(what, || {
        let drained = events.drain(&mut seen).expect("read destroy notifications");
        assert!(
            !drained.overrun,
            "destroy notifications lost after {} events",
            seen.len()
        );
        done(&seen).then_some(())
    });
    seen
}

#[test]
fn destroy_notifications_report_closed_sockets_with_final_counts() {
    in_fresh_netns(|| {
        let mut events = DestroyEvents::subscribe().expect("subscribe to destroy notifications");
        let (up, down) = (200_000u64, 70_000u64);
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(bind).unwrap();
            let (mut client, mut server) = connect(&listener, listener.local_addr().unwrap());
            transfer(&mut client, &mut server, up as usize, down as usize);
            let cookie = |s: &TcpStream| getsockopt_u64(s, libc::SOL_SOCKET, libc::SO_COOKIE);
            let ends = [
                (cookie(&client), tuple(&client)),
                (cookie(&server), tuple(&server)),
            ];
            drop(client); // FIN first: the client's socket ends in TIME_WAIT, freed now
            drop(server);
            let seen = collect_destroyed(&mut events, "both ends destroyed", |seen| {
                ends.iter()
                    .all(|(c, _)| seen.iter().any(|s| s.cookie == *c))
            });
            let by_cookie: HashMap<u64, &SockInfo> = seen.iter().map(|s| (s.cookie, s)).collect();
            let (c, s) = (by_cookie[&ends[0].0], by_cookie[&ends[1].0]);
            assert_eq!(
                ((c.local, c.remote), (s.local, s.remote)),
                (ends[0].1, ends[1].1),
                "{bind}"
            );
            assert!(c.has_tcp_info && s.has_tcp_info, "{bind}: {c:?} {s:?}");
            assert_eq!(c.state, TcpState::Close, "{bind}: {c:?}");
            // Final counts: the client's SYN and FIN, and each side's FIN received.
            assert_eq!(
                (c.bytes_acked, c.bytes_received),
                (up + 2, down + 1),
                "{bind} client"
            );
            assert_eq!(
                (s.bytes_acked, s.bytes_received),
                (down + 1, up + 1),
                "{bind} server"
            );
        }

        // A burst of short connections: every socket is reported once, none lost.
        const SHORT: usize = 2_000;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let started = Instant::now();
        let mut cookies = HashSet::new();
        for _ in 0..SHORT {
            let (client, server) = connect(&listener, to);
            for s in [&client, &server] {
                cookies.insert(getsockopt_u64(s, libc::SOL_SOCKET, libc::SO_COOKIE));
            }
        }
        let seen = collect_destroyed(&mut events, "every short connection destroyed", |seen| {
            seen.iter().filter(|s| cookies.contains(&s.cookie)).count() >= 2 * SHORT
        });
        let reported: Vec<_> = seen
            .iter()
            .filter(|s| cookies.contains(&s.cookie))
            .collect();
        assert_eq!(reported.len(), 2 * SHORT, "a socket was reported twice");
        eprintln!(
            "{SHORT} short connections: all {} sockets reported destroyed after {:?}",
            reported.len(),
            started.elapsed()
        );
    });
}

#[test]
fn dump_of_ten_thousand_sockets_is_complete_and_fast() {
    const CONNECTIONS: usize = 5_000;
    in_fresh_netns_with_own_tcp_table(16_384, || {
        raise_nofile_limit(4 * CONNECTIONS as u64);
        let mut diag = SockDiag::open().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let started = Instant::now();
        let pairs: Vec<_> = (0..CONNECTIONS).map(|_| connect(&listener, to)).collect();
        eprintln!(
            "{CONNECTIONS} loopback connections set up in {:?}",
            started.elapsed()
        );
        let expected: HashSet<_> = pairs
            .iter()
            .flat_map(|(c, s)| [tuple(c), tuple(s)])
            .collect();
        assert_eq!(expected.len(), 2 * CONNECTIONS);

        let mut times = Vec::new();
        let mut cpu_times = Vec::new();
        for _ in 0..7 {
            let (t, cpu) = (Instant::now(), thread_cpu_time());
            let socks = diag.dump(States::of(TcpState::Established)).unwrap();
            times.push(t.elapsed());
            cpu_times.push(thread_cpu_time() - cpu);
            let got: HashSet<_> = socks.iter().map(|s| (s.local, s.remote)).collect();
            assert_eq!(socks.len(), 2 * CONNECTIONS);
            assert_eq!(got, expected);
            assert!(socks
                .iter()
                .all(|s| s.has_tcp_info && s.state == TcpState::Established));
        }
        times.sort();
        cpu_times.sort();
        let median = times[times.len() / 2];
        eprintln!(
            "dump of {} sockets: CPU time median {:?}",
            2 * CONNECTIONS,
            cpu_times[cpu_times.len() / 2]
        );
        eprintln!(
            "dump of {} sockets: median {median:?}, min {:?}, max {:?}",
            2 * CONNECTIONS,
            times[0],
            times[times.len() - 1]
        );

        let t = Instant::now();
        let all = diag.dump(States::all()).unwrap();
        eprintln!(
            "dump of all states ({} sockets): {:?}",
            all.len(),
            t.elapsed()
        );
        assert_eq!(all.len(), 2 * CONNECTIONS + 1);

        let (wall, cpu) = empty_dump(&mut diag);
        eprintln!("dump matching no socket (the table walk alone): {wall:?}, CPU {cpu:?}");
        let (wall, cpu) = in_fresh_netns(|| empty_dump(&mut SockDiag::open().unwrap()));
        eprintln!("the same in a namespace sharing the host-wide table: {wall:?}, CPU {cpu:?}");

        let lookups = 2_000;
        let t = Instant::now();
        for (c, _) in pairs.iter().cycle().step_by(7).take(lookups) {
            let (l, r) = tuple(c);
            let found = diag.lookup(l, r).unwrap().expect("a live connection");
            assert_eq!((found.local, found.remote), (l, r));
        }
        eprintln!(
            "lookup among {} sockets: {:?} each",
            2 * CONNECTIONS,
            t.elapsed() / lookups as u32
        );

        // Generous bound for unoptimised builds on a loaded 2-core machine; a few ms is typical.
        assert!(
            median < Duration::from_millis(250),
            "dump of 10,000 sockets took {median:?}"
        );
    });
}

fn raise_nofile_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid for writes.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return;
    }
    lim.rlim_cur = want;
    lim.rlim_max = lim.rlim_max.max(want);
    // SAFETY: `lim` is a valid rlimit; raising the hard limit needs root, which the test has.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(
        rc,
        0,
        "raise RLIMIT_NOFILE to {want}: {}",
        io::Error::last_os_error()
    );
}

/// CPU time of this thread, user and kernel: unlike wall time, not stretched by other load.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// (wall, CPU) time of a dump that matches no socket: the kernel's walk of its TCP table.
fn empty_dump(diag: &mut SockDiag) -> (Duration, Duration) {
    let (t, cpu) = (Instant::now(), thread_cpu_time());
    assert!(diag.dump(States::of(TcpState::SynSent)).unwrap().is_empty());
    (t.elapsed(), thread_cpu_time() - cpu)
}

#[test]
fn destroy_aborts_exactly_the_connection_and_never_a_listener() {
    in_fresh_netns(|| {
        let mut diag = SockDiag::open().unwrap();
        for bind in ["127.0.0.1:0", "[::1]:0", "[::]:0"] {
            let listener = TcpListener::bind(bind).unwrap();
            let to = match listener.local_addr().unwrap() {
                a if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
                a => a,
            };
            let (mut client, server) = connect(&listener, to);
            let (local, remote) = tuple(&server);
            // A tuple with no connection, where the listener would accept: nothing happens.
            let absent = SocketAddr::new(remote.ip(), 9);
            assert!(!diag.destroy(wire(local), absent).unwrap(), "{bind}");
            assert!(diag.destroy(wire(local), wire(remote)).unwrap(), "{bind}");
            // The server's socket is gone and its peer was reset; the listener still accepts.
            assert_eq!(
                diag.lookup(wire(local), wire(remote)).unwrap(),
                None,
                "{bind}"
            );
            drop(server);
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut b = [0u8; 1];
            let err = client.read(&mut b).expect_err("the peer is reset");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{bind}: {err}");
            let (_c, _s) = connect(&listener, to);
            assert!(
                !diag.destroy(wire(local), wire(remote)).unwrap(),
                "{bind}: twice"
            );
        }
    });
}
