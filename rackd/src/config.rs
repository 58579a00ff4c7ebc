//! The daemon's configuration file (TOML). Every key is optional; unknown keys are errors so a
//! typo never silently means "default". docs/configuration.md documents each key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::EdpServer;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/rackd/rackd.toml";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/rackd/control.sock";

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub queue: QueueConfig,
    pub rules: RulesConfig,
    pub eligibility: Eligibility,
    pub monitor: MonitorConfig,
    pub reconnect: ReconnectConfig,
    pub control: ControlConfig,
    pub peer: PeerConfig,
    pub checkpoint: CheckpointConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// First NFQUEUE number.
    pub num: u16,
    /// Number of queues to fan out over (one reader each).
    pub count: u16,
    /// Packets the kernel holds for rackd before it lets them pass (fail-open).
    pub max_len: u32,
    /// Netlink receive buffer; the kernel default overflows under load.
    pub rcvbuf_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Name of rackd's own nftables table (family inet).
    pub table: String,
    /// Mark bits carried by packets and sockets of rackd itself; such packets are never queued.
    pub mark: u32,
    /// Which bits of the packet mark rackd owns (`mark` must lie within them).
    pub mark_mask: u32,
}

/// Which connections rackd offers to protect, decided in the kernel at SYN time. "Local" is this
/// host's end of the connection, "remote" the peer's, whichever side opened it. An empty list
/// means "all"; excludes win over includes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Eligibility {
    pub ipv4: bool,
    pub ipv6: bool,
    /// Port ranges such as "22" or "8000-8099".
    pub local_ports: Vec<PortRange>,
    pub exclude_local_ports: Vec<PortRange>,
    pub remote_ports: Vec<PortRange>,
    pub exclude_remote_ports: Vec<PortRange>,
    /// CIDR prefixes of either family, e.g. "198.51.100.0/24" or "2001:db8::/32".
    pub local_addrs: Vec<Prefix>,
    pub exclude_local_addrs: Vec<Prefix>,
    pub remote_addrs: Vec<Prefix>,
    pub exclude_remote_addrs: Vec<Prefix>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub heartbeat_interval_ms: u64,
    /// Silence after which the path counts as failed. Keep it below the time the kernel takes to
    /// abort a socket with data in flight (tcp_retries2).
    pub detect_after_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectConfig {
    /// How long a suspended connection waits for its peer before it is reset.
    pub window_s: u64,
    pub max_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    pub socket: PathBuf,
    /// Group whose members may read status; changes are for root only.
    pub group: String,
    /// Socket file mode, as an octal string ("0660").
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// UDP port of the daemon channel (initialisation and heartbeats between daemons). TCP
    /// connections to or from it are never intercepted either.
    pub port: u16,
    /// When a SYN-ACK comes back without the rackd option (a middlebox stripped it, or no rackd
    /// there), ask the server's daemon over the daemon channel before releasing.
    pub fallback: bool,
    /// User-level EDP servers (`edp::net`) on hosts without rackd: "ADDR:PORT", "[V6]:PORT",
    /// or a prefix "ADDR/LEN" for any port. Connections to them are probed first (EDP) and,
    /// if enhanced, initialised in-band; this delays their connect by the probe.
    pub edp_servers: Vec<String>,
    /// Local listening ports whose unmodified server programs answer user-level EDP clients
    /// (`edp::net`, e.g. `edp-client`) on hosts without rackd: rackd answers the probe and the
    /// initialisation in the program's place. Empty: no connection is looked at this way.
    pub edp_ports: Vec<u16>,
}

/// The checkpoint hook (docs/checkpoint.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// 32 random bytes (or 64 hex digits) shared by every host a connection may move between;
    /// read at each checkpoint and restore, so a missing key only fails those.
    pub key_file: PathBuf,
    /// How long a restore waits for the peer to accept the move.
    pub restore_timeout_ms: u64,
    /// Blobs older than this are refused (and restored ids are remembered this long).
    pub max_age_s: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            key_file: PathBuf::from("/etc/rackd/checkpoint.key"),
            restore_timeout_ms: 5000,
            max_age_s: 3 * 24 * 3600,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            num: 0,
            count: 1,
            max_len: 8192,
            rcvbuf_bytes: 8 << 20,
        }
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        // One high bit, so rackd coexists with software that uses the low bits of the mark.
        Self {
            table: "rackd".into(),
            mark: 0x4000_0000,
            mark_mask: 0x4000_0000,
        }
    }
}

