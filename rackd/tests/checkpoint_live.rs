//! The checkpoint hook against the running kernel.
//!
//! - The repair layer alone (`rackd::checkpoint::repair`): a connected socket with data queued
//!   both ways is captured through `pidfd_getfd` + `TCP_REPAIR`, closed (silently), rebuilt at
//!   the same address, and the stream continues on both sides — in a private network namespace
//!   per test.
//!
//! - The whole hook (rackd on a client, a server and a third host, netns-tests harness): a
//!   program streaming both ways with an unmodified `rk-stream` server is stopped, checkpointed
//!   with `rackctl checkpoint` and killed; `rackctl restore` on the third host (another address)
//!   hands the socket to a new process that continues; both ends check every byte. Corrupted,
//!   truncated and replayed blobs are refused meanwhile without disturbing the stream.
//!
//! The client program is this test binary itself, run as the ignored test
//! [`helper_stream_client`] with its settings in the environment.
//!
//! Needs root (namespaces, pidfd_getfd, TCP_REPAIR); fails, never skips, without it. The
//! cross-host test needs the rackctl and rk-stream binaries built (`make build`).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netns_tests::stream::{digest_of, Pattern, StreamReport};
use netns_tests::{Host, Process, Topology};
use rackd::checkpoint::repair::{self, Prepared, RepairError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

mod common;
use common::{assert_connected_on_both, wait_for, Daemon, FAST_MONITOR};

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

// ---------------------------------------------------------------------------------------------
// The whole hook across hosts.

/// Settings of the helper program, passed in its environment.
const ENV_ROLE: &str = "RACKHOOK_TEST_ROLE";
const ENV_ADDR: &str = "RACKHOOK_TEST_ADDR";
const ENV_BYTES: &str = "RACKHOOK_TEST_BYTES";
const ENV_PACE: &str = "RACKHOOK_TEST_PACE";
const ENV_STATE: &str = "RACKHOOK_TEST_STATE";
const CLIENT_SEED: u64 = 1;
const SERVER_SEED: u64 = 2;

/// What the helper keeps across a checkpoint (a real program's memory image would).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct Progress {
    sent: u64,
    received: u64,
    mismatches: u64,
    shut: bool,
}

static CHECKPOINT_ASKED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    CHECKPOINT_ASKED.store(true, Ordering::SeqCst);
}

/// The client program: streams `BYTES` of its pattern to `ADDR` at `PACE` bytes/s while checking
/// every byte it receives against the server's pattern; on SIGUSR1 it saves its progress to
/// `STATE` and stops itself (SIGSTOP). Role `resume` continues from `STATE` on descriptor 3.
/// Prints one JSON line: its progress and error at the end.
#[test]
#[ignore = "helper program run by the cross-host tests, not a test"]
fn helper_stream_client() {
    let Ok(role) = std::env::var(ENV_ROLE) else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let total: u64 = env(ENV_BYTES).parse().unwrap();
    let pace: u64 = env(ENV_PACE).parse().unwrap();
    let state = PathBuf::from(env(ENV_STATE));
    let (stream, progress) = if role == "resume" {
        use std::os::fd::FromRawFd;
        let fd: i32 = env("RACKHOOK_FD").parse().unwrap();
        let text = std::fs::read_to_string(&state).unwrap();
        // SAFETY: rackctl handed us the restored socket as this descriptor; nothing else owns it.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        (stream, serde_json::from_str(&text).unwrap())
    } else {
        let stream = TcpStream::connect(env(ENV_ADDR)).unwrap();
        (stream, Progress::default())
    };
    println!(
        "connected fd={} local={}",
        stream.as_raw_fd(),
        stream.local_addr().unwrap()
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t) };
    let (progress, error) = stream_client(stream, progress, total, pace, &state);
    println!(
        "{}",
        serde_json::json!({"sent": progress.sent, "received": progress.received,
            "mismatches": progress.mismatches, "error": error})
    );
}

