//! Programs rackd protects without touching them — a statically linked binary (busybox-static
//! `nc`) and a setuid-root binary started by an unprivileged user — and a connection whose id a
//! third host has stolen and uses to forge resumption while the path is cut. Plain TCP gives up
//! within seconds on every host (`tcp_retries2=3`), so surviving an outage is rackd's doing; each
//! outage test runs the same outage without rackd as its control. Needs root.
//!
//! The outage lasts `RACKD_TEST_OUTAGE_S` seconds (default 60).

mod common;

use std::fs::{self, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_connected_on_both, family_name, topology, wait_for, Daemon, FAST_MONITOR};
use edp::crypto::SecretKey;
use edp::message::{Capabilities, ConnId, Init, Message};
use edp::option::{SynFlags, SynOption, EXID, KIND};
use netns_tests::stream::{digest_of, Pattern, StreamReport};
use netns_tests::{Family, Host, Process, Topology};
use rackctl::proto::{ConnState, ConnectionStatus};
use tcpseq::{Ipv4Packet, Segment, SeqNum, TcpOption};

/// The unprivileged user (and group) that starts the setuid program: `nobody`.
const NOBODY: u32 = 65534;
/// rackd's daemon channel (UDP), the default of its `[peer] port`.
const DAEMON_PORT: u16 = 7113;

