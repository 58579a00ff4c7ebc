//! `rackctl`: inspect and control a running rackd.
//!
//! Exit codes: 0 success, 1 the daemon refused or could not be reached, 2 bad usage.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rackctl::client::{Client, ClientError};
use rackctl::render;

#[derive(Debug, Parser)]
#[command(name = "rackctl", version, about = "Inspect and control rackd")]
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
        /// One JSON object with `daemon` and `connections`.
        #[arg(long)]
        json: bool,
    },
    /// Freeze a connection on purpose, e.g. before planned maintenance (root only).
    Suspend { id: String },
    /// Let a suspended connection reconnect (root only).
    Resume { id: String },
    /// Give a suspended connection its peer's new address (root only).
    Peer { id: String, addr: std::net::IpAddr },
    /// Show status again every interval until interrupted.
    Watch {
        /// Seconds between updates.
        #[arg(long, default_value_t = 1.0, value_parser = positive_secs)]
        interval: f64,
    },
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rackctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), ClientError> {
    let mut client = Client::connect(&cli.control_socket)?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match &cli.command {
        Command::Status { json: true } => {
            let s = client.status()?;
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        }
        Command::Status { json: false } => print!("{}", render::status(&client.status()?, color)),
        Command::Suspend { id } => client.suspend(id)?,
        Command::Resume { id } => client.resume(id)?,
        Command::Peer { id, addr } => client.peer(id, &addr.to_string())?,
        Command::Watch { interval } => loop {
            let text = render::status(&client.status()?, color);
            if color {
                print!("\x1b[H\x1b[2J");
            }
            println!("{text}");
            std::thread::sleep(Duration::from_secs_f64(*interval));
        },
    }
    Ok(())
}