fn stream_client(
    mut s: TcpStream,
    mut p: Progress,
    total: u64,
    pace: u64,
    state: &Path,
) -> (Progress, Option<String>) {
    s.set_nonblocking(true).unwrap();
    let mut out = Pattern::new(CLIENT_SEED);
    let mut expect = Pattern::new(SERVER_SEED);
    skip(&mut out, p.sent);
    skip(&mut expect, p.received);
    let (start, sent_at_start) = (Instant::now(), p.sent);
    let mut pending: Vec<u8> = Vec::new();
    let (mut buf, mut want) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut eof = false;
    loop {
        if CHECKPOINT_ASKED.swap(false, Ordering::SeqCst) {
            let tmp = state.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_string(&p).unwrap()).unwrap();
            std::fs::rename(&tmp, state).unwrap();
            // SAFETY: raise has no preconditions.
            unsafe { libc::raise(libc::SIGSTOP) };
            return (p, Some("resumed without a restore".into()));
        }
        if eof && p.shut {
            return (p, None);
        }
        let mut fds = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut fds, 1, 5) };
        // Read whatever is there and check it against the server's pattern.
        while !eof {
            match s.read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => {
                    expect.fill(&mut want[..n]);
                    p.mismatches += buf[..n]
                        .iter()
                        .zip(&want[..n])
                        .filter(|(a, b)| a != b)
                        .count() as u64;
                    p.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (p, Some(format!("read: {e}"))),
            }
        }
        // Write up to the paced allowance.
        let allowed =
            (sent_at_start + (pace as f64 * start.elapsed().as_secs_f64()) as u64).min(total);
        while p.sent < allowed {
            if pending.is_empty() {
                pending.resize((allowed - p.sent).min(16 * 1024) as usize, 0);
                out.fill(&mut pending);
            }
            match s.write(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                    p.sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (p, Some(format!("write: {e}"))),
            }
        }
        if p.sent == total && !p.shut {
            if let Err(e) = s.shutdown(std::net::Shutdown::Write) {
                return (p, Some(format!("shutdown: {e}")));
            }
            p.shut = true;
        }
    }
}

fn skip(p: &mut Pattern, mut n: u64) {
    let mut scratch = vec![0u8; 64 * 1024];
    while n > 0 {
        let k = n.min(scratch.len() as u64) as usize;
        p.fill(&mut scratch[..k]);
        n -= k as u64;
    }
}

fn helper_command(
    host: &Host,
    role: &str,
    addr: &str,
    bytes: u64,
    pace: u64,
    state: &Path,
) -> netns_tests::HostCommand {
    helper_env(
        host.command(std::env::current_exe().unwrap()),
        role,
        addr,
        bytes,
        pace,
        state,
    )
    .args(helper_args())
}

