//! The client side: each function runs one measurement against `rkb-peer serve` and returns
//! what the binary prints.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::server::{drain, send_bytes};
use super::{
    monotonic_ns, request, BulkResult, ConnectResult, Direction, HoldResult, PingResult, ECHO_LINE,
    LOCAL_LINE,
};
use crate::stats::percentile;

/// How long a connect may take before the client gives up (a daemon that eats SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Round trips before measuring, so that caches and the peer's thread are warm.
const PING_WARMUP: u64 = 100;

fn connect(addr: SocketAddr, kind: u8) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    stream.write_all(&[kind])?;
    Ok(stream)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Moves `bytes` in total over `flows` parallel connections in `direction`; every flow's byte
/// count is confirmed by its receiving end, a mismatch is an error.
pub fn bulk(
    addr: SocketAddr,
    flows: u32,
    bytes: u64,
    direction: Direction,
) -> io::Result<BulkResult> {
    if flows == 0 || bytes % u64::from(flows) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{bytes} bytes cannot be split evenly over {flows} flows"),
        ));
    }
    let per_flow = bytes / u64::from(flows);
    let start = Instant::now();
    let workers: Vec<_> = (0..flows)
        .map(|_| thread::spawn(move || one_flow(addr, per_flow, direction)))
        .collect();
    let mut moved = 0;
    for worker in workers {
        moved += worker
            .join()
            .map_err(|_| io::Error::other("a flow's thread panicked"))??;
    }
    Ok(BulkResult {
        flows,
        bytes: moved,
        elapsed_ns: nanos(start.elapsed()),
    })
}

fn one_flow(addr: SocketAddr, bytes: u64, direction: Direction) -> io::Result<u64> {
    let counted = match direction {
        Direction::Up => {
            let mut stream = connect(addr, request::SINK)?;
            send_bytes(&mut stream, bytes)?;
            stream.shutdown(Shutdown::Write)?;
            let mut count = [0u8; 8];
            stream.read_exact(&mut count)?;
            u64::from_be_bytes(count)
        }
        Direction::Down => {
            let mut stream = connect(addr, request::GENERATE)?;
            stream.write_all(&bytes.to_be_bytes())?;
            drain(&mut stream)?
        }
    };
    if counted != bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} flow: {bytes} bytes sent, {counted} received",
                direction.as_str()
            ),
        ));
    }
    Ok(counted)
}

/// `round_trips` one-byte exchanges on one connection (after a warm-up).
pub fn pingpong(addr: SocketAddr, round_trips: u64) -> io::Result<PingResult> {
    if round_trips == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no round trips asked for",
        ));
    }
    let mut stream = connect(addr, request::ECHO)?;
    let mut samples = Vec::with_capacity(usize::try_from(round_trips).unwrap_or(0));
    let mut byte = [0u8; 1];
    for i in 0..PING_WARMUP + round_trips {
        let start = Instant::now();
        stream.write_all(b"p")?;
        stream.read_exact(&mut byte)?;
        if i >= PING_WARMUP {
            samples.push(nanos(start.elapsed()));
        }
    }
    samples.sort_unstable();
    Ok(PingResult {
        round_trips,
        p50_ns: percentile(&samples, 50.0),
        p99_ns: percentile(&samples, 99.0),
        max_ns: samples.last().copied().unwrap_or(0),
    })
}

/// `count` connections one after the other: connect, one byte each way, close.
pub fn connect_many(addr: SocketAddr, count: u64) -> io::Result<ConnectResult> {
    let mut setup = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let mut stream = connect(addr, request::CONNECT)?;
        setup.push(nanos(t.elapsed()));
        let mut answer = Vec::with_capacity(1);
        stream.read_to_end(&mut answer)?;
        if answer != b"c" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("connect request answered with {answer:?}, expected b\"c\""),
            ));
        }
    }
    let elapsed_ns = nanos(start.elapsed());
    setup.sort_unstable();
    Ok(ConnectResult {
        connections: count,
        connect_p50_ns: percentile(&setup, 50.0),
        connect_p99_ns: percentile(&setup, 99.0),
        elapsed_ns,
    })
}

/// Opens `count` idle connections, prints the result, then keeps them until stdin ends.
pub fn hold(addr: SocketAddr, count: u64) -> io::Result<()> {
    let start = Instant::now();
    let streams = (0..count)
        .map(|_| connect(addr, request::IDLE))
        .collect::<io::Result<Vec<_>>>()?;
    let result = HoldResult {
        connections: streams.len() as u64,
        elapsed_ns: nanos(start.elapsed()),
    };
    println!("{}", serde_json::to_string(&result)?);
    io::copy(&mut io::stdin().lock(), &mut io::sink())?;
    drop(streams);
    Ok(())
}

/// Prints `local <addr>`, then sends one byte every `interval` and prints
/// `echo <monotonic ns>` whenever echoed bytes arrive, until killed: shows when data stops and
/// starts flowing again.
pub fn trickle(addr: SocketAddr, interval: Duration) -> io::Result<()> {
    let mut reader = connect(addr, request::ECHO)?;
    println!("{LOCAL_LINE}{}", reader.local_addr()?);
    let mut writer = reader.try_clone()?;
    thread::spawn(move || -> io::Result<()> {
        loop {
            writer.write_all(b"t")?;
            thread::sleep(interval);
        }
    });
    let mut buf = [0u8; 4096];
    let mut out = io::stdout().lock();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ))
            }
            Ok(_) => writeln!(out, "{ECHO_LINE}{}", monotonic_ns())?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads lines of `trickle` output: the echo times in order.
pub fn echo_times(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix(ECHO_LINE))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}
