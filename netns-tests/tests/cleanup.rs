//! Teardown leaves nothing behind: not after ten tests in parallel with one panicking inside a
//! helper, not after a run is killed (the next build sweeps it), and the sweep touches nothing
//! else. The `child_*` tests are not run on their own: the tests here run them in a child
//! process of this test binary and inspect what is left afterwards.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use netns_tests::{Error, Process, Topology};

/// Environment variable carrying a token that every process a child test starts inherits.
const TOKEN_VAR: &str = "RK_LEAK_TOKEN";

/// Work of one child test: programs (one with a grandchild, one whose handle is lost so that
/// only teardown can end it), a cut, a firewall. Returns the handle that is kept.
fn exercise(topo: &Topology) -> Process {
    let kept = topo.host("client").spawn("sleep", ["300"]).expect("spawn");
    let server = topo.host("server");
    std::mem::forget(
        server
            .spawn("sh", ["-c", "sleep 300 & wait"])
            .expect("spawn"),
    );
    topo.cut("client", "server").expect("cut");
    server.firewall_stateful(&[22]).expect("firewall");
    sleep(Duration::from_millis(300));
    kept
}

/// Child tests fail (one on purpose) or hang when run on their own: refuse that.
fn require_parent() {
    assert!(
        std::env::var_os(TOKEN_VAR).is_some(),
        "child tests are run by the tests in cleanup.rs, not on their own"
    );
}

/// A test helper that fails, as helpers do.
fn helper_that_panics(topo: &Topology) {
    let client = topo.host("client");
    let _busy = client.spawn("sleep", ["300"]).expect("spawn");
    panic!("deliberate panic inside a helper ({})", topo.id());
}

macro_rules! child_tests {
    ($($name:ident: $panics:expr),* $(,)?) => {$(
        #[test]
        #[ignore = "child test, run by the tests in cleanup.rs"]
        fn $name() {
            require_parent();
            let topo = Topology::builder().host("third").build().expect("topology");
            let _running = exercise(&topo);
            if $panics {
                helper_that_panics(&topo);
            }
        }
    )*};
}

child_tests! {
    child_parallel_0: false, child_parallel_1: false, child_parallel_2: false,
    child_parallel_3: false, child_parallel_4: false, child_parallel_5: false,
    child_parallel_6: true, child_parallel_7: false, child_parallel_8: false,
    child_parallel_9: false,
}

#[test]
#[ignore = "child test, run by the tests in cleanup.rs"]
fn child_build_and_hang() {
    require_parent();
    let topo = Topology::new().expect("topology");
    let _running = exercise(&topo);
    println!("READY {}", topo.id());
    sleep(Duration::from_secs(120));
}

#[test]
#[ignore = "child test, run by the tests in cleanup.rs"]
fn child_non_root_build_fails() {
    require_parent();
    let err = Topology::new().expect_err("building without root must fail");
    assert!(
        matches!(err, Error::NotRoot { euid } if euid != 0),
        "{err:?}"
    );
    assert!(err.to_string().contains("needs root"), "{err}");
}

/// This test binary, running the child tests matching `filter`, with a fresh leak token.
fn child_command(filter: &str, token: &str) -> Command {
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--nocapture", "--test-threads=10", filter])
        .env(TOKEN_VAR, token);
    cmd
}

fn new_token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// Harness namespaces created by process `pid`.
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let prefix = format!("rk{pid}x");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Pids of live processes whose environment holds `token`.
fn processes_with(token: &str) -> Vec<u32> {
    let needle = format!("{TOKEN_VAR}={token}");
    let entries = std::fs::read_dir("/proc").expect("/proc");
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn ten_parallel_tests_with_a_panic_leave_nothing_behind() {
    let token = new_token("parallel");
    let child = child_command("child_parallel_", &token)
        .output()
        .expect("run child tests");
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        !child.status.success(),
        "one child test panics on purpose:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("9 passed; 1 failed"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("deliberate panic inside a helper")
            || stderr.contains("deliberate panic inside a helper"),
        "{stdout}\n{stderr}"
    );
    // The child's pid is in its namespace names; none may be left, nor any process it started.
    let pid = child_pid_from(&stdout, &stderr);
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    assert_eq!(processes_with(&token), Vec::<u32>::new());
}

/// The pid in `deliberate panic inside a helper (rk<pid>x<n>)`.
fn child_pid_from(stdout: &str, stderr: &str) -> u32 {
    let text = format!("{stdout}{stderr}");
    let at = text
        .find("helper (rk")
        .expect("topology id in the panic message")
        + "helper (rk".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("pid")
}

#[test]
fn a_killed_run_is_swept_by_the_next_build() {
    let token = new_token("killed");
    let mut child = child_command("child_build_and_hang", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run child test");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("READY"));
    assert!(ready.is_some(), "child test did not get ready");
    let pid = child.id();
    assert_eq!(
        namespaces_of(pid).len(),
        3,
        "client, server, router while the child lives"
    );
    assert!(!processes_with(&token).is_empty());
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    // Its programs outlive it, its namespaces stay, until the next build sweeps them.
    let _topo = Topology::new().expect("topology");
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !processes_with(&token).is_empty() && std::time::Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_with(&token), Vec::<u32>::new());
}

/// Deletes a namespace made by a test, also if the test fails.
struct ForeignNamespace(String);

impl ForeignNamespace {
    fn create(name: String) -> ForeignNamespace {
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip");
        assert!(status.success(), "ip netns add {name}");
        ForeignNamespace(name)
    }

    fn exists(&self) -> bool {
        std::path::Path::new("/run/netns").join(&self.0).exists()
    }
}

impl Drop for ForeignNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_sweep_leaves_live_runs_and_other_namespaces_alone() {
    let me = std::process::id();
    // Harness-shaped, creator alive (pid 1 always is); and not harness-shaped at all.
    let live = ForeignNamespace::create(format!("rk1x{me}-probe"));
    let other = ForeignNamespace::create(format!("rkprobe{me}-client"));
    let _topo = Topology::new().expect("topology");
    assert!(live.exists(), "a live run's namespace was removed");
    assert!(
        other.exists(),
        "a namespace without the harness prefix was removed"
    );
}

#[test]
fn building_without_root_fails_with_a_message() {
    // The test binary is copied where an unprivileged user can run it.
    let exe = std::env::current_exe().expect("own path");
    let copy = std::env::temp_dir().join(format!("rk-nonroot-{}", std::process::id()));
    std::fs::copy(&exe, &copy).expect("copy test binary");
    let out = Command::new(&copy)
        .args(["--ignored", "--exact", "child_non_root_build_fails"])
        .env(TOKEN_VAR, new_token("nonroot"))
        .uid(65534)
        .gid(65534)
        .current_dir(std::env::temp_dir())
        .output();
    let _ = std::fs::remove_file(&copy);
    let out = out.expect("run child test as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
