//! Running the system tools (ip, nft, tc, sysctl) that build and change topologies.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Runs `program args..` to completion; returns stdout, or the stderr in the error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with_input(program, args, None)
}

/// Like [`run`], feeding `input` on stdin (for `ip -batch -` and `nft -f -`).
pub(crate) fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let command = describe(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that fails early closes its stdin; the exit status below reports that.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io(format!("waiting for `{command}`")))?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if let Some(text) = input {
            stderr.push_str(&format!(" [input: {}]", text.trim()));
        }
        return Err(Error::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` inside namespace `netns` with a batch of commands, one per line.
pub(crate) fn ip_batch(netns: &str, batch: &str) -> Result<()> {
    run_with_input("ip", &["-n", netns, "-batch", "-"], Some(batch)).map(drop)
}

/// Runs `program args..` inside namespace `netns`.
pub(crate) fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Loads an nft script inside namespace `netns`.
pub(crate) fn nft_script(netns: &str, script: &str) -> Result<()> {
    run_with_input(
        "ip",
        &["netns", "exec", netns, "nft", "-f", "-"],
        Some(script),
    )
    .map(drop)
}

/// A command line for messages.
pub(crate) fn describe(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