impl Default for Eligibility {
    fn default() -> Self {
        Self {
            ipv4: true,
            ipv6: true,
            local_ports: Vec::new(),
            exclude_local_ports: Vec::new(),
            remote_ports: Vec::new(),
            exclude_remote_ports: Vec::new(),
            local_addrs: Vec::new(),
            exclude_local_addrs: Vec::new(),
            remote_addrs: Vec::new(),
            exclude_remote_addrs: Vec::new(),
        }
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1000,
            detect_after_ms: 4000,
        }
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            window_s: 3 * 24 * 3600,
            max_interval_ms: 2000,
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: DEFAULT_CONTROL_SOCKET.into(),
            group: "rackd".into(),
            mode: "0660".into(),
        }
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            port: 7113,
            fallback: true,
            edp_servers: Vec::new(),
            edp_ports: Vec::new(),
        }
    }
}

impl MonitorConfig {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
    pub fn detect_after(&self) -> Duration {
        Duration::from_millis(self.detect_after_ms)
    }
}

impl ControlConfig {
    pub fn mode_bits(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ConfigError::Invalid {
                key: "control.mode",
                value: self.mode.clone(),
                why: "expected an octal file mode such as \"0660\"",
            })
    }
}

/// An address prefix in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Prefix { addr, len })
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An inclusive TCP port range, written "N" or "LO-HI" (a bare integer is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{s:?} is not a port or port range (\"N\" or \"LO-HI\")"))
        };
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => (port(s)?, port(s)?),
        };
        if lo > hi {
            return Err(format!("{s:?}: range start is after its end"));
        }
        Ok(PortRange { lo, hi })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key} = {value:?}: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

impl Config {
    /// Loads `path`. A missing file at the default path means built-in defaults; a missing file
    /// the user named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, value: String, why| Err(ConfigError::Invalid { key, value, why });
        if self.queue.count == 0 {
            return invalid("queue.count", "0".into(), "at least one queue is needed");
        }
        if self.queue.num.checked_add(self.queue.count - 1).is_none() {
            return invalid(
                "queue.count",
                self.queue.count.to_string(),
                "queue.num + queue.count exceeds 65535",
            );
        }
        if self.monitor.heartbeat_interval_ms == 0 {
            return invalid(
                "monitor.heartbeat_interval_ms",
                "0".into(),
                "must be positive",
            );
        }
        if self.monitor.detect_after_ms <= self.monitor.heartbeat_interval_ms {
            return invalid(
                "monitor.detect_after_ms",
                self.monitor.detect_after_ms.to_string(),
                "must exceed monitor.heartbeat_interval_ms",
            );
        }
        if self.rules.table.is_empty() || self.rules.table.len() > 64 {
            return invalid(
                "rules.table",
                self.rules.table.clone(),
                "must be 1..=64 characters",
            );
        }
        if self.rules.mark == 0 {
            return invalid("rules.mark", "0".into(), "0 is every unmarked packet");
        }
        if self.rules.mark & !self.rules.mark_mask != 0 {
            return invalid(
                "rules.mark",
                format!("{:#x}", self.rules.mark),
                "has bits outside rules.mark_mask",
            );
        }
        if !self.eligibility.ipv4 && !self.eligibility.ipv6 {
            return invalid(
                "eligibility.ipv6",
                "false".into(),
                "with eligibility.ipv4 = false nothing could be protected",
            );
        }
        if self.peer.port == 0 {
            return invalid("peer.port", "0".into(), "must be a port number");
        }
        if self.checkpoint.restore_timeout_ms == 0 {
            return invalid(
                "checkpoint.restore_timeout_ms",
                "0".into(),
                "must be positive",
            );
        }
        if self.checkpoint.max_age_s == 0 {
            return invalid("checkpoint.max_age_s", "0".into(), "must be positive");
        }
        self.control.mode_bits()?;
        self.peer.edp_server_list()?;
        if let Some(port) = self.peer.edp_ports.iter().find(|p| **p == 0) {
            return invalid("peer.edp_ports", port.to_string(), "must be a port number");
        }
        if let Some(port) = self.peer.edp_ports.iter().find(|p| **p == self.peer.port) {
            return invalid(
                "peer.edp_ports",
                port.to_string(),
                "is peer.port, whose connections are never intercepted",
            );
        }
        Ok(())
    }
}

