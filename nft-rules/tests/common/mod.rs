//! Test harness: network namespaces owned by threads, commands run inside them, a counting
//! queue reader and small TCP helpers. Everything a test creates disappears with its threads.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// Fails the test unless we are root: these tests need to create namespaces and rules.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "nft-rules namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); euid is {euid}"
    );
}

/// A fresh network namespace, held by a thread that runs the jobs given to it. Commands and
/// sockets created from inside `run` belong to the namespace.
pub struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    tid: i32,
}

impl Netns {
    pub fn new() -> Self {
        require_root();
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            // SAFETY: unshare only changes this thread's namespace membership.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            let tid = if rc == 0 {
                // SAFETY: gettid has no preconditions.
                unsafe { libc::gettid() }
            } else {
                -std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
            };
            let _ = ready_tx.send(tid);
            for job in rx {
                job();
            }
        });
        let tid = ready_rx.recv().expect("namespace thread died");
        assert!(tid > 0, "unshare(CLONE_NEWNET) failed: errno {}", -tid);
        let ns = Self {
            jobs: Some(jobs),
            thread: Some(thread),
            tid,
        };
        ns.sh("ip link set lo up");
        ns
    }

    /// Thread id whose `/proc/<tid>/ns/net` is this namespace (`ip link set ... netns <tid>`).
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Runs `f` inside the namespace and returns its result (panics propagate).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        self.jobs
            .as_ref()
            .expect("namespace gone")
            .send(job)
            .expect("namespace thread gone");
        match rx.recv().expect("namespace job lost") {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs a shell command inside the namespace; panics with its output if it fails.
    pub fn sh(&self, cmd: &str) -> String {
        let cmd = cmd.to_owned();
        self.run(move || sh_here(&cmd))
    }

    /// `nft list ruleset` inside the namespace.
    pub fn ruleset(&self) -> String {
        self.sh("nft list ruleset")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a command in the calling thread's namespace (children inherit the thread's).
pub fn sh_here(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `id_sequence` (packets ever queued) of `queue` from this thread's namespace's
/// `/proc/.../nfnetlink_queue`, or `None` if the queue has no reader line.
pub fn proc_queue_seq(queue: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first()?.parse::<u16>().ok()? == queue)
            .then(|| f.get(7)?.parse().ok())
            .flatten()
    })
}

/// A queue reader that accepts every packet and counts them, TCP SYNs separately.
pub struct Reader {
    stop: Arc<AtomicBool>,
    pub packets: Arc<AtomicUsize>,
    pub syns: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Binds queue `num` from inside `ns`, then reads on a plain thread.
    pub fn start(ns: &Netns, num: u16) -> Self {
        let queue = ns.run(move || {
            let mut q = nfq::Queue::open().expect("open nfqueue socket");
            q.bind(num).expect("bind nfqueue");
            q.set_nonblocking(true);
            q
        });
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicUsize::new(0));
        let syns = Arc::new(AtomicUsize::new(0));
        let (s, p, y) = (stop.clone(), packets.clone(), syns.clone());
        let thread = thread::spawn(move || {
            let mut q = queue;
            while !s.load(Ordering::Relaxed) {
                match q.recv() {
                    Ok(mut msg) => {
                        if is_syn(msg.get_payload()) {
                            y.fetch_add(1, Ordering::Relaxed);
                        }
                        p.fetch_add(1, Ordering::Relaxed);
                        msg.set_verdict(nfq::Verdict::Accept);
                        q.verdict(msg).expect("verdict");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Self {
            stop,
            packets,
            syns,
            thread: Some(thread),
        }
    }

    pub fn packets(&self) -> usize {
        self.packets.load(Ordering::Relaxed)
    }

    pub fn syns(&self) -> usize {
        self.syns.load(Ordering::Relaxed)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether an IPv4/IPv6 packet is TCP with SYN set.
fn is_syn(p: &[u8]) -> bool {
    let (proto, l4) = match p.first().map(|b| b >> 4) {
        Some(4) => (p.get(9).copied(), usize::from(p[0] & 0xf) * 4),
        Some(6) => (p.get(6).copied(), 40),
        _ => return false,
    };
    proto == Some(6) && p.get(l4 + 13).is_some_and(|f| f & 0x02 != 0)
}

/// A listener in `ns` that echoes everything on each connection, on background threads.
pub fn echo_server(ns: &Netns, addr: SocketAddr) -> SocketAddr {
    let listener = ns.run(move || TcpListener::bind(addr).expect("bind echo server"));
    let local = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    local
}

/// Connects from inside `ns`, optionally from a fixed local address, within 3 s.
pub fn connect(ns: &Netns, from: Option<SocketAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    connect_within(ns, from, to, Duration::from_secs(3))
}

/// Connects from inside `ns`, optionally from a fixed local address, within `limit`.
pub fn connect_within(
    ns: &Netns,
    from: Option<SocketAddr>,
    to: SocketAddr,
    limit: Duration,
) -> std::io::Result<TcpStream> {
    ns.run(move || {
        let domain = socket2::Domain::for_address(to);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        if let Some(from) = from {
            s.set_reuse_address(true)?;
            s.bind(&from.into())?;
        }
        s.connect_timeout(&to.into(), limit)?;
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(s)
    })
}

/// Sends `msg` and expects it echoed back.
pub fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got)?;
    assert_eq!(got, msg, "echo returned different bytes");
    Ok(())
}

/// Polls `cond` for up to two seconds.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if cond() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}

/// The rules of rackd's per-flow chains (`pre_flows`, `out_flows`) in this thread's
/// namespace, each as its comment without the `rackd: ` prefix, in chain order.
pub fn flow_chains_here() -> [Vec<String>; 2] {
    ["pre_flows", "out_flows"].map(|chain| {
        let listing = sh_here(&format!("nft list chain inet rackd {chain}"));
        let rules: Vec<String> = listing
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain"))
            .filter(|l| *l != "}")
            .map(|l| match l.split_once("comment \"rackd: ") {
                Some((_, c)) => c.trim_end_matches('"').to_owned(),
                None => format!("unexpected rule: {l}"),
            })
            .collect();
        rules
    })
}

impl Netns {
    /// [`flow_chains_here`] inside this namespace.
    pub fn flow_chains(&self) -> [Vec<String>; 2] {
        self.run(flow_chains_here)
    }
}
