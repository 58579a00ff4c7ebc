//! The server side: one thread per connection, dispatching on the request byte.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use super::{request, BULK_CHUNK};

/// Serves clients on `addr` until the process is killed. Prints `listening <addr>` once ready.
pub fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening {}", listener.local_addr()?);
    // Idle connections live here until the process ends.
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            // A connection reset before accept, or a momentary lack of descriptors: go on.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let held = Arc::clone(&held);
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                if let Err(e) = handle(stream, &held) {
                    eprintln!("connection: {e}");
                }
            })?;
    }
    Ok(())
}

fn handle(mut stream: TcpStream, held: &Mutex<Vec<TcpStream>>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind)?;
    match kind[0] {
        request::SINK => {
            let count = drain(&mut stream)?;
            stream.write_all(&count.to_be_bytes())?;
        }
        request::GENERATE => {
            let mut count = [0u8; 8];
            stream.read_exact(&mut count)?;
            send_bytes(&mut stream, u64::from_be_bytes(count))?;
            stream.shutdown(Shutdown::Write)?;
            // Wait for the client's close so that ours never turns into a reset.
            drain(&mut stream)?;
        }
        request::ECHO => echo(&mut stream)?,
        request::CONNECT => stream.write_all(b"c")?,
        request::IDLE => held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(stream),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown request byte {other:#04x}"),
            ))
        }
    }
    Ok(())
}

/// Reads to end of stream; returns the byte count.
pub(crate) fn drain(stream: &mut TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `count` bytes of a fixed pattern.
pub(crate) fn send_bytes(stream: &mut TcpStream, count: u64) -> io::Result<()> {
    let buf: Vec<u8> = (0..BULK_CHUNK).map(|i| (i % 251) as u8).collect();
    let mut left = count;
    while left > 0 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        stream.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn echo(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => stream.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