impl PeerConfig {
    /// `edp_servers`, parsed; the first bad entry is an error naming it.
    pub fn edp_server_list(&self) -> Result<Vec<EdpServer>, ConfigError> {
        self.edp_servers
            .iter()
            .map(|s| {
                s.parse().map_err(|why| ConfigError::Invalid {
                    key: "peer.edp_servers",
                    value: s.clone(),
                    why,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_named_file_is_an_error() {
        let p = Path::new("/nonexistent/rackd.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        let err = Config::load(p, true).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/rackd.toml"), "{err}");
    }

    #[test]
    fn values_override_defaults() {
        let c = parse(
            "[queue]\nnum = 7\ncount = 2\n[eligibility]\nexclude_local_ports = [22, \"8000-8099\"]\n\
             remote_addrs = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n\
             [monitor]\nheartbeat_interval_ms = 200\ndetect_after_ms = 1500\n",
        )
        .unwrap();
        assert_eq!((c.queue.num, c.queue.count), (7, 2));
        let ports = &c.eligibility.exclude_local_ports;
        assert_eq!(ports[0], PortRange { lo: 22, hi: 22 });
        assert_eq!(ports[1], PortRange { lo: 8000, hi: 8099 });
        assert_eq!(c.eligibility.remote_addrs[1].len, 32);
        assert_eq!(c.monitor.detect_after(), Duration::from_millis(1500));
    }

    #[test]
    fn checkpoint_section() {
        let c = parse(
            "[checkpoint]\nkey_file = \"/etc/k\"\nrestore_timeout_ms = 900\nmax_age_s = 60\n",
        )
        .unwrap();
        assert_eq!(c.checkpoint.key_file, PathBuf::from("/etc/k"));
        assert_eq!(c.checkpoint.restore_timeout_ms, 900);
        assert_eq!(c.checkpoint.max_age_s, 60);
        let e = parse("[checkpoint]\nrestore_timeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("checkpoint.restore_timeout_ms"), "{e}");
        let e = parse("[checkpoint]\nkey = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key"), "{e}");
    }

    #[test]
    fn edp_servers_are_addresses_or_prefixes() {
        let c = parse(
            "[peer]\nedp_servers = [\"198.51.100.2:7000\", \"[2001:db8::2]:7000\", \"203.0.113.0/24\"]\n",
        )
        .unwrap();
        let list = c.peer.edp_server_list().unwrap();
        assert!(list[0].matches("198.51.100.2:7000".parse().unwrap()));
        assert!(!list[0].matches("198.51.100.2:7001".parse().unwrap()));
        assert!(list[1].matches("[2001:db8::2]:7000".parse().unwrap()));
        assert!(list[2].matches("203.0.113.77:1".parse().unwrap()));
        assert!(!list[2].matches("203.0.114.1:1".parse().unwrap()));
        for bad in ["198.51.100.2", "host:7000", "10.0.0.0/33", "198.51.100.2:0"] {
            let e = parse(&format!("[peer]\nedp_servers = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("peer.edp_servers") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn edp_ports_are_ports_other_than_the_daemon_channel() {
        let c = parse("[peer]\nedp_ports = [8080, 2222]\n").unwrap();
        assert_eq!(c.peer.edp_ports, vec![8080, 2222]);
        assert!(Config::default().peer.edp_ports.is_empty());
        for (bad, why) in [("0", "port number"), ("7113", "peer.port")] {
            let e = parse(&format!("[peer]\nedp_ports = [80, {bad}]\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("peer.edp_ports") && e.contains(bad) && e.contains(why),
                "{e}"
            );
        }
        let e = parse("[peer]\nedp_ports = [70000]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("edp_ports") && e.contains("70000"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[queue]\nnumber = 3\n").unwrap_err().to_string();
        assert!(err.contains("number"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let err = parse("[peer]\nport = \"http\"\n").unwrap_err().to_string();
        assert!(err.contains("port") && err.contains("http"), "{err}");
    }

    #[test]
    fn bad_prefix_is_named() {
        let err = parse("[eligibility]\nexclude_remote_addrs = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
        let err = parse("[eligibility]\nlocal_ports = [\"90-80\"]\n").unwrap_err();
        assert!(err.to_string().contains("90-80"), "{err}");
        let err = parse("[eligibility]\nlocal_ports = [70000]\n").unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");
    }

    #[test]
    fn semantic_errors_name_key_and_value() {
        let err = parse("[monitor]\nheartbeat_interval_ms = 500\ndetect_after_ms = 400\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("monitor.detect_after_ms") && err.contains("400"),
            "{err}"
        );
        let err = parse("[rules]\nmark = 3\nmark_mask = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rules.mark") && err.contains("0x3"), "{err}");
        let err = parse("[control]\nmode = \"rw\"\n").unwrap_err().to_string();
        assert!(err.contains("control.mode") && err.contains("rw"), "{err}");
        let err = parse("[queue]\nnum = 65535\ncount = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.count"), "{err}");
    }
}
