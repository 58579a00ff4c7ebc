//! `rk-stream`: an ordinary TCP program (std sockets, nothing rackd-specific) that sends a
//! seeded pseudo-random stream in both directions at once and reports digests.
//!
//! ```text
//! rk-stream server ADDR:PORT [--bytes N] [--seed S] [--pace BYTES_PER_S]
//!                            [--after-eof | --send-only] [--abort-after-ms MS]
//! rk-stream client ADDR:PORT [same options] [--connect-timeout SECS]
//! ```
//! The server accepts one connection. Each end writes N bytes of the stream for its seed, shuts
//! down its sending side, reads until end of stream, and prints one JSON line (see
//! `netns_tests::stream::StreamReport`). Exit status: 0 if no error, 1 if the transfer saw an
//! error, 2 for bad usage or if no connection was made, 3 after `--abort-after-ms`.
//!
//! `--after-eof`: this end reads until end of stream first and only then sends (a reply to a
//! request the peer closed). `--send-only`: this end sends, closes the socket and exits without
//! reading (it reports 0 bytes received). `--abort-after-ms MS`: MS after the connection was made this end
//! resets it (`SO_LINGER` 0, then exit), as an application that aborts does.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use netns_tests::stream::{hex, Pattern, StreamReport};
use nix::sys::socket::{setsockopt, sockopt};
use sha2::{Digest, Sha256};

const USAGE: &str = "usage: rk-stream server|client ADDR:PORT [--bytes N] [--seed S] \
                     [--pace BYTES_PER_S] [--after-eof | --send-only] [--abort-after-ms MS] \
                     [--connect-timeout SECS]";
/// Exit status after an abort on request.
const ABORTED: u8 = 3;
const BUF: usize = 64 * 1024;

/// Who speaks when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turns {
    /// Both directions at once.
    Together,
    /// Read everything, then send.
    ReplyAfterEof,
    /// Send, then close without reading.
    SendOnly,
}

#[derive(Debug)]
struct Options {
    server: bool,
    addr: SocketAddr,
    bytes: u64,
    seed: u64,
    pace: Option<u64>,
    turns: Turns,
    abort_after: Option<Duration>,
    connect_timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let [mode, addr, rest @ ..] = args else {
        return Err(USAGE.into());
    };
    let server = match mode.as_str() {
        "server" => true,
        "client" => false,
        other => return Err(format!("unknown mode {other:?}; {USAGE}")),
    };
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let mut opts = Options {
        server,
        addr,
        bytes: 1 << 20,
        seed: 1,
        pace: None,
        turns: Turns::Together,
        abort_after: None,
        connect_timeout: Duration::from_secs(5),
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let turns = match flag.as_str() {
            "--after-eof" => Some(Turns::ReplyAfterEof),
            "--send-only" => Some(Turns::SendOnly),
            _ => None,
        };
        if let Some(turns) = turns {
            opts.turns = turns;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|e| format!("bad value {value:?} for {flag}: {e}"))?;
        match flag.as_str() {
            "--bytes" => opts.bytes = number,
            "--seed" => opts.seed = number,
            "--pace" if number > 0 => opts.pace = Some(number),
            "--abort-after-ms" => opts.abort_after = Some(Duration::from_millis(number)),
            "--connect-timeout" => opts.connect_timeout = Duration::from_secs(number),
            _ => return Err(format!("unknown or invalid option {flag} {value}; {USAGE}")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("rk-stream: {e}");
            return ExitCode::from(2);
        }
    };
    let stream = match connect_or_accept(&opts) {
        Ok(stream) => stream,
        Err(e) => {
            println!("{}", failed(Instant::now(), e).to_line());
            return ExitCode::from(2);
        }
    };
    let report = transfer(stream, &opts);
    println!("{}", report.to_line());
    if report.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn connect_or_accept(opts: &Options) -> Result<TcpStream, String> {
    if opts.server {
        let listener =
            TcpListener::bind(opts.addr).map_err(|e| format!("bind {}: {e}", opts.addr))?;
        eprintln!("rk-stream: listening on {}", opts.addr);
        let (stream, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        eprintln!("rk-stream: connection from {peer}");
        return Ok(stream);
    }
    // The server may still be starting: retry refused connections until the timeout.
    let deadline = Instant::now() + opts.connect_timeout;
    loop {
        match TcpStream::connect(opts.addr) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("connect {}: {e}", opts.addr)),
        }
    }
}

/// Sends and receives at the same time; returns when both directions are finished or failed.
fn transfer(stream: TcpStream, opts: &Options) -> StreamReport {
    let start = Instant::now();
    let sender = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return failed(start, format!("dup socket: {e}")),
    };
    if let Some(after) = opts.abort_after {
        match stream.try_clone() {
            Ok(s) => drop(thread::spawn(move || abort_after(s, start, after))),
            Err(e) => return failed(start, format!("dup socket: {e}")),
        }
    }
    let (bytes, seed, pace) = (opts.bytes, opts.seed, opts.pace);
    let (sent, received) = match opts.turns {
        Turns::ReplyAfterEof => {
            let received = receive(&stream);
            let sent = if received.error.is_none() {
                send(sender, bytes, seed, pace)
            } else {
                Half::failed("not sent: the request was not received whole".into())
            };
            (sent, received)
        }
        Turns::SendOnly => {
            let sent = send(sender, bytes, seed, pace);
            // Both descriptors are closed when `transfer` returns, before the report is printed.
            let nothing = Half {
                bytes: 0,
                digest: hex(&Sha256::digest([])),
                error: None,
            };
            (sent, nothing)
        }
        Turns::Together => {
            let writer = thread::spawn(move || send(sender, bytes, seed, pace));
            let received = receive(&stream);
            if received.error.is_some() {
                // Wake a writer blocked on a dead connection; it reports its own error.
                let _ = stream.shutdown(Shutdown::Both);
            }
            let sent = writer
                .join()
                .unwrap_or_else(|_| Half::failed("writer thread panicked".into()));
            (sent, received)
        }
    };
    let error = match (sent.error, received.error) {
        (Some(w), Some(r)) => Some(format!("write: {w}; read: {r}")),
        (Some(w), None) => Some(format!("write: {w}")),
        (None, Some(r)) => Some(format!("read: {r}")),
        (None, None) => None,
    };
    StreamReport {
        bytes_sent: sent.bytes,
        bytes_received: received.bytes,
        digest_sent: sent.digest,
        digest_received: received.digest,
        elapsed_ms: elapsed_ms(start),
        error,
    }
}

