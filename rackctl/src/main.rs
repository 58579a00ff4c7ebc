//! `rackctl`: inspect and control a running rackd.
//!
//! Exit codes: 0 success, 1 the daemon refused or could not be reached, 2 bad usage.

use std::io::{self, IsTerminal, Write};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{CommandFactory, Parser, Subcommand};
use rackctl::client::{Client, ClientError};
use rackctl::proto::{ErrorCode, Status};
use rackctl::render;

mod handoff;

#[derive(Debug, Parser)]
#[command(name = "rackctl", version, about = "Inspect and control rackd")]
#[command(after_help = "Exit status: 0 success, 1 rackd refused or unreachable, 2 bad usage.")]
struct Cli {
    /// rackd's control socket.
    #[arg(
        long,
        global = true,
        env = "RACKCTL_CONTROL_SOCKET",
        value_name = "PATH",
        default_value = "/run/rackd/control.sock"
    )]
    control_socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon and every connection it manages.
    Status {
        /// Print one JSON object with `daemon` and `connections`.
        #[arg(long, env = "RACKCTL_JSON", value_parser = BoolishValueParser::new())]
        json: bool,
    },
    /// Freeze a connection on purpose, e.g. before planned maintenance (root only).
    Suspend {
        #[arg(value_parser = hex_id)]
        id: String,
    },
    /// Let a suspended connection reconnect (root only).
    Resume {
        #[arg(value_parser = hex_id)]
        id: String,
    },
    /// Give a suspended connection its peer's new address (root only).
    Peer {
        #[arg(value_parser = hex_id)]
        id: String,
        addr: IpAddr,
    },
    /// Capture a process's connection into a blob (root only). Stop the process first (SIGSTOP)
    /// and end it afterwards: the socket is frozen from now on and closes without a trace.
    Checkpoint {
        /// The process that owns the socket.
        #[arg(long)]
        pid: u32,
        /// The socket's descriptor number in that process (see /proc/PID/fd).
        #[arg(long)]
        fd: i32,
        /// Where to write the blob (created with mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a blob into a connected socket on this host (root only). With a PROGRAM, it runs
    /// with the socket as descriptor 3 (or as stdin and stdout with --stdio) and rackctl exits
    /// with its status; without one, the socket's details are printed and the connection is
    /// closed when rackctl exits.
    Restore {
        /// A blob written by `rackctl checkpoint`.
        file: PathBuf,
        /// This host's address for the socket (default: the kernel's choice towards the peer).
        #[arg(long)]
        local: Option<IpAddr>,
        /// Give the socket to PROGRAM as stdin and stdout instead of descriptor 3.
        #[arg(long, requires = "program")]
        stdio: bool,
        /// The program to hand the socket to, and its arguments.
        #[arg(last = true, value_name = "PROGRAM")]
        program: Vec<std::ffi::OsString>,
    },
    /// Show the status again every interval until interrupted.
    Watch {
        /// Seconds between updates.
        #[arg(long, env = "RACKCTL_INTERVAL", default_value = "1", value_parser = positive_secs)]
        interval: Duration,
        /// Print one JSON status object per line instead of text.
        #[arg(long, env = "RACKCTL_JSON", value_parser = BoolishValueParser::new())]
        json: bool,
    },
    /// Print a shell completion script.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff).
    #[command(hide = true)]
    Man,
}

/// Connection ids are hex, as `rackctl status` shows them.
fn hex_id(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a connection id (up to 32 hex digits, see rackctl status)"
        ))
    }
}

fn positive_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=86400.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.01 and 86400"
        )),
    }
}

