//! Command-line arguments. Every flag can also come from an environment variable, and flags
//! override the configuration file.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};

#[derive(Debug, Parser)]
#[command(
    name = "rackd",
    version,
    about = "Keeps TCP connections alive across outages and address changes"
)]
pub struct Args {
    /// Configuration file (missing default file = built-in defaults).
    #[arg(long, env = "RACKD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Control socket path (overrides control.socket).
    #[arg(long, env = "RACKD_CONTROL_SOCKET", value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// First NFQUEUE number (overrides queue.num).
    #[arg(long, env = "RACKD_QUEUE_NUM", value_name = "N")]
    pub queue_num: Option<u16>,

    /// Log level or tracing filter, e.g. "info" or "rackd=debug".
    #[arg(
        long,
        env = "RACKD_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

impl Args {
    /// The configuration file merged with command-line overrides.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut cfg = Config::load(&path, explicit)?;
        if let Some(s) = &self.control_socket {
            cfg.control.socket = s.clone();
        }
        if let Some(n) = self.queue_num {
            cfg.queue.num = n;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("rackd-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[queue]\nnum = 3\n").unwrap();
        let args = Args::try_parse_from([
            "rackd",
            "--config",
            file.to_str().unwrap(),
            "--queue-num",
            "9",
            "--control-socket",
            "/tmp/x.sock",
        ])
        .unwrap();
        let cfg = args.config().unwrap();
        assert_eq!(cfg.queue.num, 9);
        assert_eq!(cfg.control.socket, PathBuf::from("/tmp/x.sock"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_queue_number_is_reported_with_the_value() {
        let err = Args::try_parse_from(["rackd", "--queue-num", "70000"]).unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");
    }
}
