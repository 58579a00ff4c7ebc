//! A connection moved through the C ABI with rackd running (netns-tests harness: client,
//! server and a third host, rackd on each with one cluster key). A C program connects from the
//! client and stops; another checkpoints it with `rackhook_checkpoint`; it is killed; on the
//! third host (another address) a third restores the blob with `rackhook_restore` — after a
//! corrupted copy was refused, and before a replay is refused — and continues the exchange.
//! The server program sees one connection and every line in order.
//!
//! Needs root and the rackd binary beside this test's (`cargo build -p rackd`, or `make
//! build`); fails, never skips, without them.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns_tests::{Host, Process, Topology};
use rackctl::client::Client;
use rackctl::proto::ConnState;

mod support;

const PORT: u16 = 5311;
const WAIT: Duration = Duration::from_secs(10);

/// A private directory (cluster key, rackd configs and sockets, the blob), removed with the
/// value.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("rackhook-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(dir)
    }

    /// A fresh cluster key, mode 0600, as rackd requires.
    fn key(&self) -> PathBuf {
        let path = self.0.join("checkpoint.key");
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .unwrap();
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

/// rackd in one host; stopped when dropped.
struct Daemon {
    socket: PathBuf,
    process: Process,
}

impl Daemon {
    fn start(host: &Host, scratch: &Scratch, config: &str) -> Daemon {
        let conf = scratch.0.join(format!("{}.toml", host.name()));
        let socket = scratch.0.join(format!("{}.sock", host.name()));
        std::fs::write(&conf, config).unwrap();
        let rackd = netns_tests::workspace_bin("rackd")
            .expect("the rackd binary (cargo build -p rackd, or make build)");
        let process = host
            .command(rackd)
            .arg("--config")
            .arg(&conf)
            .arg("--control-socket")
            .arg(&socket)
            .spawn()
            .expect("start rackd");
        let daemon = Daemon { socket, process };
        wait_for("rackd to answer", || daemon.connected_ids().is_some());
        daemon
    }

    /// The end of the daemon's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = self.process.stderr();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The ids of the connections with the test port that rackd shows connected.
    fn connected_ids(&self) -> Option<Vec<String>> {
        let status = Client::connect(&self.socket).ok()?.status().ok()?;
        let suffix = format!(":{PORT}");
        let ids = status.connections.into_iter().filter(|c| {
            c.state == ConnState::Connected
                && (c.local.ends_with(&suffix) || c.remote.ends_with(&suffix))
        });
        Some(ids.map(|c| c.id).collect())
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
}

/// What `p` printed, once it exited successfully; else a panic with `daemons`' logs.
fn output_of(p: &Process, what: &str, daemons: &[&Daemon]) -> String {
    let logs = || {
        let tails = daemons.iter().map(|d| d.log_tail());
        tails.collect::<Vec<_>>().join("\n---\n")
    };
    let out = p
        .wait(WAIT)
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}{}\n{}", p.stdout(), p.stderr(), logs()));
    assert!(out.success(), "{what} failed: {out:?}\n{}", logs());
    out.stdout
}

#[test]
fn a_connection_moves_to_another_host_through_the_c_abi() {
    let topo = Topology::builder()
        .host("third")
        .build()
        .unwrap_or_else(|e| panic!("building the test topology: {e} (this test needs root)"));
    let (client, server, third) = (topo.host("client"), topo.host("server"), topo.host("third"));
    let scratch = Scratch::new();
    let config = format!("[checkpoint]\nkey_file = \"{}\"\n", scratch.key().display());
    let (cd, sd, td) = (
        Daemon::start(client, &scratch, &config),
        Daemon::start(server, &scratch, &config),
        Daemon::start(third, &scratch, &config),
    );
    let program = support::compile_c("move", support::Link::Shared);
    let port = PORT.to_string();

    let serving = server
        .command(&program)
        .args(["serve", &port])
        .spawn()
        .unwrap();
    serving.wait_for_output("listening", WAIT).unwrap();
    let first = client
        .command(&program)
        .args(["connect", &server.v4().to_string(), &port])
        .spawn()
        .unwrap();
    first
        .wait_for_output("got=echo: one", WAIT)
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", first.stderr()));
    let fd = first
        .stdout()
        .split("fd=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    wait_for("the connection to be managed on both ends", || {
        let ids = (cd.connected_ids(), sd.connected_ids());
        matches!(ids, (Some(c), Some(s)) if c.len() == 1 && c == s)
    });
    wait_for("the client to stop", || stopped(first.pid()));

    let blob = scratch.0.join("conn.blob");
    let pid = first.pid().to_string();
    let checkpoint = client
        .command(&program)
        .args(["checkpoint", &pid, &fd])
        .arg(&blob)
        .env("RACKD_CONTROL_SOCKET", &cd.socket)
        .spawn()
        .unwrap();
    let said = output_of(&checkpoint, "checkpoint", &[&cd, &sd]);
    assert!(said.starts_with("checkpoint: "), "{said}");
    eprint!("{said}");
    first.kill().unwrap();

    let resumed = third
        .command(&program)
        .arg("resume")
        .arg(&blob)
        .env("RACKD_CONTROL_SOCKET", &td.socket)
        .spawn()
        .unwrap();
    let resumed = output_of(&resumed, "resume on the third host", &[&td, &sd]);
    eprint!("{resumed}");
    let lines: Vec<&str> = resumed.lines().collect();
    assert_eq!(lines.len(), 3, "{resumed}");
    assert!(
        lines[0].starts_with("corrupted: -1 rackhook_restore: rackd refused")
            && lines[0].contains("blob authentication failed"),
        "{resumed}"
    );
    assert!(
        lines[1].starts_with("replayed: -1 rackhook_restore: rackd refused")
            && lines[1].contains("already restored on this host"),
        "{resumed}"
    );
    assert_eq!(lines[2], "resumed got: queued | echo: two");
    assert_eq!(
        output_of(&serving, "server", &[&sd]),
        "listening\nserver got: one two\n"
    );
}