/// One direction's outcome.
struct Half {
    bytes: u64,
    digest: String,
    error: Option<String>,
}

impl Half {
    fn failed(error: String) -> Half {
        Half {
            bytes: 0,
            digest: hex(&Sha256::digest([])),
            error: Some(error),
        }
    }
}

fn send(mut stream: TcpStream, total: u64, seed: u64, pace: Option<u64>) -> Half {
    let mut pattern = Pattern::new(seed);
    let mut hasher = Sha256::new();
    let chunk = pace.map_or(BUF, |rate| {
        usize::try_from(rate / 100).unwrap_or(BUF).clamp(1, BUF)
    });
    let mut buf = vec![0u8; chunk];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut error = None;
    while sent < total {
        let n = usize::try_from(total - sent).map_or(chunk, |left| left.min(chunk));
        pattern.fill(&mut buf[..n]);
        // Count and hash only what the kernel accepted.
        let mut off = 0;
        while off < n {
            match stream.write(&buf[off..n]) {
                Ok(0) => {
                    error = Some("connection accepts no more data".to_owned());
                    break;
                }
                Ok(w) => {
                    hasher.update(&buf[off..off + w]);
                    off += w;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        sent += off as u64;
        if error.is_some() {
            break;
        }
        if let Some(rate) = pace {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
    }
    if error.is_none() {
        if let Err(e) = stream.shutdown(Shutdown::Write) {
            error = Some(format!("shutdown: {e}"));
        }
    }
    Half {
        bytes: sent,
        digest: hex(&hasher.finalize()),
        error,
    }
}

fn receive(mut stream: &TcpStream) -> Half {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut received = 0u64;
    let error = loop {
        match stream.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                hasher.update(&buf[..n]);
                received += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    Half {
        bytes: received,
        digest: hex(&hasher.finalize()),
        error,
    }
}

/// Resets the connection `after` its start: with `SO_LINGER` 0 the kernel answers the last close
/// of the socket with a reset instead of a FIN, and exiting closes every descriptor at once.
fn abort_after(stream: TcpStream, start: Instant, after: Duration) {
    thread::sleep(after.saturating_sub(start.elapsed()));
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let error = match setsockopt(&stream, sockopt::Linger, &linger) {
        Ok(()) => "aborted on request (reset sent)".to_owned(),
        Err(e) => format!("aborting: SO_LINGER: {e}"),
    };
    println!("{}", failed(start, error).to_line());
    let _ = io::stdout().flush();
    std::process::exit(i32::from(ABORTED));
}

fn failed(start: Instant, error: String) -> StreamReport {
    let empty = hex(&Sha256::digest([]));
    StreamReport {
        bytes_sent: 0,
        bytes_received: 0,
        digest_sent: empty.clone(),
        digest_received: empty,
        elapsed_ms: elapsed_ms(start),
        error: Some(error),
    }
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
