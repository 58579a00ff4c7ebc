//! `rkb-peer`: the benchmark's traffic program (see `benches::peer`).
//!
//! ```text
//! rkb-peer serve    ADDR:PORT
//! rkb-peer bulk     ADDR:PORT --flows K --bytes N --direction up|down
//! rkb-peer pingpong ADDR:PORT --count N
//! rkb-peer connect  ADDR:PORT --count N
//! rkb-peer hold     ADDR:PORT --count N        (keeps the connections until stdin ends)
//! rkb-peer trickle  ADDR:PORT --interval-ms MS (until killed)
//! ```
//! Exit status 0 on success; 1 with the reason on stderr if anything failed (a byte count
//! that does not match included); 2 for bad usage.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use benches::peer::{self, client, server, Direction};

const USAGE: &str = "usage: rkb-peer serve|bulk|pingpong|connect|hold|trickle ADDR:PORT [--flows K] [--bytes N] [--direction up|down] [--count N] [--interval-ms MS]";
/// Open files wanted for thousands of idle connections.
const NOFILE: u64 = 1 << 20;

struct Args {
    command: String,
    addr: SocketAddr,
    flags: BTreeMap<String, String>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args, String> {
        let [command, addr, rest @ ..] = args else {
            return Err(USAGE.into());
        };
        let addr = addr
            .parse()
            .map_err(|e| format!("bad address {addr:?}: {e}"))?;
        let mut flags = BTreeMap::new();
        let mut it = rest.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}; {USAGE}"))?;
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            flags.insert(name.to_owned(), value.clone());
        }
        Ok(Args {
            command: command.clone(),
            addr,
            flags,
        })
    }

    fn number(&self, name: &str) -> Result<u64, String> {
        let value = self
            .flags
            .get(name)
            .ok_or_else(|| format!("{} needs --{name}", self.command))?;
        value
            .parse()
            .map_err(|e| format!("bad value {value:?} for --{name}: {e}"))
    }

    fn direction(&self) -> Result<Direction, String> {
        match self.flags.get("direction").map(String::as_str) {
            Some("up") => Ok(Direction::Up),
            Some("down") => Ok(Direction::Down),
            other => Err(format!("--direction must be up or down, got {other:?}")),
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> io::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn run(args: &Args) -> Result<io::Result<()>, String> {
    let addr = args.addr;
    Ok(match args.command.as_str() {
        "serve" => peer::raise_nofile(NOFILE).and_then(|_| server::serve(addr)),
        "bulk" => {
            let flows = u32::try_from(args.number("flows")?).map_err(|e| e.to_string())?;
            let (bytes, direction) = (args.number("bytes")?, args.direction()?);
            client::bulk(addr, flows, bytes, direction).and_then(|r| print_json(&r))
        }
        "pingpong" => client::pingpong(addr, args.number("count")?).and_then(|r| print_json(&r)),
        "connect" => client::connect_many(addr, args.number("count")?).and_then(|r| print_json(&r)),
        "hold" => {
            let count = args.number("count")?;
            peer::raise_nofile(NOFILE).and_then(|_| client::hold(addr, count))
        }
        "trickle" => {
            let interval = Duration::from_millis(args.number("interval-ms")?);
            client::trickle(addr, interval)
        }
        other => return Err(format!("unknown command {other:?}; {USAGE}")),
    })
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let outcome = Args::parse(&argv).and_then(|args| run(&args).map(|r| (args.command, r)));
    match outcome {
        Err(usage) => {
            eprintln!("rkb-peer: {usage}");
            ExitCode::from(2)
        }
        Ok((_, Ok(()))) => ExitCode::SUCCESS,
        Ok((command, Err(e))) => {
            eprintln!("rkb-peer {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
