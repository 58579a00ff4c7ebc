//! `rackctl` against real rackds: a client and a server host (crate netns-tests), each running
//! rackd with its control socket `root:nogroup 0660` in a temporary directory, and TCP
//! connections between them made by socat. Needs root; every test builds its own topology, so
//! they run in parallel and clean up (processes by pid, namespaces) also when they fail.
//!
//! Every command runs against a live daemon, including suspend, resume and peer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns_tests::{Family, Host, Output, Process, Topology};
use rackctl::proto::Status;
use serde_json::Value;

const RUN: Duration = Duration::from_secs(10);
/// An unprivileged user, with the socket's group (nogroup) or without it.
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
const OTHER_GROUP: u32 = 4242;
/// States of a connection between two rackds once both have seen its handshake and finished
/// initialisation.
const MANAGED: &[&str] = &["connected"];

/// A topology with rackd running in some of its hosts. Field order is drop order: daemons
/// and programs are killed first, then the namespaces go, then the directory.
struct Live {
    programs: Vec<Process>,
    topo: Topology,
    dir: tempfile::TempDir,
}

impl Live {
    /// rackd in `client` and `server`.
    fn start() -> Live {
        let topo = Topology::new().expect("a client-router-server topology (needs root)");
        let dir = tempfile::tempdir().unwrap();
        // Other users must reach the sockets inside; the sockets' own mode decides.
        set_mode(dir.path(), 0o755);
        let mut live = Live {
            programs: Vec::new(),
            topo,
            dir,
        };
        for host in ["client", "server"] {
            live.start_rackd(host);
        }
        live
    }

    fn start_rackd(&mut self, host: &str) {
        let config = self.dir.path().join(format!("{host}.toml"));
        let text = format!(
            "[control]\nsocket = \"{}\"\ngroup = \"nogroup\"\nmode = \"0660\"\n",
            self.socket(host).display()
        );
        std::fs::write(&config, text).unwrap();
        let rackd = netns_tests::workspace_bin("rackd").unwrap_or_else(|e| {
            panic!("{e} (cargo test --workspace builds it; or cargo build -p rackd)")
        });
        let daemon = self
            .host(host)
            .command(rackd)
            .arg("--config")
            .arg(config)
            .spawn()
            .unwrap();
        if let Err(e) = daemon.wait_for_output("rackd ready", RUN) {
            panic!("rackd in {host} did not start: {e}\n{}", daemon.stderr());
        }
        self.programs.push(daemon);
    }

    fn host(&self, name: &str) -> &Host {
        self.topo.host(name)
    }