/// Why `rackctl` stops early.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// stdout went away (`rackctl watch | head`): not worth a message.
    #[error("stdout closed")]
    Closed,
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("running {program}: {source}")]
    Program { program: String, source: io::Error },
    /// The program handed the socket ran and exited with this status.
    #[error("program exited with {0}")]
    Exited(u8),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Exited(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rackctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let out = Output::new();
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "rackctl", &mut io::stdout());
            return Ok(());
        }
        Command::Man => {
            let written = clap_mangen::Man::new(Cli::command()).render(&mut io::stdout());
            return written.map_err(|_| Failure::Closed);
        }
        _ => {}
    }
    let mut client = Client::connect(&cli.control_socket)?;
    match &cli.command {
        Command::Status { json } => out.status(&client.status()?, *json),
        Command::Suspend { id } => Ok(client.suspend(id)?),
        Command::Resume { id } => Ok(client.resume(id)?),
        Command::Peer { id, addr } => Ok(client.peer(id, &addr.to_string())?),
        Command::Watch { interval, json } => watch(&mut client, &out, *interval, *json),
        Command::Checkpoint { pid, fd, out: file } => checkpoint(&mut client, *pid, *fd, file),
        Command::Restore {
            file,
            local,
            stdio,
            program,
        } => restore(&mut client, file, *local, *stdio, program),
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

/// Streams status from the daemon; falls back to asking every interval when the daemon does
/// not stream (it answers `watch` with bad_request or invalid_state before any status).
fn watch(client: &mut Client, out: &Output, interval: Duration, json: bool) -> Result<(), Failure> {
    let mut failed = None;
    let mut show = |s: &Status| match out.frame(s, json) {
        Ok(()) => ControlFlow::Continue(()),
        Err(f) => {
            failed = Some(f);
            ControlFlow::Break(())
        }
    };
    match client.watch(Some(interval), &mut show) {
        Err(e)
            if matches!(
                e.code(),
                Some(ErrorCode::BadRequest | ErrorCode::InvalidState)
            ) =>
        {
            while show(&client.status()?).is_continue() {
                std::thread::sleep(interval);
            }
        }
        other => other?,
    }
    failed.map_or(Ok(()), Err)
}

fn checkpoint(
    client: &mut Client,
    pid: u32,
    fd: i32,
    file: &std::path::Path,
) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| Failure::File {
        what: "writing the blob to",
        path: file.into(),
        source,
    };
    // Opened first: a checkpoint whose blob cannot be kept would lose the connection.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(failed)?;
    let c = client.checkpoint(pid, fd)?;
    f.write_all(&c.blob)
        .and_then(|()| f.sync_all())
        .map_err(failed)?;
    let i = &c.info;
    write_stdout(&format!(
        "checkpoint {}: connection {} {} -> {}, {} bytes unacknowledged or unsent, {} unread, \
         blob {} bytes in {} us\n",
        i.checkpoint, i.id, i.local, i.remote, i.send_queue, i.recv_queue, i.blob_len, i.elapsed_us
    ))
}

fn restore(
    client: &mut Client,
    file: &std::path::Path,
    local: Option<IpAddr>,
    stdio: bool,
    program: &[std::ffi::OsString],
) -> Result<(), Failure> {
    let blob = std::fs::read(file).map_err(|source| Failure::File {
        what: "reading the blob from",
        path: file.into(),
        source,
    })?;
    let restored = client.restore(&blob, local)?;
    let i = &restored.info;
    let details = format!(
        "restored {}: connection {} {} -> {} in {} us",
        i.checkpoint, i.id, i.local, i.remote, i.elapsed_us
    );
    let Some((name, args)) = program.split_first() else {
        use std::os::fd::AsRawFd;
        return write_stdout(&format!("{details}, fd {}\n", restored.socket.as_raw_fd()));
    };
    eprintln!("rackctl: {details}");
    let status =
        handoff::run(name, args, restored.socket, stdio).map_err(|source| Failure::Program {
            program: name.to_string_lossy().into_owned(),
            source,
        })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Failure::Exited(u8::try_from(code).unwrap_or(1))),
        None => Err(Failure::Exited(128 + handoff::signal_of(&status))),
    }
}

/// Where results go: stdout, coloured only on a terminal and without NO_COLOR.
struct Output {
    terminal: bool,
    color: bool,
}

impl Output {
    fn new() -> Self {
        let terminal = io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            terminal,
            color: terminal && !no_color,
        }
    }

    fn status(&self, s: &Status, json: bool) -> Result<(), Failure> {
        let text = if json {
            format!("{}\n", to_json(s, true))
        } else {
            render::status(s, self.color)
        };
        write_stdout(&text)
    }

    /// One watch update: JSON lines, a redrawn screen on a terminal, else blocks in sequence.
    fn frame(&self, s: &Status, json: bool) -> Result<(), Failure> {
        let text = match (json, self.terminal) {
            (true, _) => format!("{}\n", to_json(s, false)),
            (false, true) => format!("\x1b[H\x1b[2J{}", render::status(s, self.color)),
            (false, false) => format!("{}\n", render::status(s, false)),
        };
        write_stdout(&text)
    }
}

fn to_json(s: &Status, pretty: bool) -> String {
    let encoded = if pretty {
        serde_json::to_string_pretty(s)
    } else {
        serde_json::to_string(s)
    };
    // Status holds only strings, integers and string-keyed maps, which always encode.
    encoded.unwrap_or_else(|e| unreachable!("status encodes as JSON: {e}"))
}

fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|_| Failure::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ids_are_hex() {
        assert_eq!(hex_id("00AB").unwrap(), "00ab");
        for bad in ["", "xyz", "12 3", &"a".repeat(33)] {
            let e = hex_id(bad).unwrap_err();
            assert!(e.contains("not a connection id"), "{e}");
        }
    }

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(positive_secs("0.5").unwrap(), Duration::from_millis(500));
        for bad in ["0", "-1", "nan", "inf", "1e9", "soon"] {
            assert!(positive_secs(bad).is_err(), "{bad}");
        }
    }
}
