//! `rackd`: the daemon's entry point. Exit codes: 0 clean stop, 1 runtime failure, 2 bad
//! configuration or arguments.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use rackd::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rackd: --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    // journald adds its own timestamps; plain lines read well there and on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rackd: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rackd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(rackd::daemon::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
