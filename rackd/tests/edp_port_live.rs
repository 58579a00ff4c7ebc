//! A user-level EDP client (`edp::net::connect`, on a host without rackd) reaching an
//! unmodified server program on a rackd host whose port is listed in `peer.edp_ports`: rackd
//! answers the probe and the `Init` in the program's place and translates the connection, which
//! is `connected` with the client's id and key; the program sees only its application bytes.
//! Plain clients on the same port are released untouched, and a server-speaks-first program's
//! banner still arrives.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{family_name, topology, wait_for, Daemon};
use edp::net::Connected;
use netns_tests::{Family, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

/// Enters network namespace `netns` on the current thread.
fn enter(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns(2) on a namespace descriptor we hold changes only this thread's network
    // namespace; callers run it on threads of their own.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a new thread inside network namespace `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        enter(&netns);
        f()
    })
}

/// An unmodified echo program (optionally sending a banner first) in a host: it records every
/// byte each connection delivered to it, which is what the program saw.
struct EchoServer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl EchoServer {
    fn start(host: &Host, addr: SocketAddr, banner: Option<&'static [u8]>) -> EchoServer {
        EchoServer::start_with_mss(host, addr, banner, None)
    }

    /// With `mss`, the listener advertises that MSS (TCP_MAXSEG), so the client sends segments
    /// no larger.
    fn start_with_mss(
        host: &Host,
        addr: SocketAddr,
        banner: Option<&'static [u8]>,
        mss: Option<u32>,
    ) -> EchoServer {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready, listening) = mpsc::channel();
        let (stop2, seen2) = (stop.clone(), seen.clone());
        in_netns(host.netns(), move || {
            let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            if let Some(mss) = mss {
                set_mss(&listener, mss);
            }
            listener.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let seen = seen2.clone();
                        std::thread::spawn(move || serve(s, banner, &seen));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        listening.recv().expect("the echo server listens");
        EchoServer { stop, seen }
    }

    fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

fn set_mss(listener: &TcpListener, mss: u32) {
    let value = mss as libc::c_int;
    // SAFETY: setsockopt(2) on a socket we own, reading one c_int from a live local.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Echoes until EOF, then closes at once (as a typical program does).
fn serve(mut s: TcpStream, banner: Option<&[u8]>, seen: &Mutex<Vec<Vec<u8>>>) {
    s.set_nonblocking(false).unwrap();
    if let Some(b) = banner {
        let _ = s.write_all(b);
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // Recorded before the close the client waits for, so the test finds it once the client is done.
    seen.lock().unwrap().push(got);
    let _ = s.shutdown(Shutdown::Write);
}

/// Bytes no prefix of which looks like the announcement.
fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

fn config(port: u16) -> String {
    format!("[peer]\nedp_ports = [{port}]\n")
}

/// What the EDP client saw: its session (None: plain), the echo, and the transfer's time.
struct Transfer {
    session: Option<(String, String)>,
    echoed: Vec<u8>,
    took: Duration,
}

/// `edp::net::connect` to `addr` from `host`; after `pause` (time to read rackd's status),
/// sends `data` and reads the echo to the end.
fn edp_client(
    host: &Host,
    addr: SocketAddr,
    data: Vec<u8>,
    pause: Duration,
) -> std::thread::JoinHandle<Transfer> {
    in_netns(host.netns(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let connected = tokio::time::timeout(
                Duration::from_secs(10),
                edp::net::connect(addr, Default::default()),
            )
            .await
            .expect("connect within 10 s")
            .expect("connect");
            let (session, stream): (_, Box<dyn Stream>) = match connected {
                Connected::Enhanced(s, stream) => (
                    Some((s.conn_id.to_string(), edp::identity::hex(&s.key_id()))),
                    Box::new(stream),
                ),
                Connected::Plain(stream, _) => (None, Box::new(stream)),
            };
            tokio::time::sleep(pause).await;
            let start = Instant::now();
            let (mut r, mut w) = tokio::io::split(stream);
            let write = async {
                w.write_all(&data).await.expect("send");
                w.shutdown().await.expect("half-close");
            };
            let read = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.expect("receive");
                got
            };
            let ((), echoed) = tokio::join!(write, read);
            Transfer {
                session,
                echoed,
                took: start.elapsed(),
            }
        })
    })
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// `mss`: the program's listener advertises it (536 splits the announcement over segments).
fn enhanced(family: Family, port: u16, firewall: bool, mss: Option<u32>) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    if firewall {
        // The common stateful ruleset (`ct state invalid drop`) on the server's host: conntrack
        // sees the socket's side of the translation both ways and must find it consistent.
        server
            .firewall_stateful(&[port, port + 100])
            .expect("firewall on the server host");
    }
    let addr = SocketAddr::new(server.ip(family), port);
    let plain_addr = SocketAddr::new(server.ip(family), port + 100);
    let program = EchoServer::start_with_mss(server, addr, None, mss);
    let unlisted = EchoServer::start_with_mss(server, plain_addr, None, mss);
    let rackd = Daemon::start(server, &config(port));
    let data = payload(MIB);

    let run = edp_client(client, addr, data.clone(), Duration::from_millis(800));
    let status = rackd.wait_user_level_connected(port);
    // Queued strictly: were rackd to die, its packets would be dropped, not passed unrewritten.
    let suffix = match family {
        Family::V4 => "4",
        Family::V6 => "6",
    };
    let set = |name: &str| {
        let name = format!("{name}{suffix}");
        server
            .run("nft", ["list", "set", "inet", "rackd", name.as_str()])
            .expect("nft list set")
            .stdout
    };
    let needle = format!(". {port}");
    assert!(set("strict").contains(&needle), "{}", set("strict"));
    assert!(!set("flows").contains(&needle), "{}", set("flows"));
    let t = run.join().expect("the EDP client");
    let (id, key) = t.session.expect("edp-client should be enhanced");
    assert_eq!(status.id, id, "rackd shows the client's connection id");
    let log = rackd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("connected to a user-level EDP client")
                && l.contains(&format!("id={id}"))
                && l.contains(&format!("key={key}"))),
        "rackd should log id {id} with key {key}:\n{}",
        rackd.log_tail()
    );
    assert_eq!(sha256(&t.echoed), sha256(&data), "1 MiB echoed intact");
    // The program saw a probe (EOF at once) and then exactly the application's bytes.
    let program_saw = program.seen();
    assert!(
        program_saw.iter().any(|s| s.is_empty()),
        "the probe reached the program as an empty connection"
    );
    let main = program_saw
        .iter()
        .find(|s| !s.is_empty())
        .expect("the main connection reached the program");
    assert_eq!(
        main.len(),
        MIB,
        "no announcement or Init reached the program"
    );
    assert_eq!(sha256(main), sha256(&data));

    // Translation ends with the connection: the flow is removed.
    wait_for("the flow to be removed", Duration::from_secs(10), || {
        rackd.conn(port).is_none()
    });

    // The cost of translation: the same transfer to an unlisted port (plain, in the kernel).
    let plain = edp_client(client, plain_addr, data.clone(), Duration::ZERO)
        .join()
        .expect("the EDP client, unlisted port");
    assert!(plain.session.is_none());
    assert_eq!(sha256(&plain.echoed), sha256(&data));
    println!(
        "{} (MSS {mss:?}): 1 MiB echoed through translation in {:?}; unlisted port (plain) {:?}",
        family_name(family),
        t.took,
        plain.took
    );
    drop(unlisted);
}