fn helper_args() -> [&'static str; 5] {
    [
        "helper_stream_client",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

fn helper_env(
    cmd: netns_tests::HostCommand,
    role: &str,
    addr: &str,
    bytes: u64,
    pace: u64,
    state: &Path,
) -> netns_tests::HostCommand {
    cmd.env(ENV_ROLE, role)
        .env(ENV_ADDR, addr)
        .env(ENV_BYTES, bytes.to_string())
        .env(ENV_PACE, pace.to_string())
        .env(ENV_STATE, state)
}

/// The helper's final JSON line.
fn helper_report(p: &Process) -> serde_json::Value {
    let out = p.wait(Duration::from_secs(60)).expect("helper exits");
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report from the helper: {}\n{}", out.stdout, out.stderr));
    serde_json::from_str(line).unwrap()
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// A private directory for keys and blobs, removed with the value.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rackhook-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(dir)
    }

    /// A fresh cluster key, mode 0600.
    fn key(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join("checkpoint.key");
        let mut key = [0u8; 32];
        // SAFETY: `key` is valid for 32 writable bytes.
        let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
        assert_eq!(n, 32);
        std::fs::write(&path, key).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rackctl(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    let bin = netns_tests::workspace_bin("rackctl").expect("rackctl binary (make build)");
    std::process::Command::new(bin)
        .arg("--control-socket")
        .arg(&daemon.socket)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `rackctl restore` of `blob` through `daemon` that must fail with `needle` in its message;
/// `peer` is the daemon whose answer decides (its log is shown when the restore succeeds).
fn refused_restore(daemon: &Daemon, peer: &Daemon, blob: &Path, needle: &str) {
    let o = rackctl(daemon, &["restore", blob.to_str().unwrap()]);
    let t = text(&o);
    assert!(
        !o.status.success(),
        "restore of {} succeeded: {t}\nits rackd:\n{}\npeer's rackd:\n{}",
        blob.display(),
        daemon.log_tail(),
        peer.log_tail()
    );
    assert!(t.contains(needle), "{needle:?} not in: {t}");
}

#[test]
fn a_stream_moves_to_another_host_and_bad_blobs_are_refused() {
    move_stream(false);
}

/// The same with a send queue to carry over: the client's link is slower than the stream.
#[test]
fn a_stream_with_a_full_send_queue_moves_to_another_host() {
    move_stream(true);
}

fn move_stream(slow_client_link: bool) {
    let topo = Topology::builder()
        .host("third")
        .build()
        .unwrap_or_else(|e| panic!("building the test topology: {e} (these tests need root)"));
    // Plain TCP keeps its default patience here: the slow link below congests both ways, and
    // this test is about the move, not about surviving outages.
    let (client, server, third) = (topo.host("client"), topo.host("server"), topo.host("third"));
    // One directory per test: both move tests may run in one process.
    let scratch = Scratch::new(if slow_client_link {
        "move-slow"
    } else {
        "move"
    });
    let config = format!(
        "{FAST_MONITOR}[checkpoint]\nkey_file = \"{}\"\n",
        scratch.key().display()
    );
    let (cd, sd, td) = (
        Daemon::start(client, &config),
        Daemon::start(server, &config),
        Daemon::start(third, &config),
    );
    let port = 5301;
    let (bytes, pace) = (3u64 << 20, 256 * 1024);
    let listen = format!("{}:{port}", server.v4());
    let rk_stream = netns_tests::workspace_bin("rk-stream").expect("rk-stream binary (make build)");
    let server_prog = server
        .command(&rk_stream)
        .args([
            "server",
            &listen,
            "--bytes",
            &bytes.to_string(),
            "--seed",
            &SERVER_SEED.to_string(),
            "--pace",
            &pace.to_string(),
        ])
        .spawn()
        .unwrap();
    server_prog
        .wait_for_output("listening on", Duration::from_secs(10))
        .unwrap();
    let state = scratch.0.join("progress.json");
    let first = helper_command(client, "connect", &listen, bytes, pace, &state)
        .spawn()
        .unwrap();
    first
        .wait_for_output("connected fd=", Duration::from_secs(10))
        .unwrap();
    let fd: String = first
        .stdout()
        .split("connected fd=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .into();
    let id = assert_connected_on_both(&cd, &sd, port);
    // The client's link is slower than the stream: its send queue fills (unacknowledged and
    // unsent data to carry over); the third host's link is not.
    if slow_client_link {
        topo.rate_limit("client", 1_000_000).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));

    // Stop (the program saves its own progress first, as a checkpointed image would hold it),
    // checkpoint, kill.
    let pid = first.pid();
    // SAFETY: kill with a pid we started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) };
    wait_for("the program to stop", Duration::from_secs(5), || {
        process_state(pid) == Some('T') && state.exists()
    });
    let blob = scratch.0.join("conn.blob");
    let o = rackctl(
        &cd,
        &[
            "checkpoint",
            "--pid",
            &pid.to_string(),
            "--fd",
            &fd,
            "--out",
            blob.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "checkpoint: {}\n{}",
        text(&o),
        cd.log_tail()
    );
    eprintln!("{}", text(&o).trim());
    let queued: u64 = text(&o)
        .split(" bytes unacknowledged")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no send queue size in {}", text(&o)));
    assert!(
        !slow_client_link || queued > 64 * 1024,
        "the send queue should hold the slow link's backlog: {queued}"
    );
    first.kill().unwrap();
    let blob_bytes = std::fs::read(&blob).unwrap();

    // Restore on the third host; a new process continues from the restored socket.
    let rackctl_bin = netns_tests::workspace_bin("rackctl").expect("rackctl binary (make build)");
    let second = helper_env(
        third.command(&rackctl_bin),
        "resume",
        &listen,
        bytes,
        pace,
        &state,
    )
    .arg("--control-socket")
    .arg(&td.socket)
    .args(["restore", blob.to_str().unwrap(), "--"])
    .arg(std::env::current_exe().unwrap())
    .args(helper_args())
    .spawn()
    .unwrap();
    second
        .wait_for_output("connected fd=3", Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "restore: {e}\n{}\nthird rackd:\n{}\nserver rackd:\n{}",
                second.stderr(),
                td.log_tail(),
                sd.log_tail()
            )
        });
    eprintln!(
        "{}",
        second
            .stderr()
            .lines()
            .find(|l| l.contains("restored"))
            .unwrap_or("")
    );
    let moved = sd
        .conn(port)
        .expect("the server's rackd still has the connection");
    assert_eq!(moved.id, id);
    assert_eq!(
        moved.remote,
        format!(
            "{}:{}",
            third.v4(),
            moved.remote.rsplit(':').next().unwrap()
        ),
        "{moved:?}"
    );

    // Bad blobs, while the moved stream runs: refused, and nothing changes.
    let bad = scratch.0.join("bad.blob");
    let mut corrupted = blob_bytes.clone();
    corrupted[blob_bytes.len() / 2] ^= 0x01;
    std::fs::write(&bad, &corrupted).unwrap();
    refused_restore(&td, &sd, &bad, "blob authentication failed");
    std::fs::write(&bad, &blob_bytes[..blob_bytes.len() - 100]).unwrap();
    refused_restore(&td, &sd, &bad, "blob authentication failed");
    std::fs::write(&bad, &blob_bytes[..20]).unwrap();
    refused_restore(&td, &sd, &bad, "truncated");
    refused_restore(&td, &sd, &blob, "already restored on this host");
    refused_restore(&cd, &sd, &blob, "refused");

    if second.wait(Duration::from_secs(30)).is_err() {
        let ss = |h: &Host| {
            let nstat = h
                .run("nstat", ["-az"])
                .map(|o| o.stdout)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    let v = l.split_whitespace().nth(1).unwrap_or("0");
                    v != "0"
                        && (l.contains("PAWS")
                            || l.contains("Drop")
                            || l.contains("Reset")
                            || l.contains("Seq")
                            || l.contains("Ack")
                            || l.contains("ACK")
                            || l.contains("Err"))
                })
                .collect::<Vec<_>>()
                .join("\n");
            let nft = h
                .run("nft", ["list", "ruleset"])
                .map(|o| o.stdout)
                .unwrap_or_default();
            format!(
                "{}\n{nstat}\n{nft}",
                h.run("ss", ["-tinoe"])
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
        };
        if let Ok(dir) = std::env::var("RACKHOOK_TEST_LOGS") {
            std::fs::write(format!("{dir}/server.log"), sd.log()).unwrap();
            std::fs::write(format!("{dir}/third.log"), td.log()).unwrap();
            std::fs::write(format!("{dir}/client.log"), cd.log()).unwrap();
        }
        panic!(
            "the moved stream stalled\nserver ss:\n{}\nthird ss:\n{}\nserver rackd:\n{}\nthird rackd:\n{}\nhelper: {}",
            ss(server),
            ss(third),
            sd.log_tail(),
            td.log_tail(),
            second.stdout()
        );
    }
    let client_report = helper_report(&second);
    let server_out = server_prog.wait(Duration::from_secs(60)).unwrap();
    let server_report =
        StreamReport::parse(server_out.stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(
        server_report.error, None,
        "the server program saw an error: {server_out:?}"
    );
    assert_eq!(server_report.bytes_received, bytes);
    assert_eq!(
        server_report.digest_received,
        digest_of(CLIENT_SEED, bytes),
        "server received the client's stream intact"
    );
    assert_eq!(server_report.bytes_sent, bytes);
    assert_eq!(
        client_report["error"],
        serde_json::Value::Null,
        "{client_report}"
    );
    assert_eq!(client_report["received"], bytes, "{client_report}");
    assert_eq!(client_report["mismatches"], 0, "{client_report}");
    assert_eq!(client_report["sent"], bytes, "{client_report}");
}
