//! The real `rackctl` binary against a fake daemon on a temporary unix socket.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rackctl::proto::{ErrorCode, Request, Response, Status};
use rackctl::server::MAX_REQUEST_LINE;
use support::{sample_status, Behaviour, FakeDaemon, KNOWN_ID};

const NOBODY: u32 = 65534;

/// `rackctl` with a clean environment apart from what the test sets.
fn rackctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rackctl"));
    for var in [
        "RACKCTL_CONTROL_SOCKET",
        "RACKCTL_JSON",
        "RACKCTL_INTERVAL",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(daemon: &FakeDaemon, args: &[&str]) -> Output {
    rackctl()
        .arg("--control-socket")
        .arg(daemon.socket())
        .args(args)
        .output()
        .expect("run rackctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn status_reads_like_wg_show() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let out = run(&daemon, &["status"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains('\x1b'), "colour on a pipe:\n{stdout}");
    let want = "\
rackd: pid 4242
  version: 0.1.0
  uptime: 1 day, 1 hour
  queue mode: native
  packets: 1500 queued, 3 dropped
  connections: 1 connected, 1 suspended

connection: 1f2e
  state: connected
  local: 192.0.2.1:51000
  remote: 198.51.100.7:443
  peer: rackd 0.1.0
  age: 12 seconds
  transfer: 3.00 KiB received, 1.20 MiB sent
  latest heartbeat: 40 ms ago

connection: 00ab
  state: suspended
  local: [2001:db8::9]:40000
  remote: [2001:db8::2]:22
  socket sees: [2001:db8::1]:40000 -> [2001:db8::2]:22
  peer: rackd 0.1.0
  age: 1 hour, 2 minutes
  suspended for: 1 minute, 3 seconds
  reconnects: 2
  transfer: 3.00 KiB received, 1.20 MiB sent
  latest heartbeat: 40 ms ago
";
    assert_eq!(stdout, want);
    assert_eq!(daemon.requests(), [Request::Status]);
}

#[test]
fn status_json_is_the_status_object() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let out = run(&daemon, &["status", "--json"]);
    assert_exit(&out, 0);
    let parsed: Status = serde_json::from_slice(&out.stdout).expect("stdout is one status");
    assert_eq!(parsed, sample_status());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let conn = &value["connections"][0];
    for key in [
        "id",
        "state",
        "local",
        "remote",
        "original_local",
        "original_remote",
    ] {
        assert!(conn[key].is_string(), "{key} missing in {conn}");
    }
    assert_eq!(conn["suspended_for_s"], 63);
    assert_eq!(value["daemon"]["states"]["suspended"], 1);
}

#[test]
fn every_flag_reads_its_environment_variable() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let out = rackctl()
        .env("RACKCTL_CONTROL_SOCKET", daemon.socket())
        .env("RACKCTL_JSON", "yes")
        .arg("status")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let parsed: Status = serde_json::from_slice(&out.stdout).expect("JSON from RACKCTL_JSON");
    assert_eq!(parsed.daemon.pid, 4242);

    let out = rackctl()
        .env("RACKCTL_CONTROL_SOCKET", daemon.socket())
        .env("RACKCTL_INTERVAL", "0.25")
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_lines(out, 1);
    assert_eq!(
        daemon.requests(),
        [
            Request::Status,
            Request::Watch {
                interval_ms: Some(250)
            }
        ]
    );
}

#[test]
fn changes_reach_the_daemon_and_print_nothing() {
    let daemon = FakeDaemon::start(Behaviour::default());
    for args in [
        ["suspend", "00AB", ""],
        ["resume", KNOWN_ID, ""],
        ["peer", KNOWN_ID, "2001:DB8::5"],
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let out = run(&daemon, &args);
        assert_exit(&out, 0);
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{args:?}");
    }
    let id = || KNOWN_ID.to_string();
    assert_eq!(
        daemon.requests(),
        [
            Request::Suspend { id: id() },
            Request::Resume { id: id() },
            Request::Peer {
                id: id(),
                addr: "2001:db8::5".into()
            },
        ]
    );
}

#[test]
fn unknown_connection_is_exit_1_with_the_daemons_reason() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let out = run(&daemon, &["resume", "0bad"]);
    assert_exit(&out, 1);
    assert_eq!(
        text(&out.stderr),
        "rackctl: rackd refused (not_found): no connection 0bad\n"
    );
}

#[test]
fn permission_denied_from_the_daemon_is_explained() {
    let daemon = FakeDaemon::start(Behaviour {
        deny_changes: true,
        ..Behaviour::default()
    });
    let out = run(&daemon, &["suspend", KNOWN_ID]);
    assert_exit(&out, 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .starts_with("rackctl: permission denied: suspend changes connections and needs root"),
        "{stderr}"
    );
    assert!(stderr.contains("try sudo"), "{stderr}");
    assert_exit(&run(&daemon, &["status"]), 0);
}

#[test]
fn missing_socket_asks_whether_rackd_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let out = rackctl()
        .arg("--control-socket")
        .arg(&path)
        .arg("status")
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert_eq!(
        text(&out.stderr),
        format!(
            "rackctl: is rackd running? no control socket at {} (see --control-socket)\n",
            path.display()
        )
    );
}

#[test]
fn daemon_hanging_up_is_an_error_not_silence() {
    let daemon = FakeDaemon::start(Behaviour {
        hang_up: true,
        ..Behaviour::default()
    });
    let out = run(&daemon, &["status"]);
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("closed the connection without answering"),
        "{}",
        text(&out.stderr)
    );
}