    fn socket(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}.sock"))
    }

    fn rackd_pid(&self, host: &str) -> u32 {
        let netns = self.host(host).netns();
        let daemon = self.programs.iter().find(|p| p.command().contains(netns));
        daemon.expect("a rackd in this host").pid()
    }

    /// `rackctl --control-socket <host's socket> ARGS` run as root inside `host`.
    fn rackctl(&self, host: &str, args: &[&str]) -> Output {
        self.rackctl_as(host, None, args)
    }

    fn rackctl_as(&self, host: &str, user: Option<(u32, u32)>, args: &[&str]) -> Output {
        let mut cmd = self
            .host(host)
            .command(env!("CARGO_BIN_EXE_rackctl"))
            .arg("--control-socket")
            .arg(self.socket(host))
            .args(args);
        if let Some((uid, gid)) = user {
            cmd = cmd.user(uid, gid);
        }
        cmd.run(RUN).expect("rackctl runs")
    }

    fn status(&self, host: &str) -> Value {
        let out = self.rackctl(host, &["status", "--json"]);
        assert_exit(&out, 0);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    /// A TCP connection from client to server on `port`, kept open by two socats.
    fn connect(&mut self, family: Family, port: u16) {
        let server_ip = self.host("server").ip(family);
        let (listen, connect) = match family {
            Family::V4 => (
                format!("TCP4-LISTEN:{port}"),
                format!("TCP4:{server_ip}:{port}"),
            ),
            Family::V6 => (
                format!("TCP6-LISTEN:{port}"),
                format!("TCP6:[{server_ip}]:{port}"),
            ),
        };
        // Connect only once the listener is up: a refused attempt would leave a flow of its own.
        let server = self.host("server").command("socat").stdin_piped();
        let server = server.args(["-d", "-d", &listen, "STDIO"]).spawn().unwrap();
        server.wait_for_output("listening on", RUN).unwrap();
        let client = self.host("client").command("socat").stdin_piped();
        let client = client.args(["STDIO", &connect]).spawn().unwrap();
        self.programs.extend([server, client]);
    }

    /// Waits until both daemons show the same `n` managed connections (both ends know the
    /// connection's full id once each has seen the other's handshake); returns both statuses.
    fn wait_managed(&self, n: usize) -> (Value, Value) {
        let start = Instant::now();
        loop {
            let (c, s) = (self.status("client"), self.status("server"));
            let ids = |st: &Value| {
                let conns = connections(st);
                let managed = conns
                    .iter()
                    .all(|c| MANAGED.contains(&c["state"].as_str().unwrap_or("")));
                let mut ids: Vec<String> = conns.iter().map(|c| c["id"].to_string()).collect();
                ids.sort();
                (managed && conns.len() == n).then_some(ids)
            };
            if ids(&c).is_some() && ids(&c) == ids(&s) {
                return (c, s);
            }
            assert!(
                start.elapsed() < RUN,
                "not {n} managed connections on both sides:\nclient {c:#}\nserver {s:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `host` shows its connection on the server's `port` in `state`; returns it.
    fn wait_state(&self, host: &str, port: u16, state: &str) -> Value {
        let start = Instant::now();
        loop {
            let c = by_port(&self.status(host), port);
            if c["state"] == state {
                return c;
            }
            assert!(start.elapsed() < RUN, "not {state}: {c:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn connections(status: &Value) -> Vec<Value> {
    status["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}\nstdout: {}\nstderr: {}",
        out.command,
        out.stdout,
        out.stderr
    );
}

/// The connection of `status` to or from the server's `port` (its local or remote end).
fn by_port(status: &Value, port: u16) -> Value {
    let suffix = format!(":{port}");
    let at = |c: &Value, end: &str| c[end].as_str().is_some_and(|a| a.ends_with(&suffix));
    connections(status)
        .into_iter()
        .find(|c| at(c, "remote") || at(c, "local"))
        .unwrap_or_else(|| panic!("no connection on port {port}: {status:#}"))
}

#[test]
fn status_shows_connections_between_two_rackds_as_text_and_json() {
    let mut live = Live::start();
    live.connect(Family::V4, 5001);
    live.connect(Family::V6, 5002);
    let (client, server) = live.wait_managed(2);

    let daemon = &client["daemon"];
    assert_eq!(daemon["pid"], live.rackd_pid("client"));
    assert_eq!(daemon["version"], env!("CARGO_PKG_VERSION"));
    assert!(["native", "compat"].contains(&daemon["queue_mode"].as_str().unwrap()));
    assert!(
        daemon["packets_queued"].as_u64().unwrap() >= 2,
        "{daemon:#}"
    );
    let states = &daemon["states"];
    let managed: u64 = MANAGED.iter().map(|m| states[m].as_u64().unwrap()).sum();
    assert_eq!(managed, 2, "{daemon:#}");

    let (c4, c6) = (by_port(&client, 5001), by_port(&client, 5002));
    let (s4, s6) = (by_port(&server, 5001), by_port(&server, 5002));
    assert_eq!(c4["remote"], "198.51.100.2:5001");
    assert_eq!(c6["remote"], "[2001:db8:2::2]:5002");
    assert!(
        c4["local"].as_str().unwrap().starts_with("192.0.2.2:"),
        "{c4}"
    );
    assert!(
        c6["local"]
            .as_str()
            .unwrap()
            .starts_with("[2001:db8:1::2]:"),
        "{c6}"
    );
    for (c, s) in [(&c4, &s4), (&c6, &s6)] {
        assert_eq!(c["id"], s["id"], "both ends name the connection alike");
        assert!(c["id"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
        assert_eq!((&c["local"], &c["remote"]), (&s["remote"], &s["local"]));
        // Not spliced: the sockets see the addresses on the wire.
        assert_eq!(
            (&c["original_local"], &c["original_remote"]),
            (&c["local"], &c["remote"])
        );
        assert_eq!(
            (&c["suspended_for_s"], &c["reconnects"]),
            (&0.into(), &0.into())
        );
    }
    assert_ne!(c4["id"], c6["id"]);

    let out = live.rackctl("client", &["status"]);
    assert_exit(&out, 0);
    let text = &out.stdout;
    assert!(
        text.starts_with(&format!("rackd: pid {}\n", live.rackd_pid("client"))),
        "{text}"
    );
    let state = c4["state"].as_str().unwrap();
    assert_eq!(c6["state"], state, "{client:#}");
    assert!(
        text.contains(&format!("\n  connections: 2 {state}\n")),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
    for c in [&c4, &c6] {
        let block = format!(
            "connection: {}\n  state: {state}\n  local: {}\n  remote: {}\n  age: ",
            c["id"].as_str().unwrap(),
            c["local"].as_str().unwrap(),
            c["remote"].as_str().unwrap()
        );
        assert!(text.contains(&block), "{block}\nnot in:\n{text}");
    }
}

/// Runs `rackctl watch ARGS` in the client host until `lines` lines came out, then kills it.
fn watch(live: &Live, user: Option<(u32, u32)>, args: &[&str], lines: usize) -> Vec<String> {
    let mut cmd = live
        .host("client")
        .command(env!("CARGO_BIN_EXE_rackctl"))
        .arg("--control-socket")
        .arg(live.socket("client"))
        .arg("watch")
        .args(args);
    if let Some((uid, gid)) = user {
        cmd = cmd.user(uid, gid);
    }
    let process = cmd.spawn().unwrap();
    let start = Instant::now();
    while process.stdout().lines().count() < lines {
        assert!(
            process.try_wait().unwrap().is_none(),
            "watch stopped: {}",
            process.stderr()
        );
        assert!(start.elapsed() < RUN, "watch printed: {}", process.stdout());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = process.kill().unwrap();
    out.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn watch_repeats_the_status_as_json_lines_and_as_text() {
    let mut live = Live::start();
    live.connect(Family::V4, 5003);
    let (client, _) = live.wait_managed(1);
    let id = by_port(&client, 5003)["id"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let lines = watch(&live, None, &["--json", "--interval", "0.2"], 3);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "paced by --interval"
    );
    for line in &lines[..3] {
        let s: Status = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(s.daemon.pid, live.rackd_pid("client"));
        assert_eq!(s.connections.len(), 1);
        assert_eq!(s.connections[0].id, id);
    }
    let text = watch(&live, None, &["--interval", "0.2"], 30);
    let frames = text.iter().filter(|l| l.starts_with("rackd: pid ")).count();
    assert!(frames >= 2, "{text:#?}");
    assert!(text.contains(&format!("connection: {id}")), "{text:#?}");
}

#[test]
fn an_unprivileged_member_reads_status_but_is_refused_changes() {
    let live = Live::start();
    let member = Some((NOBODY, NOGROUP));
    let as_root = live.status("client");
    let out = live.rackctl_as("client", member, &["status", "--json"]);
    assert_exit(&out, 0);
    let as_member: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(as_member["daemon"]["pid"], as_root["daemon"]["pid"]);
    assert_exit(&live.rackctl_as("client", member, &["status"]), 0);
    let lines = watch(&live, member, &["--json", "--interval", "0.05"], 2);
    assert!(lines[1].starts_with("{\"daemon\":{"), "{lines:?}");

    for args in [
        &["suspend", "00ab"][..],
        &["resume", "00ab"],
        &["peer", "00ab", "198.51.100.3"],
    ] {
        let out = live.rackctl_as("client", member, args);
        assert_exit(&out, 1);
        let want = format!(
            "rackctl: permission denied: {} changes connections and needs root \
             (caller uid {NOBODY}) (changing connections needs root; try sudo)",
            args[0]
        );
        assert_eq!(out.stderr.trim_end(), want);
        assert!(out.stdout.is_empty());
    }

    // Outside the socket's group the socket itself keeps the user out.
    let out = live.rackctl_as("client", Some((NOBODY, OTHER_GROUP)), &["status"]);
    assert_exit(&out, 1);
    let want = format!(
        "rackctl: permission denied on {}: reading status needs membership",
        live.socket("client").display()
    );
    assert!(out.stderr.starts_with(&want), "{}", out.stderr);
}

#[test]
fn root_is_told_which_id_is_unknown_and_bad_arguments_exit_2_naming_the_value() {
    let live = Live::start();
    for args in [
        &["suspend", "ffff"][..],
        &["resume", "ffff"],
        &["peer", "ffff", "2001:db8:2::3"],
    ] {
        let out = live.rackctl("client", args);
        assert_exit(&out, 1);
        let err = &out.stderr;
        assert!(err.starts_with("rackctl: rackd refused ("), "{err}");
        let not_found =
            err.starts_with("rackctl: rackd refused (not_found)") && err.contains("ffff");
        assert!(not_found, "{err}");
    }

    let cases: [(&[&str], &str); 7] = [
        (&["suspend", "zz-top"], "\"zz-top\" is not a connection id"),
        (&["resume"], "<ID>"),
        (&["peer", "00ab", "198.51.100"], "'198.51.100'"),
        (
            &["peer", "00ab", "198.51.100.3:7113"],
            "'198.51.100.3:7113'",
        ),
        (
            &["watch", "--interval", "0"],
            "\"0\" is not a number of seconds",
        ),
        (&["status", "--json=perhaps"], "'perhaps'"),
        (&["reboot"], "'reboot'"),
    ];
    for (args, named) in cases {
        let out = live.rackctl("client", args);
        assert_exit(&out, 2);
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(named),
            "{args:?} should name {named}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Nothing of the above changed the daemon.
    assert_eq!(
        live.status("client")["daemon"]["pid"],
        live.rackd_pid("client")
    );
}

#[test]
fn completions_and_man_page_need_no_daemon() {
    let live = Live::start();
    // A socket path where nothing listens: these commands must not try it.
    let nowhere = ["--control-socket", "/nonexistent/control.sock"];
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef rackctl"),
        ("fish", "complete -c rackctl"),
    ] {
        let out = live
            .host("client")
            .command(env!("CARGO_BIN_EXE_rackctl"))
            .args(nowhere)
            .args(["completions", shell])
            .run(RUN)
            .unwrap();
        assert_exit(&out, 0);
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        for word in [
            "status",
            "suspend",
            "resume",
            "peer",
            "watch",
            "control-socket",
        ] {
            assert!(out.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = live
        .host("client")
        .command(env!("CARGO_BIN_EXE_rackctl"))
        .args(nowhere)
        .arg("man")
        .run(RUN)
        .unwrap();
    assert_exit(&out, 0);
    assert!(out.stdout.contains(".TH rackctl 1"), "{}", out.stdout);
}

#[test]
fn a_stopped_daemon_is_reported_as_not_running() {
    let live = Live::start();
    let pid = live.rackd_pid("client").to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let daemon = live
        .programs
        .iter()
        .find(|p| p.pid().to_string() == pid)
        .unwrap();
    assert_exit(&daemon.wait(RUN).unwrap(), 0);
    for args in [&["status"][..], &["suspend", "00ab"]] {
        let out = live.rackctl("client", args);
        assert_exit(&out, 1);
        let want = format!(
            "rackctl: is rackd running? no control socket at {} (see --control-socket)\n",
            live.socket("client").display()
        );
        assert_eq!(out.stderr, want);
    }
}

#[test]
fn suspend_and_resume_a_live_connection() {
    let mut live = Live::start();
    live.connect(Family::V4, 5004);
    live.wait_managed(1);
    let c = live.wait_state("client", 5004, "connected");
    let id = c["id"].as_str().unwrap().to_owned();

    let out = live.rackctl("client", &["suspend", &id]);
    assert_exit(&out, 0);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    live.wait_state("client", 5004, "suspended");
    std::thread::sleep(Duration::from_millis(1100));
    let c = live.wait_state("client", 5004, "suspended");
    assert!(c["suspended_for_s"].as_u64().unwrap() >= 1, "{c:#}");
    let text = live.rackctl("client", &["status"]).stdout;
    assert!(text.contains("  state: suspended\n  local: "), "{text}");
    assert!(text.contains("  suspended for: "), "{text}");

    assert_exit(&live.rackctl("client", &["resume", &id]), 0);
    let c = live.wait_state("client", 5004, "connected");
    assert_eq!(
        (&c["id"], &c["suspended_for_s"]),
        (&Value::from(id.as_str()), &0.into())
    );

    // Commands on a connection that is not suspended are refused with its state.
    let out = live.rackctl("client", &["resume", &id]);
    assert_exit(&out, 1);
    assert!(out.stderr.contains("invalid_state"), "{}", out.stderr);
}

/// The target behaviour of peer (issue 8): a suspended connection accepts its peer's address.
#[test]
fn peer_gives_a_suspended_connection_an_address() {
    let mut live = Live::start();
    live.connect(Family::V6, 5005);
    live.wait_managed(1);
    let id = live.wait_state("client", 5005, "connected")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let server_ip = live.host("server").v6().to_string();
    // Not suspended: refused with the connection's state.
    let out = live.rackctl("client", &["peer", &id, &server_ip]);
    assert_exit(&out, 1);
    assert!(out.stderr.contains("invalid_state"), "{}", out.stderr);
    assert_exit(&live.rackctl("client", &["suspend", &id]), 0);
    assert_exit(&live.rackctl("client", &["peer", &id, &server_ip]), 0);
    assert_exit(&live.rackctl("client", &["resume", &id]), 0);
    live.wait_state("client", 5005, "connected");
}
