//! Programs running inside a host: start, output capture, waiting with a timeout, killing.
//!
//! Every [`Process`] is registered with its topology, which kills those still running when it
//! is torn down; dropping a [`Process`] kills it as well. Processes are ended through their
//! [`Child`] handle (never by name), so a recycled pid can never be hit.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::sync::lock;
use crate::{Error, Result};

/// How long to wait for output pipes to close after a process exited (a grandchild may hold them).
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// The processes one topology started, so that teardown can end them.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    processes: Mutex<Vec<Weak<Shared>>>,
}

impl Registry {
    fn add(&self, shared: &Arc<Shared>) {
        let mut list = lock(&self.processes);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(shared));
    }

    /// Kills (SIGKILL) and reaps every registered process still running.
    pub(crate) fn kill_all(&self) {
        let list = std::mem::take(&mut *lock(&self.processes));
        for shared in list.iter().filter_map(Weak::upgrade) {
            // Teardown goes on with the others if reaping one fails.
            let _ = shared.kill();
        }
    }
}

/// A program to run inside a host; made by [`Host::command`](crate::Host::command).
#[derive(Debug)]
pub struct HostCommand {
    netns: String,
    registry: Arc<Registry>,
    program: OsString,
    args: Vec<OsString>,
    user: Option<(u32, u32)>,
    stdin: StdinFrom,
    stdout: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
}

impl HostCommand {
    pub(crate) fn new(netns: &str, registry: Arc<Registry>, program: impl AsRef<OsStr>) -> Self {
        HostCommand {
            netns: netns.to_owned(),
            registry,
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            user: None,
            stdin: StdinFrom::Null,
            stdout: None,
            env: Vec::new(),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the program as an unprivileged user: uid and gid set, supplementary groups cleared
    /// (through `setpriv`, after entering the namespace as root).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Feeds the program's stdin from a file (default: empty).
    pub fn stdin_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdin = StdinFrom::File(path.into());
        self
    }

    /// Connects the program's stdin to a pipe that stays open until
    /// [`Process::close_stdin`] or the end of the process: for programs that stop when their
    /// input ends, and to feed input with [`Process::write_stdin`].
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = StdinFrom::Pipe;
        self
    }

    /// Writes the program's stdout to a file (created or truncated) instead of capturing it.
    pub fn stdout_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdout = Some(path.into());
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.program.to_string_lossy().into_owned()];
        parts.extend(self.args.iter().map(|a| a.to_string_lossy().into_owned()));
        format!("[{}] {}", self.netns, parts.join(" "))
    }

    /// Starts the program; it runs until it exits, is killed, or the topology is torn down.
    pub fn spawn(self) -> Result<Process> {
        let command = self.describe();
        let mut cmd = Command::new("ip");
        cmd.args([
            OsStr::new("netns"),
            OsStr::new("exec"),
            OsStr::new(&self.netns),
        ]);
        if let Some((uid, gid)) = self.user {
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
            ]);
            cmd.args(["--clear-groups", "--"]);
        }
        cmd.arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(match &self.stdin {
            StdinFrom::File(path) => Stdio::from(File::open(path).map_err(Error::io(format!(
                "opening {path:?} as stdin of `{command}`"
            )))?),
            StdinFrom::Pipe => Stdio::piped(),
            StdinFrom::Null => Stdio::null(),
        });
        cmd.stdout(match &self.stdout {
            Some(path) => Stdio::from(File::create(path).map_err(Error::io(format!(
                "creating {path:?} for stdout of `{command}`"
            )))?),
            None => Stdio::piped(),
        });
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        let stdin = Mutex::new(child.stdin.take());
        let stdout = Capture::start(child.stdout.take());
        let stderr = Capture::start(child.stderr.take());
        let shared = Arc::new(Shared {
            command,
            pid: child.id(),
            state: Mutex::new(State::Running(child)),
            stdin,
            stdout,
            stderr,
        });
        self.registry.add(&shared);
        Ok(Process { shared })
    }

    /// Runs the program to completion (killing it after `timeout`) and returns its output,
    /// whatever its exit status; see [`Output::check`].
    pub fn run(self, timeout: Duration) -> Result<Output> {
        let process = self.spawn()?;
        match process.wait(timeout) {
            Ok(out) => Ok(out),
            Err(e) => {
                let _ = process.kill();
                Err(e)
            }
        }
    }
}

/// Where a program's stdin comes from.
#[derive(Debug)]
enum StdinFrom {
    Null,
    File(PathBuf),
    Pipe,
}

/// What a finished program did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line.
    pub command: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Captured stdout (empty when redirected to a file).
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl Output {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `self` if the program exited with status 0, else [`Error::CommandFailed`] with its stderr.
    pub fn check(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::CommandFailed {
                command: self.command,
                status: self.status.to_string(),
                stderr: self.stderr.trim().to_owned(),
            })
        }
    }
}

