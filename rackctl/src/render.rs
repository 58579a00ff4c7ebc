//! Human-readable status, in the spirit of `wg show`: a daemon block, then a block per
//! connection with indented `key: value` lines.

use std::fmt::Write;

use crate::proto::{ConnState, ConnectionStatus, Status};

/// "1 hour, 3 minutes": the two largest units, singular where it reads so.
pub fn duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in UNITS {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0 seconds".into()
    } else {
        parts.join(", ")
    }
}

/// "1.20 MiB".
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// The whole status as text. `color` adds ANSI bold/colour to headings and states.
pub fn status(s: &Status, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let d = &s.daemon;
    let mut out = String::new();
    let _ = writeln!(out, "{}: pid {}", paint("1", "rackd"), d.pid);
    let _ = writeln!(out, "  version: {}", d.version);
    let _ = writeln!(out, "  uptime: {}", duration(d.uptime_s));
    let _ = writeln!(out, "  queue mode: {}", d.queue_mode);
    let _ = writeln!(
        out,
        "  packets: {} queued, {} dropped",
        d.packets_queued, d.packets_dropped
    );
    let counts: Vec<String> = d
        .states
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "  connections: {}",
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    );
    let mut conns: Vec<&ConnectionStatus> = s.connections.iter().collect();
    // Newest first (the protocol has no last-activity time; the connection someone is looking
    // for is usually new), ties by id so that repeated output is stable.
    conns.sort_by(|a, b| a.age_s.cmp(&b.age_s).then_with(|| a.id.cmp(&b.id)));
    for c in conns {
        out.push('\n');
        let _ = writeln!(out, "{}: {}", paint("1", "connection"), c.id);
        let state_color = match c.state {
            ConnState::Connected => "32",
            ConnState::Suspended | ConnState::Reconnecting => "33",
            ConnState::Closed => "31",
            _ => "0",
        };
        let _ = writeln!(out, "  state: {}", paint(state_color, c.state.as_str()));
        let _ = writeln!(out, "  local: {}", c.local);
        let _ = writeln!(out, "  remote: {}", c.remote);
        if c.original_local != c.local || c.original_remote != c.remote {
            let _ = writeln!(
                out,
                "  socket sees: {} -> {}",
                c.original_local, c.original_remote
            );
        }
        if let Some(p) = &c.peer {
            let _ = writeln!(out, "  peer: {p}");
        }
        let _ = writeln!(out, "  age: {}", duration(c.age_s));
        if c.suspended_for_s > 0 {
            let _ = writeln!(out, "  suspended for: {}", duration(c.suspended_for_s));
        }
        if c.reconnects > 0 {
            let _ = writeln!(out, "  reconnects: {}", c.reconnects);
        }
        let _ = writeln!(
            out,
            "  transfer: {} received, {} sent",
            size(c.bytes_received),
            size(c.bytes_sent)
        );
        if let Some(ms) = c.last_heartbeat_ms_ago {
            let _ = writeln!(out, "  latest heartbeat: {} ms ago", ms);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::sample_status;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0), "0 seconds");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(63), "1 minute, 3 seconds");
        assert_eq!(duration(3600 * 26 + 5), "1 day, 2 hours");
        assert_eq!(duration(7200), "2 hours");
        assert_eq!(duration(3600 + 1), "1 hour, 1 second");
        assert_eq!(duration(u64::MAX), "213503982334601 days, 7 hours");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.00 KiB");
        assert_eq!(size(1_258_291), "1.20 MiB");
        assert_eq!(size(3 << 30), "3.00 GiB");
        assert_eq!(size(u64::MAX), "16384.00 PiB");
    }

    #[test]
    fn status_lists_daemon_and_connections() {
        let text = status(&sample_status(), false);
        let want = "\
rackd: pid 42
  version: 0.1.0
  uptime: 1 minute, 1 second
  queue mode: compat
  packets: 10 queued, 0 dropped
  connections: 1 suspended

connection: 00ab
  state: suspended
  local: [2001:db8::9]:40000
  remote: [2001:db8::2]:22
  socket sees: [2001:db8::1]:40000 -> [2001:db8::2]:22
  peer: rackd 0.1.0
  age: 5 seconds
  suspended for: 3 seconds
  reconnects: 1
  transfer: 1 B received, 2.00 KiB sent
";
        assert_eq!(text, want);
    }

    #[test]
    fn colour_only_when_asked() {
        let s = sample_status();
        assert!(!status(&s, false).contains('\x1b'));
        assert!(status(&s, true).contains("\x1b[33msuspended\x1b[0m"));
    }

    #[test]
    fn newest_connection_first_and_unspliced_addresses_once() {
        let mut s = sample_status();
        let mut newer = s.connections[0].clone();
        newer.id = "00cd".into();
        newer.age_s = 1;
        newer.original_local = newer.local.clone();
        newer.state = ConnState::Connected;
        newer.suspended_for_s = 0;
        newer.last_heartbeat_ms_ago = Some(250);
        s.connections.push(newer);
        let text = status(&s, false);
        let (first, second) = (text.find("00cd").unwrap(), text.find("00ab").unwrap());
        assert!(first < second, "{text}");
        let block = &text[first..second];
        assert!(!block.contains("socket sees"), "{block}");
        assert!(!block.contains("suspended for"), "{block}");
        assert!(block.contains("latest heartbeat: 250 ms ago"), "{block}");
    }

    #[test]
    fn empty_daemon_says_none() {
        let mut s = sample_status();
        s.connections.clear();
        s.daemon.states.values_mut().for_each(|n| *n = 0);
        let text = status(&s, false);
        assert!(text.ends_with("  connections: none\n"), "{text}");
    }
}