fn plain_client(family: Family, port: u16) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let addr = SocketAddr::new(server.ip(family), port);
    let program = EchoServer::start(server, addr, None);
    let rackd = Daemon::start(server, &config(port));
    // Begins with the announcement's first byte, then differs.
    let mut data = edp::edp::ANNOUNCEMENT[..1].to_vec();
    data.extend(payload(256 * 1024));
    let sent = data.clone();
    let echoed = in_netns(client.netns(), move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).expect("receive");
            got
        });
        s.write_all(&sent[..1]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&sent[1..]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        reader.join().unwrap()
    })
    .join()
    .expect("the plain client");
    assert_eq!(sha256(&echoed), sha256(&data), "echoed intact");
    assert_eq!(
        program.seen(),
        [data],
        "the program got every byte, in order"
    );
    let status = rackd.status();
    assert!(status.connections.is_empty(), "{:?}", status.connections);
    assert!(status.daemon.states.get("released").copied().unwrap_or(0) >= 1);
    assert_eq!(
        status.daemon.states.get("connected").copied().unwrap_or(0),
        0
    );
}

fn banner(family: Family, port: u16) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let addr = SocketAddr::new(server.ip(family), port);
    let _program = EchoServer::start(server, addr, Some(b"220 hello from the server\r\n"));
    let rackd = Daemon::start(server, &config(port));
    let (line, took) = in_netns(client.netns(), move || {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"\n") {
            let n = s.read(&mut buf).expect("the banner");
            assert!(n > 0, "closed before the banner");
            got.extend_from_slice(&buf[..n]);
        }
        (got, start.elapsed())
    })
    .join()
    .expect("the silent client");
    assert_eq!(line, b"220 hello from the server\r\n");
    println!(
        "{}: a server-speaks-first banner arrived after {took:?}",
        family_name(family)
    );
    assert!(took < Duration::from_millis(1500), "banner after {took:?}");
    wait_for("the flow to be released", Duration::from_secs(5), || {
        rackd.status().connections.is_empty()
    });
}

#[test]
fn a_user_level_edp_client_is_enhanced_by_an_unmodified_server_v4() {
    enhanced(Family::V4, 7101, false, None);
}

#[test]
fn a_user_level_edp_client_is_enhanced_by_an_unmodified_server_v6() {
    enhanced(Family::V6, 7102, false, None);
}

#[test]
fn a_plain_client_on_an_edp_port_is_released_intact_v4() {
    plain_client(Family::V4, 7103);
}