/// A program started inside a host. Dropping it kills the program.
#[derive(Debug)]
pub struct Process {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    command: String,
    pid: u32,
    state: Mutex<State>,
    stdin: Mutex<Option<ChildStdin>>,
    stdout: Arc<Capture>,
    stderr: Arc<Capture>,
}

#[derive(Debug)]
enum State {
    Running(Child),
    Exited(ExitStatus),
}

impl Shared {
    fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut state = lock(&self.state);
        match &mut *state {
            State::Exited(status) => Ok(Some(*status)),
            State::Running(child) => {
                let polled = child.try_wait();
                match polled.map_err(Error::io(format!("waiting for `{}`", self.command)))? {
                    Some(status) => {
                        *state = State::Exited(status);
                        Ok(Some(status))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// SIGKILLs the program if it still runs and reaps it; returns how it ended.
    fn kill(&self) -> Result<ExitStatus> {
        let mut state = lock(&self.state);
        match &mut *state {
            State::Exited(status) => Ok(*status),
            State::Running(child) => {
                // Fails only if it exited meanwhile; wait() reaps it either way.
                let _ = child.kill();
                let reaped = child.wait();
                let status = reaped.map_err(Error::io(format!("reaping `{}`", self.command)))?;
                *state = State::Exited(status);
                Ok(status)
            }
        }
    }
}

impl Process {
    /// The program's pid (in the initial pid namespace; hosts share it).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.shared.command
    }

    /// The exit status if the program has ended, without blocking.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        self.shared.try_wait()
    }

    /// Waits up to `timeout` for the program to exit. On timeout it keeps running and
    /// [`Error::Timeout`] is returned.
    pub fn wait(&self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(self.timeout("did not exit", timeout));
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        self.shared.stdout.wait_closed(PIPE_DRAIN);
        self.shared.stderr.wait_closed(PIPE_DRAIN);
        Ok(self.output(status))
    }

    /// Kills the program (SIGKILL) if it still runs, and returns what it printed.
    pub fn kill(&self) -> Result<Output> {
        let status = self.shared.kill()?;
        self.shared.stdout.wait_closed(PIPE_DRAIN);
        self.shared.stderr.wait_closed(PIPE_DRAIN);
        Ok(self.output(status))
    }

    /// Writes to the program's stdin (see [`HostCommand::stdin_piped`]).
    pub fn write_stdin(&self, bytes: &[u8]) -> Result<()> {
        let context = || format!("writing to stdin of `{}`", self.shared.command);
        match &mut *lock(&self.shared.stdin) {
            Some(stdin) => stdin.write_all(bytes).map_err(Error::io(context())),
            None => Err(Error::io(context())(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin is not a pipe or closed",
            ))),
        }
    }

    /// Closes the program's stdin pipe: it reads end of file.
    pub fn close_stdin(&self) {
        lock(&self.shared.stdin).take();
    }

    /// Captured stdout so far.
    pub fn stdout(&self) -> String {
        self.shared.stdout.text()
    }

    /// Captured stderr so far.
    pub fn stderr(&self) -> String {
        self.shared.stderr.text()
    }

    /// Waits until the program's stdout or stderr contains `needle` (e.g. a readiness line).
    /// Fails early if the program exits first.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                // It may have printed the needle just before exiting.
                self.shared.stderr.wait_closed(PIPE_DRAIN);
                self.shared.stdout.wait_closed(PIPE_DRAIN);
                if self.stdout().contains(needle) || self.stderr().contains(needle) {
                    return Ok(());
                }
                return Err(Error::BadOutput {
                    command: self.shared.command.clone(),
                    detail: format!("exited ({status}) without printing {needle:?}"),
                    output: self.stderr(),
                });
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(&format!("did not print {needle:?}"), timeout));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn output(&self, status: ExitStatus) -> Output {
        Output {
            command: self.shared.command.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    fn timeout(&self, what: &str, timeout: Duration) -> Error {
        Error::Timeout {
            command: self.shared.command.clone(),
            what: what.to_owned(),
            timeout,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.shared.kill();
    }
}

/// Output collected from a pipe by a background thread, so a chatty program never blocks.
#[derive(Debug, Default)]
struct Capture {
    bytes: Mutex<Vec<u8>>,
    closed: AtomicBool,
}

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Arc<Capture> {
        let capture = Arc::new(Capture::default());
        let Some(mut pipe) = pipe else {
            capture.closed.store(true, Ordering::Release);
            return capture;
        };
        let sink = Arc::clone(&capture);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                lock(&sink.bytes).extend_from_slice(&buf[..n]);
            }
            sink.closed.store(true, Ordering::Release);
        });
        capture
    }

    fn wait_closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.closed.load(Ordering::Acquire) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.bytes)).into_owned()
    }
}
