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
    raise_file_limit();
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

/// Lifts the soft open-file limit to the hard one: every control connection and every queue,
/// netlink and raw socket is a descriptor, and service managers start daemons at 1024.
fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
