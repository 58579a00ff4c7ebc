//! What /proc says about a process: CPU time used and resident memory.

use std::path::PathBuf;

use crate::{Error, Result};

/// Kernel clock ticks per second (the unit of utime and stime in /proc/<pid>/stat).
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// User plus system CPU time of process `pid` (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Proc {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let ticks = parse_stat_cpu_ticks(&text).ok_or_else(|| Error::Proc {
        path,
        detail: format!("no utime/stime fields in {text:?}"),
    })?;
    Ok(ticks as f64 / ticks_per_second() as f64)
}

/// utime + stime from the text of /proc/<pid>/stat. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; utime and stime are fields 14 and 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of process `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Proc {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    parse_status_rss(&text).ok_or_else(|| Error::Proc {
        path,
        detail: "no VmRSS line".into(),
    })
}

/// VmRSS from the text of /proc/<pid>/status, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (ra ck) d) S 1 4242 4242 0 -1 4194560 500 0 0 0 17 5 0 0 20 0 3 0 100";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(22));
        assert_eq!(parse_stat_cpu_ticks("4242 (rackd) S 1"), None);
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\trackd\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(parse_status_rss(status), Some(5120 * 1024));
        assert_eq!(parse_status_rss("Name:\trackd\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
