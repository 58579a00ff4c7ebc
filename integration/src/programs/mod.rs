//! Real, unmodified programs from Debian packages, set up for a scenario: each server gets its
//! own configuration, keys, data, pid file and logs in the scenario's scratch directory.

pub mod http;
pub mod iperf;
pub mod redis;
pub mod ssh;

use std::path::Path;
use std::time::Duration;

use netns_tests::Host;

use crate::testbed::{poll, Result, ScenarioError};

/// Waits until something listens on TCP `port` in `host`.
pub fn wait_listening(host: &Host, port: u16) -> Result<()> {
    let filter = format!("sport = :{port}");
    poll(
        &format!("a listener on port {port}"),
        Duration::from_secs(10),
        |_| {
            let out = host.run("ss", ["-Hltn", filter.as_str()])?;
            Ok((!out.stdout.trim().is_empty()).then_some(()))
        },
    )
}

/// SHA-256 (hex) of a file, by `sha256sum`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(ScenarioError::io(format!("running sha256sum {path:?}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(digest) if out.status.success() => Ok(digest.to_owned()),
        _ => Err(ScenarioError::program(
            "sha256sum",
            format!("{path:?}: {}", String::from_utf8_lossy(&out.stderr)),
        )),
    }
}

/// Writes the first `len` bytes of the test pattern for `seed` to `path`; returns their SHA-256.
pub fn pattern_file(path: &Path, seed: u64, len: u64) -> Result<String> {
    use std::io::Write;
    let file =
        std::fs::File::create(path).map_err(ScenarioError::io(format!("creating {path:?}")))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    netns_tests::stream::generate(seed, len, |chunk| out.write_all(chunk))
        .and_then(|()| out.flush())
        .map_err(ScenarioError::io(format!("writing {path:?}")))?;
    Ok(netns_tests::stream::digest_of(seed, len))
}
