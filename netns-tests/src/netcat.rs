//! Netcat-style transfers: an unmodified program (busybox `nc`) reads a file on one host and
//! writes what arrives to a file on another; the harness compares the files' digests.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::stream::{generate, hex};
use crate::{Error, Host, Output, Result, StreamOptions};

/// What a netcat transfer did.
#[derive(Debug, Clone)]
pub struct NcReport {
    /// Size of the file fed to the sender.
    pub bytes_sent: u64,
    /// Size of the file the receiver wrote.
    pub bytes_received: u64,
    /// SHA-256 (hex) of the file sent.
    pub digest_sent: String,
    /// SHA-256 (hex) of the file received.
    pub digest_received: String,
    /// The sending program's output.
    pub sender: Output,
    /// The receiving program's output.
    pub receiver: Output,
}

impl NcReport {
    /// Whether the received file equals the sent one.
    pub fn intact(&self) -> bool {
        self.bytes_sent == self.bytes_received && self.digest_sent == self.digest_received
    }
}

/// Sends `options.bytes` of the data for `options.client_seed` from `sender` to `receiver`
/// with busybox `nc` (receiver: `nc -l -p PORT > file`, sender: `nc ADDR PORT < file`), over
/// `options.family` to `options.port`, within `options.timeout`. `pace` and `program` are not
/// used. The temporary files are removed afterwards.
pub fn nc_transfer(sender: &Host, receiver: &Host, options: &StreamOptions) -> Result<NcReport> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("{}-nc{n}", receiver.netns()));
    let files = TempFiles([base.with_extension("in"), base.with_extension("out")]);
    let [input, output] = &files.0;
    let (bytes_sent, digest_sent) = write_pattern(input, options.client_seed, options.bytes)?;

    let deadline = Instant::now() + options.timeout;
    let port = options.port.to_string();
    let listener = receiver
        .command("busybox")
        .args(["nc", "-l", "-p", &port])
        // busybox nc ends the connection when its stdin ends: keep it open.
        .stdin_piped()
        .stdout_file(output)
        .spawn()?;
    wait_listening(receiver, options.port, options.timeout, deadline)?;
    let target = receiver.ip(options.family).to_string();
    let sending = sender
        .command("busybox")
        .args(["nc", &target, &port])
        .stdin_file(input)
        .spawn()?;
    let left = || deadline.saturating_duration_since(Instant::now());
    let receiver_out = listener.wait(left())?;
    let sender_out = sending.wait(left())?;
    let (bytes_received, digest_received) = digest_file(output)?;
    Ok(NcReport {
        bytes_sent,
        bytes_received,
        digest_sent,
        digest_received,
        sender: sender_out,
        receiver: receiver_out,
    })
}

/// Waits until something listens on TCP `port` in `host`.
fn wait_listening(host: &Host, port: u16, timeout: Duration, deadline: Instant) -> Result<()> {
    let filter = format!("sport = :{port}");
    loop {
        let out = host.run("ss", ["-Hltn", &filter])?;
        if !out.stdout.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                command: format!("[{}] busybox nc -l -p {port}", host.netns()),
                what: "was not listening".into(),
                timeout,
            });
        }
        sleep(Duration::from_millis(10));
    }
}

fn write_pattern(path: &Path, seed: u64, len: u64) -> Result<(u64, String)> {
    let context = || format!("writing {path:?}");
    let mut file = BufWriter::new(File::create(path).map_err(Error::io(context()))?);
    let mut hasher = Sha256::new();
    generate(seed, len, |chunk| {
        hasher.update(chunk);
        file.write_all(chunk)
    })
    .and_then(|()| file.flush())
    .map_err(Error::io(context()))?;
    Ok((len, hex(&hasher.finalize())))
}

fn digest_file(path: &Path) -> Result<(u64, String)> {
    let context = || format!("reading {path:?}");
    let mut file = File::open(path).map_err(Error::io(context()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(Error::io(context()))?;
        if n == 0 {
            return Ok((total, hex(&hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Files removed when dropped.
struct TempFiles([PathBuf; 2]);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            // Missing already (never created) is fine.
            let _ = std::fs::remove_file(path);
        }
    }
}
