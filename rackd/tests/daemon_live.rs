//! The daemon binary in two network namespaces: SYN negotiation between two rackds, release of
//! a peer without rackd, status over the control socket, clean stop. Needs root.
//!
//! Uses a minimal two-namespace setup of its own; the general harness is crate netns-tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces `a` (192.0.2.1, 2001:db8::1) and `b` (192.0.2.2, 2001:db8::2) on one veth
/// pair, and the rackd processes started in them; all removed on drop, also after a panic.
struct Pair {
    a: String,
    b: String,
    dir: std::path::PathBuf,
    daemons: Vec<Child>,
}

impl Pair {
    fn new() -> Self {
        assert!(
            is_root(),
            "this test needs root (network namespaces, nftables, NFQUEUE)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("rkd{}x{n}", std::process::id());
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pair {
            a: a.clone(),
            b: b.clone(),
            dir,
            daemons: Vec::new(),
        };
        sh(&format!(
            "ip netns add {a} && ip netns add {b} && \
             ip -n {a} link add va type veth peer name vb netns {b} && \
             ip -n {a} addr add 192.0.2.1/24 dev va && ip -n {b} addr add 192.0.2.2/24 dev vb && \
             ip -n {a} addr add 2001:db8::1/64 dev va nodad && \
             ip -n {b} addr add 2001:db8::2/64 dev vb nodad && \
             ip -n {a} link set va up && ip -n {b} link set vb up && \
             ip -n {a} link set lo up && ip -n {b} link set lo up"
        ));
        p
    }

    fn socket(&self, ns: &str) -> std::path::PathBuf {
        self.dir.join(format!("{ns}.sock"))
    }

    fn start_rackd(&mut self, ns: &str) {
        let sock = self.socket(ns);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_rackd"),
                "--control-socket",
            ])
            .arg(&sock)
            .args(["--log-level", "debug"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(format!("{ns}.log"))).unwrap())
            .spawn()
            .expect("start rackd");
        self.daemons.push(child);
        wait_for(&format!("rackd in {ns} to answer"), || {
            rackctl_status(&sock).is_ok()
        });
    }

    fn status(&self, ns: &str) -> serde_json::Value {
        rackctl_status(&self.socket(ns)).expect("status")
    }

    /// Runs `f` on a thread inside namespace `ns`.
    fn run_in<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            setns(&file);
            f()
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = Command::new("kill").arg(d.id().to_string()).status();
            let _ = d.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    sh("id -u").trim() == "0"
}

fn setns(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace descriptor only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn rackctl_status(sock: &std::path::Path) -> Result<serde_json::Value, String> {
    let mut c = rackctl::client::Client::connect(sock).map_err(|e| e.to_string())?;
    let s = c.status().map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(s).expect("status serialises"))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An echo exchange from `a` to `b`'s listener; returns what came back.
fn exchange(p: &Pair, addr: &'static str) -> Vec<u8> {
    exchange_open(p, addr).0
}

/// [`exchange`], returning both sockets still open (a closed connection leaves rackd's table at
/// once).
fn exchange_open(p: &Pair, addr: &'static str) -> (Vec<u8>, TcpStream, TcpStream) {
    let listener = p
        .run_in(&p.b, move || TcpListener::bind(addr).expect("listen"))
        .join()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        s
    });
    let client = p
        .run_in(&p.a, move || {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            (c, buf.to_vec())
        })
        .join()
        .unwrap();
    let server_sock = server.join().unwrap();
    (client.1, client.0, server_sock)
}

