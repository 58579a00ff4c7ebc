//! Names of the namespaces a topology creates, and removal of those left by dead runs.
//!
//! Every namespace is named `rk<pid>x<counter>-<host>`: the pid of the creating process makes
//! names unique across parallel test processes (nextest), the counter across tests in one
//! process (cargo test threads), and lets a later run tell a crashed run's namespaces (creator
//! dead) from a live one's. Nothing without this exact shape is ever touched.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;

/// A fresh topology id, `rk<pid>x<counter>`, unique among live topologies on the machine.
pub(crate) fn new_topology_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("rk{}x{n}", std::process::id())
}

/// The pid that created namespace `name`, if the name has the harness shape.
pub(crate) fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("rk")?;
    let (pid, rest) = rest.split_once('x')?;
    let (counter, host) = rest.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(counter) || host.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Names of all named network namespaces (`ip netns list`).
pub(crate) fn list_namespaces() -> crate::Result<Vec<String>> {
    let out = cmd::run("ip", &["netns", "list"])?;
    // Lines look like "name" or "name (id: 3)".
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Whether named namespace `name` exists (`ip netns` keeps them in /run/netns).
pub(crate) fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Deletes harness namespaces whose creating process is gone, killing what still runs in them.
/// Returns the names removed. Errors are reported on stderr, not returned: a failed sweep must
/// not fail an unrelated test.
pub(crate) fn sweep_stale() -> Vec<String> {
    let names = match list_namespaces() {
        Ok(names) => names,
        Err(e) => {
            eprintln!("netns-tests: stale sweep: {e}");
            return Vec::new();
        }
    };
    let own = std::process::id();
    let stale: Vec<String> = names
        .into_iter()
        .filter(|name| {
            creator_pid(name)
                .is_some_and(|pid| pid != own && !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    for name in &stale {
        if let Err(e) = delete_namespace(name) {
            eprintln!("netns-tests: stale sweep: {e}");
        }
    }
    stale
}

/// Kills every process inside namespace `name` by pid, then deletes the namespace.
pub(crate) fn delete_namespace(name: &str) -> crate::Result<()> {
    kill_all_in(name);
    cmd::run("ip", &["netns", "del", name]).map(drop)
}

/// SIGKILLs every process whose network namespace is `name` (`ip netns pids`).
pub(crate) fn kill_all_in(name: &str) {
    let Ok(out) = cmd::run("ip", &["netns", "pids", name]) else {
        return;
    };
    for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        // The process may have exited meanwhile (ESRCH): nothing left to do then.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_accepts_only_the_harness_shape() {
        assert_eq!(creator_pid("rk123x4-client"), Some(123));
        assert_eq!(creator_pid("rk1x0-router"), Some(1));
        for other in [
            "rkd123x4-a",
            "rk123x4",
            "rk123x-a",
            "rkx4-a",
            "rk12a3x4-a",
            "rk123x4-",
            "client",
            "rk123y4-a",
        ] {
            assert_eq!(creator_pid(other), None, "{other}");
        }
    }

    #[test]
    fn topology_ids_are_unique_and_carry_our_pid() {
        let a = new_topology_id();
        let b = new_topology_id();
        assert_ne!(a, b);
        assert_eq!(creator_pid(&format!("{a}-h")), Some(std::process::id()));
    }
}