/// Fails (rather than skipping) when the tests cannot switch users.
fn require_root() {
    let euid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    assert_eq!(euid, 0, "this test runs rackctl as nobody and needs root");
}

fn run_as_nobody(daemon: &FakeDaemon, args: &[&str]) -> Output {
    rackctl()
        .uid(NOBODY)
        .gid(NOBODY)
        .arg("--control-socket")
        .arg(daemon.socket())
        .args(args)
        .output()
        .expect("run rackctl as nobody")
}

#[test]
fn socket_mode_keeps_other_users_out_with_a_clear_message() {
    require_root();
    let daemon = FakeDaemon::start(Behaviour::default());
    daemon.set_socket_mode(0o600);
    let out = run_as_nobody(&daemon, &["status"]);
    assert_exit(&out, 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "rackctl: permission denied on {}",
            daemon.socket().display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("group (default \"rackd\")"), "{stderr}");
    assert!(daemon.requests().is_empty());

    daemon.set_socket_mode(0o666);
    assert_exit(&run_as_nobody(&daemon, &["status"]), 0);
}

#[test]
fn bad_arguments_exit_2_with_clap_errors() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let cases: [&[&str]; 9] = [
        &[],
        &["reboot"],
        &["status", "--bogus"],
        &["suspend"],
        &["suspend", "not-hex"],
        &["peer", KNOWN_ID],
        &["peer", KNOWN_ID, "192.0.2"],
        &["watch", "--interval", "0"],
        &["completions", "tcsh"],
    ];
    for args in cases {
        let out = run(&daemon, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("error:") || stderr.contains("Usage:"),
            "{args:?}: {stderr}"
        );
    }
    let out = run(&daemon, &["suspend", "not-hex"]);
    assert!(text(&out.stderr).contains("\"not-hex\" is not a connection id"));
    assert!(daemon.requests().is_empty(), "nothing may reach the daemon");
}

/// Reads `n` lines from a running `rackctl watch`, then stops it; the lines must come soon.
fn first_lines(mut child: std::process::Child, n: usize) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .take(n)
            .collect::<Result<Vec<_>, _>>()
    });
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let finished = reader.is_finished();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        finished,
        "rackctl watch printed fewer than {n} lines in 10 s"
    );
    reader.join().unwrap().expect("watch output")
}

fn watch(daemon: &FakeDaemon, args: &[&str]) -> std::process::Child {
    rackctl()
        .arg("--control-socket")
        .arg(daemon.socket())
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn rackctl watch")
}

#[test]
fn watch_streams_json_lines() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let lines = first_lines(watch(&daemon, &["--interval", "0.05", "--json"]), 3);
    for line in lines {
        let s: Status = serde_json::from_str(&line).expect("one status per line");
        assert_eq!(s, sample_status());
    }
    assert_eq!(
        daemon.requests(),
        [Request::Watch {
            interval_ms: Some(50)
        }]
    );
}

#[test]
fn watch_polls_a_daemon_that_does_not_stream() {
    let daemon = FakeDaemon::start(Behaviour {
        no_streaming: true,
        ..Behaviour::default()
    });
    let lines = first_lines(watch(&daemon, &["--interval", "0.05"]), 60);
    let blocks = lines.iter().filter(|l| l.starts_with("rackd: pid")).count();
    assert!(blocks >= 2, "{lines:#?}");
    let requests = daemon.requests();
    assert_eq!(
        requests[0],
        Request::Watch {
            interval_ms: Some(50)
        }
    );
    assert!(requests[1..].iter().all(|r| *r == Request::Status));
}

/// Sends raw bytes to the fake daemon (which uses the codec rackd uses) and returns its answer.
fn raw_exchange(daemon: &FakeDaemon, request: &[u8]) -> (Response, UnixStream) {
    let mut stream = UnixStream::connect(daemon.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    (
        serde_json::from_str(&line).expect("a response line"),
        stream,
    )
}

#[test]
fn server_codec_refuses_an_oversize_line_and_hangs_up() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let mut huge = br#"{"v":1,"cmd":"status","pad":""#.to_vec();
    huge.resize(MAX_REQUEST_LINE + 5000, b'x');
    huge.extend_from_slice(b"\"}\n");
    let (response, mut stream) = raw_exchange(&daemon, &huge);
    let error = response.error.expect("an error");
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(
        error.message.contains("longer than the limit of 65536"),
        "{error}"
    );
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the refusal");
    assert!(daemon.requests().is_empty());
}

#[test]
fn server_codec_names_unknown_commands_and_versions() {
    let daemon = FakeDaemon::start(Behaviour::default());
    let (r, _) = raw_exchange(&daemon, b"{\"v\":1,\"cmd\":\"teleport\",\"id\":\"1\"}\n");
    let e = r.error.unwrap();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("\"teleport\""), "{e}");
    let (r, _) = raw_exchange(&daemon, b"{\"v\":3,\"cmd\":\"status\"}\n");
    assert_eq!(r.error.unwrap().code, ErrorCode::UnsupportedVersion);
    let (r, _) = raw_exchange(&daemon, b"{\"v\":1,\"cmd\":\"status\",\"future\":1}\n");
    assert!(r.ok && r.status.is_some());
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = rackctl().args(["completions", shell]).output().unwrap();
        assert_exit(&out, 0);
        let script = text(&out.stdout);
        assert!(
            script.contains("suspend") && script.contains("control-socket"),
            "{shell}"
        );
    }
    let out = rackctl().arg("man").output().unwrap();
    assert_exit(&out, 0);
    let page = text(&out.stdout);
    assert!(page.contains(".TH rackctl 1"), "{page}");
    assert!(page.contains("RACKCTL_CONTROL_SOCKET"), "{page}");
}