fn connections(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn two_rackds_recognise_each_other_and_show_one_connection_id() {
    let mut p = Pair::new();
    let (a, b) = (p.a.clone(), p.b.clone());
    p.start_rackd(&a);
    p.start_rackd(&b);
    let mut open = Vec::new();
    for addr in ["192.0.2.2:5001", "[2001:db8::2]:5002"] {
        let (echo, c, s) = exchange_open(&p, addr);
        assert_eq!(echo, b"hello", "data through {addr}");
        open.push((c, s));
    }
    let (sa, sb) = (p.status(&a), p.status(&b));
    assert!(["native", "compat"].contains(&sa["daemon"]["queue_mode"].as_str().unwrap_or("")));
    let (ca, cb) = (connections(&sa), connections(&sb));
    assert_eq!(ca.len(), 2, "client side: {sa:#}");
    assert_eq!(cb.len(), 2, "server side: {sb:#}");
    for c in &ca {
        let twin = cb
            .iter()
            .find(|s| s["id"] == c["id"])
            .unwrap_or_else(|| panic!("no connection {} on the server: {sb:#}", c["id"]));
        assert_eq!(c["local"], twin["remote"]);
        assert_eq!(c["remote"], twin["local"]);
        assert_ne!(c["state"], "released");
    }
    assert!(sa["daemon"]["packets_queued"].as_u64().unwrap() >= 4);
}

#[test]
fn a_peer_without_rackd_is_released_and_data_flows() {
    let mut p = Pair::new();
    let a = p.a.clone();
    p.start_rackd(&a);
    assert_eq!(exchange(&p, "192.0.2.2:5003"), b"hello");
    // Never managed: gone from the table once its socket closed (or, for a longer connection,
    // once the peer's daemon did not answer the probe: peer.fallback, 1.5 s).
    wait_for("the connection to leave the table", || {
        connections(&p.status(&a)).is_empty()
    });
    let s = p.status(&a);
    assert_eq!(s["daemon"]["states"]["connected"], 0, "{s:#}");
    let states = &s["daemon"]["states"];
    let ended = states["released"].as_u64().unwrap() + states["closed"].as_u64().unwrap();
    assert_eq!(ended, 1, "{s:#}");
}

#[test]
fn sigterm_and_sighup_remove_the_rules_and_exit_zero() {
    for signal in ["TERM", "HUP"] {
        let mut p = Pair::new();
        let a = p.a.clone();
        p.start_rackd(&a);
        assert!(sh(&format!("ip netns exec {a} nft list tables")).contains("rackd"));
        let mut d = p.daemons.pop().unwrap();
        sh(&format!("kill -{signal} {}", d.id()));
        let status = d.wait().unwrap();
        assert!(
            status.success(),
            "rackd exit status {status} after SIG{signal}"
        );
        assert_eq!(sh(&format!("ip netns exec {a} nft list tables")), "");
        assert!(!p.socket(&a).exists(), "control socket left behind");
        // Plain TCP still works with the daemon gone.
        assert_eq!(exchange(&p, "192.0.2.2:5004"), b"hello");
    }
}

#[test]
fn after_sigkill_traffic_flows_and_a_restart_replaces_the_stale_table() {
    let mut p = Pair::new();
    let a = p.a.clone();
    p.start_rackd(&a);
    let mut d = p.daemons.pop().unwrap();
    d.kill().unwrap();
    d.wait().unwrap();
    // The table is still there, but its queue verdicts bypass when nobody reads.
    assert!(sh(&format!("ip netns exec {a} nft list tables")).contains("rackd"));
    assert_eq!(exchange(&p, "192.0.2.2:5005"), b"hello");
    assert_eq!(exchange(&p, "[2001:db8::2]:5006"), b"hello");
    // A new daemon replaces the stale table and its stale control socket file.
    p.start_rackd(&a);
    assert_eq!(
        sh(&format!("ip netns exec {a} nft list tables")).trim(),
        "table inet rackd"
    );
    assert_eq!(exchange(&p, "192.0.2.2:5007"), b"hello");
    // The new daemon intercepts: it saw the connection (and ended it as plain TCP).
    wait_for("the connection to leave the table", || {
        let s = p.status(&a);
        let states = &s["daemon"]["states"];
        connections(&s).is_empty()
            && states["released"].as_u64().unwrap() + states["closed"].as_u64().unwrap() == 1
    });
}

#[test]
fn malformed_rackd_options_in_syns_are_ignored() {
    // A SYN whose rackd option is cut short must neither crash the daemon nor be answered as
    // rackd: the packet handler sees no token and the connection proceeds as plain TCP.
    let mut p = Pair::new();
    let b = p.b.clone();
    p.start_rackd(&b);
    let pkt = |opt: &[u8]| {
        let mut v = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        let hl = 20 + opt.len().div_ceil(4) * 4;
        let mut tcp = vec![0xc3, 0x50, 0x13, 0x8d, 0, 0, 0, 1, 0, 0, 0, 0];
        tcp.push(((hl / 4) as u8) << 4);
        tcp.extend_from_slice(&[0x02, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(opt);
        while tcp.len() < hl {
            tcp.push(0);
        }
        v.extend_from_slice(&tcp);
        let total = v.len() as u16;
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v
    };
    // Sent raw from namespace a: truncated option, zero length, a version-0 body.
    let sender = p.run_in(&p.a, move || {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the descriptor is owned by the File below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket");
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let _own = unsafe { std::fs::File::from_raw_fd(fd) };
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([192, 0, 2, 2]),
            },
            sin_zero: [0; 8],
        };
        for opt in [
            &[253u8, 10, 0x72, 0x6b, 1][..],
            &[253, 0, 0x72, 0x6b],
            &[253, 10, 0x72, 0x6b, 0, 0, 1, 2, 3, 4],
            &[253, 3, 0x72],
        ] {
            let b = pkt(opt);
            // SAFETY: valid buffer and sockaddr_in of the stated size.
            let n = unsafe {
                libc::sendto(
                    fd,
                    b.as_ptr().cast(),
                    b.len(),
                    0,
                    (&dst as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(n as usize, b.len(), "sendto");
        }
    });
    sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let s = p.status(&b);
    assert!(
        s["daemon"]["packets_queued"].as_u64().unwrap() >= 4,
        "{s:#}"
    );
    assert_eq!(connections(&s).len(), 0, "{s:#}");
    // The daemon still serves: a real connection afterwards works.
    assert_eq!(exchange(&p, "192.0.2.2:5008"), b"hello");
}