fn outage_length() -> Duration {
    let secs = std::env::var("RACKD_TEST_OUTAGE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

// ----- shared pieces ---------------------------------------------------------------------

/// A directory for one test's files, removed when dropped (also when the test panics).
struct Scratch(PathBuf);

impl Scratch {
    fn new(topo: &Topology, what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{}-{what}", topo.id()));
        fs::create_dir_all(&dir).unwrap();
        // The unprivileged user must be able to reach programs placed here.
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Nothing to do if it is gone already.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// rackd on the client and on the server.
struct Daemons {
    client: Daemon,
    server: Daemon,
}

impl Daemons {
    fn start(topo: &Topology) -> Daemons {
        Daemons {
            client: Daemon::start(topo.host("client"), FAST_MONITOR),
            server: Daemon::start(topo.host("server"), FAST_MONITOR),
        }
    }

    fn both(&self) -> [&Daemon; 2] {
        [&self.client, &self.server]
    }

    /// Connection `id` at each end (by id: a forger's flows may share the port).
    fn conns(&self, id: &str) -> [Option<ConnectionStatus>; 2] {
        self.both()
            .map(|d| d.connections().into_iter().find(|c| c.id == id))
    }

    /// Whether connection `id` is in `state` with `reconnects` at both ends.
    fn all_in(&self, id: &str, state: ConnState, reconnects: u32) -> bool {
        self.conns(id).iter().all(|c| {
            c.as_ref()
                .is_some_and(|c| c.state == state && c.reconnects == reconnects)
        })
    }

    /// Panics unless both daemons still run and answer.
    fn assert_alive(&self, after: &str) {
        for (name, d) in [("client", &self.client), ("server", &self.server)] {
            let state = fs::read_to_string(format!("/proc/{}/status", d.pid()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("State:").map(|v| v.trim().to_owned()))
                });
            assert!(
                state.as_deref().is_some_and(|s| !s.starts_with('Z')),
                "{name} rackd died {after} (state {state:?}):\n{}",
                d.log_tail()
            );
            assert!(
                d.try_status().is_some(),
                "{name} rackd does not answer status {after}:\n{}",
                d.log_tail()
            );
        }
    }

    fn logs(&self) -> String {
        format!(
            "client rackd:\n{}\nserver rackd:\n{}",
            self.client.log_tail(),
            self.server.log_tail()
        )
    }
}

/// The daemons and the id of the connection under test, when a test runs with rackd.
type Watched<'a> = Option<(&'a Daemons, &'a str)>;

/// Cuts the client–server path at the router; with rackd, waits until both ends suspended
/// the connection.
fn cut(topo: &Topology, watched: Watched) {
    topo.cut("client", "server").unwrap();
    if let Some((d, id)) = watched {
        wait_for("both ends to suspend", Duration::from_secs(3), || {
            d.all_in(id, ConnState::Suspended, 0)
        });
    }
}

/// When the path came back: the router's rule is removed at some moment while the restore
/// command runs, so times are measured from its start and `command` bounds the uncertainty.
#[derive(Debug, Clone, Copy)]
struct Restored {
    at: Instant,
    command: Duration,
}

/// Restores the path. Returns when and, with rackd, how long after that both ends showed the
/// connection connected again (once reconnected).
fn restore(topo: &Topology, watched: Watched) -> (Restored, Option<Duration>) {
    let at = Instant::now();
    topo.restore("client", "server").unwrap();
    let restored = Restored {
        at,
        command: at.elapsed(),
    };
    let resumed = watched.map(|(d, id)| {
        wait_for("both ends to resume", Duration::from_secs(5), || {
            d.all_in(id, ConnState::Connected, 1)
        });
        at.elapsed()
    });
    (restored, resumed)
}

/// Kernel counters of the client and the server that say why segments were refused (a
/// challenge ACK answers a segment whose ACK field is too old; PAWS refuses old timestamps), for
/// failure messages.
fn refusal_counters(topo: &Topology) -> String {
    const NAMES: [&str; 4] = [
        "TcpExtTCPChallengeACK",
        "TcpExtTCPACKSkippedChallenge",
        "TcpExtPAWSEstab",
        "TcpExtTCPACKSkippedPAWS",
    ];
    let mut out = String::from("kernel counters:");
    for name in ["client", "server"] {
        let args = ["-asz"].into_iter().chain(NAMES);
        let text = topo.host(name).run("nstat", args).map_or_else(
            |e| e.to_string(),
            |o| {
                o.stdout
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        Some(format!(
                            "{}={}",
                            f.next()?.trim_start_matches("TcpExt"),
                            f.next()?
                        ))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        );
        out.push_str(&format!(" {name}: {text};"));
    }
    out
}

/// Waits until something listens on TCP `port` in `host`.
fn wait_listening(host: &Host, port: u16) {
    let filter = format!("sport = :{port}");
    wait_for("the server to listen", Duration::from_secs(5), || {
        let out = host.run("ss", ["-Hltn", &filter]).unwrap();
        !out.stdout.trim().is_empty()
    });
}

// ----- a static binary: busybox nc -----------------------------------------------------------

/// Bytes fed to each nc per chunk, and how often: 160 KiB/s each way, so data is always in
/// flight when the path is cut and the senders keep writing during the outage.
const CHUNK: usize = 8 * 1024;
const CHUNK_EVERY: Duration = Duration::from_millis(50);

/// The PT_INTERP entry type: an ELF file with one needs a dynamic loader.
const PT_INTERP: u32 = 3;

/// Whether the ELF file at `path` is statically linked: 64-bit little-endian ELF without a
/// program interpreter (no dynamic loader runs before it, nothing can be preloaded into it).
fn is_static_elf(path: &Path) -> Result<bool, String> {
    let bytes = fs::read(path).map_err(|e| format!("reading {path:?}: {e}"))?;
    let field = |at: usize, len: usize| {
        bytes
            .get(at..at + len)
            .map(|b| b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
            .ok_or_else(|| format!("{path:?}: truncated ELF header"))
    };
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(format!("{path:?} is not a 64-bit little-endian ELF file"));
    }
    let (phoff, phentsize, phnum) = (field(0x20, 8)?, field(0x36, 2)?, field(0x38, 2)?);
    for i in 0..phnum {
        let entry = usize::try_from(phoff + i * phentsize).map_err(|e| e.to_string())?;
        if field(entry, 4)? == u64::from(PT_INTERP) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The busybox on PATH (the harness runs `busybox`), checked to be statically linked.
fn static_busybox() -> PathBuf {
    let path = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("busybox"))
                .find(|c| c.is_file())
        })
        .expect("busybox on PATH (package busybox-static)");
    // The check itself must be able to say "dynamic": rk-stream is an ordinary Rust program.
    let dynamic = netns_tests::workspace_bin("rk-stream").unwrap();
    assert_eq!(is_static_elf(&dynamic), Ok(false), "{dynamic:?} is dynamic");
    assert_eq!(
        is_static_elf(&path),
        Ok(true),
        "{path:?} must be statically linked (install busybox-static)"
    );
    path
}

/// One busybox nc: fed paced data on stdin (every chunk the pipe accepted is appended to `fed`),
/// writing what it receives to `received`.
struct NcEnd {
    process: Process,
    fed: PathBuf,
    received: PathBuf,
    seed: u64,
    fed_bytes: AtomicU64,
}

impl NcEnd {
    fn spawn(host: &Host, busybox: &Path, args: &[&str], scratch: &Scratch, seed: u64) -> NcEnd {
        let name = host.name();
        let (fed, received) = (
            scratch.path(&format!("{name}.fed")),
            scratch.path(&format!("{name}.received")),
        );
        fs::write(&fed, b"").unwrap();
        let process = host
            .command(busybox)
            .arg("nc")
            .args(args)
            .stdin_piped()
            .stdout_file(&received)
            .spawn()
            .unwrap();
        NcEnd {
            process,
            fed,
            received,
            seed,
            fed_bytes: AtomicU64::new(0),
        }
    }

    /// Writes a chunk every [`CHUNK_EVERY`] until `stop` (or until nc is gone). A write blocks
    /// while nc's socket cannot take more: that is the program's view of an outage.
    fn feed(&self, stop: &AtomicBool) {
        let mut pattern = Pattern::new(self.seed);
        let mut copy = OpenOptions::new().append(true).open(&self.fed).unwrap();
        let mut chunk = vec![0u8; CHUNK];
        while !stop.load(Ordering::Relaxed) {
            pattern.fill(&mut chunk);
            if self.process.write_stdin(&chunk).is_err() {
                return; // nc ended: the control case
            }
            copy.write_all(&chunk).unwrap();
            self.fed_bytes.fetch_add(CHUNK as u64, Ordering::Relaxed);
            thread::sleep(CHUNK_EVERY);
        }
    }

    fn fed(&self) -> u64 {
        self.fed_bytes.load(Ordering::Relaxed)
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {path:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What arrived in one direction of an nc transfer.
#[derive(Debug)]
struct Direction {
    name: &'static str,
    fed: u64,
    received: u64,
    fed_sha256: String,
    received_sha256: String,
    /// Bytes the sending program wrote while the path was cut.
    fed_during_outage: u64,
    /// From the path's return to the first byte the receiving program wrote out.
    first_byte_after_restore: Option<Duration>,
}

impl Direction {
    fn intact(&self) -> bool {
        self.fed > 0 && self.fed == self.received && self.fed_sha256 == self.received_sha256
    }
}

#[derive(Debug)]
struct NcOutcome {
    directions: [Direction; 2],
    /// Which nc programs ended by themselves (before the test killed them).
    died: Vec<String>,
    restored: Restored,
    resumed: Option<Duration>,
    logs: String,
}

/// busybox nc at both ends, each fed paced data, through a cut of `outage`.
fn nc_outage(busybox: &Path, with_rackd: bool, outage: Duration) -> NcOutcome {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let daemons = with_rackd.then(|| Daemons::start(&topo));
    let scratch = Scratch::new(&topo, "nc");
    let port = 5101;
    let ends = [
        NcEnd::spawn(
            server,
            busybox,
            &["-l", "-p", &port.to_string()],
            &scratch,
            2,
        ),
        {
            wait_listening(server, port);
            let target = server.v4().to_string();
            NcEnd::spawn(client, busybox, &[&target, &port.to_string()], &scratch, 1)
        },
    ];
    let id = daemons
        .as_ref()
        .map(|d| assert_connected_on_both(&d.client, &d.server, port));
    let watched = daemons.as_ref().zip(id.as_deref());
    let stop_feeding = AtomicBool::new(false);
    let stop_watching = AtomicBool::new(false);
    let mut during = [0u64; 2];
    let mut restored = None;
    let mut resumed = None;
    let growth = thread::scope(|s| {
        let feeders: Vec<_> = ends
            .iter()
            .map(|e| s.spawn(|| e.feed(&stop_feeding)))
            .collect();
        // When each received file grew: the first growth after the restore is when data flows.
        let watcher = s.spawn(|| {
            let mut sizes = [0u64; 2];
            let mut growth: [Vec<Instant>; 2] = Default::default();
            while !stop_watching.load(Ordering::Relaxed) {
                for (i, end) in ends.iter().enumerate() {
                    let now = file_len(&end.received);
                    if now != sizes[i] {
                        sizes[i] = now;
                        growth[i].push(Instant::now());
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            growth
        });
        thread::sleep(Duration::from_secs(2));
        let at_cut = [ends[0].fed(), ends[1].fed()];
        cut(&topo, watched);
        thread::sleep(outage);
        during = [ends[0].fed() - at_cut[0], ends[1].fed() - at_cut[1]];
        let (back, up) = restore(&topo, watched);
        (restored, resumed) = (Some(back), up);
        thread::sleep(Duration::from_secs(3));
        stop_feeding.store(true, Ordering::Relaxed);
        // A feeder blocked on a full pipe is freed when the data drains — or when nc is killed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !feeders.iter().all(|f| f.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let all_arrived = |ends: &[NcEnd; 2]| {
            file_len(&ends[0].received) == ends[1].fed()
                && file_len(&ends[1].received) == ends[0].fed()
        };
        let exited = |e: &NcEnd| e.process.try_wait().unwrap().is_some();
        while !all_arrived(&ends) && !ends.iter().all(exited) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        stop_watching.store(true, Ordering::Relaxed);
        // What has not arrived by now never will; killing nc also frees a blocked feeder.
        let died = ends
            .iter()
            .filter(|e| exited(e))
            .map(|e| e.process.command().to_owned())
            .collect::<Vec<_>>();
        for e in &ends {
            let _ = e.process.kill();
        }
        (watcher.join().unwrap(), died)
    });
    let (growth, died) = growth;
    let restored = restored.unwrap();
    // ends[0] is the server: what the client fed arrives in the server's file.
    let direction = |name, from: &NcEnd, to: &NcEnd, during: u64, to_index: usize| Direction {
        name,
        fed: file_len(&from.fed),
        received: file_len(&to.received),
        fed_sha256: sha256(&from.fed),
        received_sha256: sha256(&to.received),
        fed_during_outage: during,
        first_byte_after_restore: growth[to_index]
            .iter()
            .find(|&&t| t >= restored.at)
            .map(|&t| t - restored.at),
    };
    NcOutcome {
        directions: [
            direction("client→server", &ends[1], &ends[0], during[1], 0),
            direction("server→client", &ends[0], &ends[1], during[0], 1),
        ],
        died,
        restored,
        resumed,
        logs: daemons.as_ref().map_or(String::new(), |d| {
            format!("{}\n{}", d.logs(), refusal_counters(&topo))
        }),
    }
}

/// busybox nc is single-threaded: while a write to its socket blocks it reads nothing, so its
/// receive window shrinks to a few KiB during the outage. After the path returns the peer may
/// then run far ahead of whatever either daemon captured during the hold.
#[test]
fn static_busybox_nc_survives_an_outage_both_ways_and_dies_without_rackd() {
    let busybox = static_busybox();
    let outage = outage_length();
    let control = {
        let busybox = busybox.clone();
        thread::spawn(move || nc_outage(&busybox, false, outage))
    };
    let managed = nc_outage(&busybox, true, outage);
    assert!(
        managed.directions.iter().all(Direction::intact),
        "static nc with rackd through a {outage:?} outage: {:#?}\n{}",
        managed.directions,
        managed.logs
    );
    for d in &managed.directions {
        assert!(
            d.fed_during_outage > 0,
            "{}: the sender wrote nothing while the path was cut: {d:?}",
            d.name
        );
        eprintln!(
            "static nc {}: {} bytes intact (sha256 {}…), {} written during the outage, \
             first byte {:?} after the path returned",
            d.name,
            d.received,
            &d.received_sha256[..16],
            d.fed_during_outage,
            d.first_byte_after_restore
        );
    }
    assert!(
        managed.died.is_empty(),
        "nc ended by itself with rackd: {:?}",
        managed.died
    );
    eprintln!(
        "static nc: both rackds resumed {:?} after the path returned (times from the start of \
         the {:?} restore command)",
        managed.resumed.unwrap(),
        managed.restored.command
    );
    let control = control.join().unwrap();
    assert!(
        control.directions.iter().any(|d| !d.intact()) && !control.died.is_empty(),
        "the same outage without rackd should kill busybox nc (tcp_retries2=3): {control:?}"
    );
}

// ----- a setuid-root binary started by an unprivileged user ------------------------------------

/// A setuid-root copy of the workspace's stream program (an ordinary dynamically linked TCP
/// program; busybox drops setuid privileges for `nc`, so it cannot serve here).
fn setuid_stream_program(scratch: &Scratch) -> PathBuf {
    let copy = scratch.path("rk-stream-setuid");
    fs::copy(netns_tests::workspace_bin("rk-stream").unwrap(), &copy).unwrap();
    // We run as root, so the copy is owned by root.
    fs::set_permissions(&copy, Permissions::from_mode(0o4755)).unwrap();
    copy
}

/// Real and effective uid of a running process.
fn uids(pid: u32) -> (u32, u32) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (ids[0], ids[1])
}

/// One end of a paced two-way stream: `program` started as `nobody`.
struct StreamEnd {
    process: Process,
    seed: u64,
}

impl StreamEnd {
    fn spawn(
        host: &Host,
        program: &Path,
        mode: &str,
        addr: SocketAddr,
        bytes: u64,
        seed: u64,
    ) -> Self {
        let process = host
            .command(program)
            .user(NOBODY, NOBODY)
            .args([mode, &addr.to_string(), "--bytes", &bytes.to_string()])
            .args([
                "--seed",
                &seed.to_string(),
                "--pace",
                &STREAM_PACE.to_string(),
            ])
            .spawn()
            .unwrap();
        StreamEnd { process, seed }
    }

    /// Waits for the end's report; what is wrong with it, if anything.
    fn problems(&self, bytes: u64, peer_seed: u64, timeout: Duration) -> Vec<String> {
        let out = match self.process.wait(timeout) {
            Ok(out) => out,
            Err(e) => return vec![e.to_string()],
        };
        let who = &out.command;
        let line = out.stdout.lines().last().unwrap_or_default();
        let report = match StreamReport::parse(line) {
            Ok(r) => r,
            Err(e) => return vec![format!("{who}: no report ({e}); stderr: {}", out.stderr)],
        };
        let mut problems = Vec::new();
        if let Some(e) = &report.error {
            problems.push(format!("{who}: {e}"));
        }
        if report.bytes_sent != bytes || report.digest_sent != digest_of(self.seed, bytes) {
            problems.push(format!(
                "{who}: sent {} of {bytes} bytes",
                report.bytes_sent
            ));
        }
        if report.bytes_received != bytes || report.digest_received != digest_of(peer_seed, bytes) {
            problems.push(format!(
                "{who}: received {} of {bytes} bytes (digest {})",
                report.bytes_received, report.digest_received
            ));
        }
        problems
    }
}

/// Each end of a stream sends at this rate, bytes per second.
const STREAM_PACE: u64 = 256 * 1024;

#[derive(Debug)]
struct SetuidOutcome {
    problems: Vec<String>,
    /// (real, effective) uid of the client and the server program while they ran.
    uids: [(u32, u32); 2],
    resumed: Option<Duration>,
    logs: String,
}

/// A setuid-root stream program started by `nobody` at both ends, paced both ways through a
/// cut of `outage`.
fn setuid_outage(family: Family, with_rackd: bool, outage: Duration) -> SetuidOutcome {
    let topo = topology();
    let (client, server) = (topo.host("client"), topo.host("server"));
    let daemons = with_rackd.then(|| Daemons::start(&topo));
    let scratch = Scratch::new(&topo, "setuid");
    let program = setuid_stream_program(&scratch);
    let port = 5102;
    let bytes = STREAM_PACE * (outage.as_secs() + 8);
    let addr = SocketAddr::new(server.ip(family), port);
    let server_end = StreamEnd::spawn(server, &program, "server", addr, bytes, 2);
    server_end
        .process
        .wait_for_output("listening", Duration::from_secs(10))
        .unwrap();
    let client_end = StreamEnd::spawn(client, &program, "client", addr, bytes, 1);
    // Connected: both processes are the program now, no longer the launcher chain before it.
    server_end
        .process
        .wait_for_output("connection from", Duration::from_secs(5))
        .unwrap();
    let id = daemons
        .as_ref()
        .map(|d| assert_connected_on_both(&d.client, &d.server, port));
    let watched = daemons.as_ref().zip(id.as_deref());
    let uids = [
        uids(client_end.process.pid()),
        uids(server_end.process.pid()),
    ];
    thread::sleep(Duration::from_secs(2));
    cut(&topo, watched);
    thread::sleep(outage);
    let (_, resumed) = restore(&topo, watched);
    let timeout = Duration::from_secs(60);
    let mut problems = client_end.problems(bytes, server_end.seed, timeout);
    problems.extend(server_end.problems(bytes, client_end.seed, timeout));
    SetuidOutcome {
        problems,
        uids,
        resumed,
        logs: daemons.as_ref().map_or(String::new(), |d| {
            format!("{}\n{}", d.logs(), refusal_counters(&topo))
        }),
    }
}

#[test]
fn setuid_root_program_run_by_nobody_survives_an_outage_and_dies_without_rackd() {
    let family = Family::V6;
    let outage = outage_length();
    let control = thread::spawn(move || setuid_outage(family, false, outage));
    let managed = setuid_outage(family, true, outage);
    assert_eq!(
        managed.uids,
        [(NOBODY, 0); 2],
        "both programs started by uid {NOBODY} and run with euid 0 (setuid root)"
    );
    assert!(
        managed.problems.is_empty(),
        "setuid program with rackd through a {outage:?} outage ({}): {:?}\n{}",
        family_name(family),
        managed.problems,
        managed.logs
    );
    eprintln!(
        "setuid rk-stream ({}), uid {NOBODY} / euid 0: {outage:?} outage survived; \
         both rackds resumed {:?} after the path returned",
        family_name(family),
        managed.resumed.unwrap()
    );
    let control = control.join().unwrap();
    assert_eq!(control.uids, [(NOBODY, 0); 2]);
    assert!(
        !control.problems.is_empty(),
        "the same outage without rackd should kill the setuid program (tcp_retries2=3)"
    );
}

// ----- a forged resumption from a third host -------------------------------------------------

/// IP identification of every forged packet, so that the target hosts can count what reached
/// them.
const FORGED_IP_ID: u16 = 0x7b7b;

/// Counts arriving forged packets (by [`FORGED_IP_ID`]) before anything else sees them.
const COUNT_FORGED: &str = "table ip rk_forged {
    counter forged_tcp {}
    counter forged_udp {}
    chain count {
        type filter hook prerouting priority -400; policy accept;
        ip id 0x7b7b meta l4proto tcp counter name \"forged_tcp\"
        ip id 0x7b7b meta l4proto udp counter name \"forged_udp\"
    }
}
";

fn install_forged_counters(host: &Host, scratch: &Scratch) {
    let script = scratch.path(&format!("{}-count.nft", host.name()));
    fs::write(&script, COUNT_FORGED).unwrap();
    host.run("nft", ["-f", script.to_str().unwrap()]).unwrap();
}

/// Forged packets of protocol `proto` (`tcp`/`udp`) that reached `host`.
fn forged_arrived(host: &Host, proto: &str) -> u64 {
    let out = host
        .run(
            "nft",
            [
                "-j",
                "list",
                "counter",
                "ip",
                "rk_forged",
                &format!("forged_{proto}"),
            ],
        )
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    json["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .unwrap_or_else(|| panic!("no counter {proto} in {}", out.stdout))
}

/// Runs `f` on a new thread inside network namespace `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let ns = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) on a namespace descriptor we hold changes only this thread's network
        // namespace; the thread ends with `f`.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A raw IPv4 socket that sends packets with their IP header as built (any source address).
struct RawSender(OwnedFd);

impl RawSender {
    fn open() -> RawSender {
        // SAFETY: socket(2) with constant arguments; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        RawSender(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn send(&self, packet: &[u8]) {
        let dst = Ipv4Packet::new_unchecked(packet).dst_addr();
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the sockaddr_in are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            usize::try_from(n).ok(),
            Some(packet.len()),
            "sendto {dst}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Gives a forged packet its IP identification and refreshes the IP header checksum (the TCP and
/// UDP checksums do not cover the identification).
fn mark_forged(packet: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
    ip.set_ident(FORGED_IP_ID);
    ip.fill_checksum();
}

/// A SYN that claims to resume a rackd connection: the rackd option with RESUME and `token`.
fn forged_syn(src: SocketAddrV4, dst: SocketAddrV4, token: u32, isn: u32) -> Vec<u8> {
    let body = SynOption::new(SynFlags::RESUME, Some(token)).encode_body();
    let options = [
        TcpOption::Mss(1460),
        TcpOption::Experimental {
            kind: KIND,
            exid: EXID,
            data: &body,
        },
    ];
    let segment = Segment::syn(src.into(), dst.into(), SeqNum(isn), 64240, &options);
    let mut packet = segment.to_vec().unwrap();
    mark_forged(&mut packet);
    packet
}

/// An IPv4 UDP datagram from `src` to `dst` (no UDP checksum, which IPv4 allows).
fn forged_datagram(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut packet = vec![0u8; total];
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len(u16::try_from(total).unwrap());
        ip.set_unfragmented(true);
        ip.set_ttl(64);
        ip.set_protocol(17);
        ip.set_src_addr(*src.ip());
        ip.set_dst_addr(*dst.ip());
    }
    let udp = &mut packet[20..];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    udp[8..].copy_from_slice(payload);
    mark_forged(&mut packet);
    packet
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap();
    bytes
}

/// What the third host knows: the connection id (from `rackctl status`) and both endpoints.
#[derive(Debug, Clone, Copy)]
struct Stolen {
    id: ConnId,
    client: SocketAddrV4,
    server: SocketAddrV4,
}

/// What the forger sent and what came back to it.
#[derive(Debug, Default)]
struct Forgery {
    /// Forged packets sent, by target.
    syns_to_server: u64,
    datagrams_to_server: u64,
    datagrams_to_client: u64,
    /// Messages the daemons sent back to the third host's daemon port.
    replies: Vec<String>,
}

/// From the third host, for `length`: every 100 ms, SYNs with the rackd option claiming to resume
/// (each token of the stolen id, from the third host's own address and from the client's exact
/// endpoint), and `Init` and `Heartbeat` messages with the stolen id under a key of its own, to
/// both daemons, from its own address and spoofed from the other end.
fn forge(
    netns: &str,
    third: Ipv4Addr,
    stolen: Stolen,
    length: Duration,
) -> thread::JoinHandle<Forgery> {
    in_netns(netns, move || {
        let raw = RawSender::open();
        let replies = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, DAEMON_PORT)).unwrap();
        replies.set_nonblocking(true).unwrap();
        let mut done = Forgery::default();
        let tokens = [(stolen.id.0 >> 32) as u32, stolen.id.0 as u32];
        let daemon = |ip: &Ipv4Addr| SocketAddrV4::new(*ip, DAEMON_PORT);
        let own = SocketAddrV4::new(third, DAEMON_PORT);
        let start = Instant::now();
        let mut round = 0u64;
        while start.elapsed() < length {
            for (i, token) in tokens.into_iter().enumerate() {
                let src = SocketAddrV4::new(third, 40000 + (round * 2) as u16 + i as u16);
                raw.send(&forged_syn(
                    src,
                    stolen.server,
                    token,
                    u32::from_ne_bytes(random()),
                ));
            }
            raw.send(&forged_syn(
                stolen.client,
                stolen.server,
                tokens[0],
                1 << 30,
            ));
            done.syns_to_server += 3;
            let key = SecretKey::from_bytes(random());
            let init = Message::Init(Init {
                conn_id: stolen.id,
                public_key: random(),
                sndbuf: 1 << 20,
                rcvbuf: 1 << 20,
                capabilities: Capabilities::ALL,
                host: None,
            })
            .encode();
            let beat =
                Message::heartbeat(&key, stolen.id, 1_000_000 + round, 1_000_000 + round).encode();
            for (target, peer) in [
                (stolen.server.ip(), stolen.client.ip()),
                (stolen.client.ip(), stolen.server.ip()),
            ] {
                for src in [own, daemon(peer)] {
                    for payload in [&init, &beat] {
                        raw.send(&forged_datagram(src, daemon(target), payload));
                    }
                }
                if target == stolen.server.ip() {
                    done.datagrams_to_server += 4;
                } else {
                    done.datagrams_to_client += 4;
                }
            }
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = replies.recv_from(&mut buf) {
                let what = match Message::decode(&buf[..n]) {
                    Ok(Some((m, _))) => format!("{:?}", m).chars().take(40).collect(),
                    other => format!("{other:?}"),
                };
                done.replies.push(format!("{n} bytes from {from}: {what}"));
            }
            round += 1;
            thread::sleep(Duration::from_millis(100));
        }
        done
    })
}

fn v4(addr: &str) -> SocketAddrV4 {
    match addr.parse::<SocketAddr>().unwrap() {
        SocketAddr::V4(a) => a,
        other => panic!("{other} is not IPv4"),
    }
}

#[test]
fn forged_resumption_from_a_third_host_neither_revives_nor_disturbs_a_suspended_connection() {
    let outage = outage_length();
    let attack = Duration::from_secs(5);
    assert!(
        outage >= attack + Duration::from_secs(5),
        "RACKD_TEST_OUTAGE_S must leave room for the {attack:?} attack and detection"
    );
    let topo = {
        let topo = Topology::builder()
            .host("third")
            .build()
            .expect("topology (root needed)");
        for host in topo.hosts() {
            host.sysctl("net.ipv4.tcp_retries2", "3").unwrap();
        }
        topo
    };
    let (client, server, third) = (topo.host("client"), topo.host("server"), topo.host("third"));
    let scratch = Scratch::new(&topo, "forged");
    install_forged_counters(client, &scratch);
    install_forged_counters(server, &scratch);
    let daemons = Daemons::start(&topo);
    let port = 5103;
    let bytes = STREAM_PACE * (outage.as_secs() + 8);
    let options = netns_tests::StreamOptions::new(bytes)
        .pace(STREAM_PACE)
        .port(port)
        .timeout(outage + Duration::from_secs(60));
    let run = netns_tests::StreamRun::start(client, server, options).unwrap();
    let id = assert_connected_on_both(&daemons.client, &daemons.server, port);
    thread::sleep(Duration::from_secs(2));
    cut(&topo, Some((&daemons, &id)));
    let cut_at = Instant::now();

    // The thief reads the id and both endpoints from the server's status.
    let [_, conn] = daemons.conns(&id);
    let conn = conn.unwrap();
    let stolen = Stolen {
        id: ConnId(u64::from_str_radix(&id, 16).unwrap()),
        client: v4(&conn.remote),
        server: v4(&conn.local),
    };
    let forger = forge(third.netns(), third.v4(), stolen, attack);
    // While the path is cut nothing may bring the connection back.
    while cut_at.elapsed() < outage {
        assert!(
            daemons.all_in(&id, ConnState::Suspended, 0),
            "forged packets changed the suspended connection {:?} after the cut: {:#?}\n{}",
            cut_at.elapsed(),
            daemons.conns(&id),
            daemons.logs()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let forgery = forger.join().unwrap();
    daemons.assert_alive("after the forged packets");
    let arrived = [
        forged_arrived(server, "tcp"),
        forged_arrived(server, "udp"),
        forged_arrived(client, "udp"),
    ];
    assert_eq!(
        arrived,
        [
            forgery.syns_to_server,
            forgery.datagrams_to_server,
            forgery.datagrams_to_client
        ],
        "forged packets that reached the server (SYN, UDP) and the client (UDP)"
    );
    let holders = daemons.server.connections();
    assert_eq!(
        holders.iter().filter(|c| c.id == id).count(),
        1,
        "only the real connection carries the stolen id: {holders:?}"
    );
    eprintln!(
        "forged resumption: {} SYNs and {} datagrams reached the daemons' hosts over {attack:?}; \
         connection stayed suspended; {} replies to the third host: {:?}",
        arrived[0],
        arrived[1] + arrived[2],
        forgery.replies.len(),
        forgery.replies.iter().take(3).collect::<Vec<_>>()
    );

    let (_, resumed) = restore(&topo, Some((&daemons, &id)));
    let report = run.wait().unwrap_or_else(|e| {
        panic!(
            "the stream after the forged resumption: {e}\nstatus: {:#?}\n{}\n{}",
            daemons.conns(&id),
            daemons.logs(),
            refusal_counters(&topo)
        )
    });
    assert!(
        report.intact(),
        "transfer after the forged resumption: {:?}\n{}\n{}",
        report.problems(),
        daemons.logs(),
        refusal_counters(&topo)
    );
    daemons.assert_alive("at the end");
    eprintln!(
        "forged resumption: real connection resumed {:?} after the path returned, digests match",
        resumed.unwrap()
    );
}
