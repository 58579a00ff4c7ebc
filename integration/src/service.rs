//! A server program that forks (nginx workers, sshd's per-connection processes), ended
//! together with the processes it started — by pid, never by name.

use std::time::{Duration, Instant};

use netns_tests::Process;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a service gets to stop after SIGTERM before it and its descendants are killed.
const GRACE: Duration = Duration::from_secs(3);

/// A running service; stopped (SIGTERM to it and its descendants, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Service {
    process: Process,
}

impl Service {
    pub fn new(process: Process) -> Service {
        Service { process }
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Stops the service and the processes it started.
    pub fn stop(&self) {
        let pid = self.process.pid();
        let family = descendants(pid);
        for p in std::iter::once(pid).chain(family.iter().copied()) {
            signal(p, Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline
            && (matches!(self.process.try_wait(), Ok(None)) || family.iter().any(|&p| alive(p)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &p in family.iter().filter(|&&p| alive(p)) {
            signal(p, Signal::SIGKILL);
        }
        let _ = self.process.kill();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pids of `pid`'s children, grandchildren and so on (from `/proc/PID/task/*/children`).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                todo.push(child);
            }
        }
    }
    found
}

fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        // It may have exited meanwhile: nothing to do then.
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Whether `pid` runs (a zombie does not count: its parent reaps it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        state != Some("Z")
    })
}
