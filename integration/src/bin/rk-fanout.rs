//! rk-fanout: many concurrent TCP connections in one process, for scale scenarios.
//!
//! ```text
//! rk-fanout server --listen IP:PORT --count N
//! rk-fanout client --connect IP:PORT --count N [--bytes MAX]
//! ```
//!
//! The server echoes `N` connections and exits when all have ended. The client opens `N`
//! connections, then reads commands from stdin: `round K` runs echo round `K` on every
//! connection (each sends its own `MAX/2..=MAX` bytes, default 4096, and checks the echo),
//! `close` closes them all and exits. Both print one JSON event per line (see
//! `integration::fanout::Event`).

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;

use integration::fanout::{self, Event, Fan};
use integration::flags::Flags;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rk-fanout: {e}");
            ExitCode::from(2)
        }
    }
}

fn emit(event: &Event) {
    println!("{}", event.to_line());
}

fn run(args: &[String]) -> Result<(), String> {
    let (mode, rest) = args.split_first().ok_or("missing mode (server, client)")?;
    let flags = Flags::parse(rest)?;
    let count: usize = flags.get("count")?;
    raise_fd_limit(count)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    match mode.as_str() {
        "server" => {
            let addr: SocketAddr = flags.get("listen")?;
            let listener = rt
                .block_on(async { fanout::listen(addr) })
                .map_err(|e| format!("listening on {addr}: {e}"))?;
            emit(&Event::Listening {
                addr: addr.to_string(),
            });
            emit(&rt.block_on(fanout::serve(listener, count)));
            Ok(())
        }
        "client" => {
            let to: SocketAddr = flags.get("connect")?;
            let max: usize = flags.get_or("bytes", 4096)?;
            let (mut fan, opened) = rt.block_on(Fan::open(to, count, max));
            emit(&opened);
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|e| format!("reading commands: {e}"))?;
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[..] {
                    ["round", k] => {
                        let k = k.parse().map_err(|e| format!("round {k:?}: {e}"))?;
                        emit(&rt.block_on(fan.round(k)));
                    }
                    ["close"] => break,
                    _ => return Err(format!("unknown command {line:?} (round K, close)")),
                }
            }
            emit(&rt.block_on(fan.close()));
            Ok(())
        }
        other => Err(format!("unknown mode {other:?} (server, client)")),
    }
}

/// A thousand connections need more descriptors than the usual soft limit of 1,024.
fn raise_fd_limit(connections: usize) -> Result<(), String> {
    let need = connections as u64 + 64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(format!(
            "{connections} connections need {need} descriptors; the hard limit is {hard}"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| format!("setrlimit: {e}"))
}