#[test]
fn a_plain_client_on_an_edp_port_is_released_intact_v6() {
    plain_client(Family::V6, 7104);
}

#[test]
fn a_server_speaks_first_banner_arrives_on_an_edp_port_v4() {
    banner(Family::V4, 7105);
}

#[test]
fn a_server_speaks_first_banner_arrives_on_an_edp_port_v6() {
    banner(Family::V6, 7106);
}

#[test]
fn through_a_stateful_firewall_on_the_server_host_v4() {
    enhanced(Family::V4, 7107, true, None);
}

#[test]
fn through_a_stateful_firewall_on_the_server_host_v6() {
    enhanced(Family::V6, 7108, true, None);
}

#[test]
fn the_announcement_split_at_mss_536_v4() {
    enhanced(Family::V4, 7109, false, Some(536));
}

#[test]
fn the_announcement_split_at_mss_536_v6() {
    enhanced(Family::V6, 7110, false, Some(536));
}

/// The `edp-client` program itself: it prints the id and key rackd shows and logs, and gets
/// its message echoed.
fn edp_client_program(family: Family, port: u16) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let addr = SocketAddr::new(server.ip(family), port);
    let _program = EchoServer::start(server, addr, None);
    let rackd = Daemon::start(server, &config(port));
    let edp_client = netns_tests::workspace_bin("edp-client").expect("edp-client binary");
    let message = "from a user-level client";
    let out = client
        .command(edp_client)
        .args([addr.to_string().as_str(), message])
        .spawn()
        .and_then(|p| p.wait(Duration::from_secs(20)))
        .expect("edp-client runs");
    assert!(out.success(), "edp-client: {}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let first = lines.first().copied().unwrap_or("");
    let id = first
        .strip_prefix("enhanced conn=")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("edp-client should be enhanced: {:?}", out.stdout));
    let key = first.rsplit("key=").next().unwrap().trim();
    assert_eq!(
        lines.last().copied(),
        Some(format!("reply {message}").as_str())
    );
    let log = rackd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("connected to a user-level EDP client")
                && l.contains(&format!("id={id}"))
                && l.contains(&format!("key={key}"))),
        "rackd should log id {id} with key {key}:\n{}",
        rackd.log_tail()
    );
}

#[test]
fn edp_client_prints_the_id_and_key_rackd_logs_v4() {
    edp_client_program(Family::V4, 7111);
}

#[test]
fn edp_client_prints_the_id_and_key_rackd_logs_v6() {
    edp_client_program(Family::V6, 7112);
}

/// A translated connection cannot outlive rackd (its rules go, and unrewritten packets would
/// shift the stream): a clean stop aborts its socket. The client then gets a reset, never a byte
/// out of place.
fn stopping_rackd_aborts(family: Family, port: u16) {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let addr = SocketAddr::new(server.ip(family), port);
    let _program = EchoServer::start(server, addr, None);
    let rackd = Daemon::start(server, &config(port));
    let (ready, is_ready) = mpsc::channel();
    let (stopped, is_stopped) = mpsc::channel::<()>();
    let first = payload(64 << 10);
    let run = in_netns(client.netns(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let Connected::Enhanced(_, mut stream) = edp::net::connect(addr, Default::default())
                .await
                .expect("connect")
            else {
                panic!("edp-client should be enhanced");
            };
            stream.write_all(&first).await.unwrap();
            let mut echoed = vec![0u8; first.len()];
            stream.read_exact(&mut echoed).await.unwrap();
            assert_eq!(
                sha256(&echoed),
                sha256(&first),
                "echoed intact before the stop"
            );
            ready.send(()).unwrap();
            is_stopped.recv().unwrap();
            // Written after the stop: the server's kernel answers with a reset.
            let more = payload(4096);
            let _ = stream.write_all(&more).await;
            let mut after = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut after))
                .await
                .expect("an answer within 5 s");
            (after, read.map(drop))
        })
    });
    is_ready.recv().expect("the client's first echo");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(rackd.pid() as i32, libc::SIGTERM) }, 0);
    wait_for("rackd to exit", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{}/stat", rackd.pid()))
            .map_or(true, |s| s.contains(") Z "))
    });
    assert!(
        rackd
            .log()
            .contains("stopping: aborted a translated connection"),
        "{}",
        rackd.log_tail()
    );
    stopped.send(()).unwrap();
    let (after, read) = run.join().expect("the client");
    assert!(
        after.is_empty(),
        "{} bytes arrived after the stop",
        after.len()
    );
    let err = read.expect_err("the connection must be reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    println!(
        "{}: a clean stop reset the translated connection",
        family_name(family)
    );
}

#[test]
fn stopping_rackd_resets_a_translated_connection_v4() {
    stopping_rackd_aborts(Family::V4, 6260);
}

#[test]
fn stopping_rackd_resets_a_translated_connection_v6() {
    stopping_rackd_aborts(Family::V6, 6262);
}
