//! redis-server without persistence, and redis-cli clients: a long-lived connection typed into
//! through a pipe, and a client blocked in `BLPOP`.

use std::net::IpAddr;
use std::time::Duration;

use netns_tests::{Host, Process};

use crate::scratch::Scratch;
use crate::service::Service;
use crate::testbed::{poll, Result, ScenarioError};

/// redis-server listening on the host's address and on its loopback (for local commands).
#[derive(Debug)]
pub struct RedisServer {
    service: Service,
    addr: IpAddr,
    port: u16,
}

impl RedisServer {
    pub fn start(host: &Host, scratch: &Scratch, addr: IpAddr, port: u16) -> Result<RedisServer> {
        let process = host
            .command("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", &addr.to_string(), "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--logfile", ""])
            .arg("--dir")
            .arg(scratch.dir())
            .spawn()?;
        process.wait_for_output("Ready to accept connections", Duration::from_secs(10))?;
        Ok(RedisServer {
            service: Service::new(process),
            addr,
            port,
        })
    }

    pub fn log(&self) -> String {
        self.service.process().stdout()
    }

    fn cli_args(&self, addr: IpAddr) -> Vec<String> {
        vec![
            "-h".into(),
            addr.to_string(),
            "-p".into(),
            self.port.to_string(),
        ]
    }

    /// A long-lived redis-cli connection from `client`, reading commands from a pipe.
    pub fn connect(&self, client: &Host) -> Result<RedisCli> {
        let process = client
            .command("redis-cli")
            .args(self.cli_args(self.addr))
            .stdin_piped()
            .spawn()?;
        Ok(RedisCli {
            process,
            sent: 0,
            consumed: 0,
        })
    }

    /// A redis-cli in `client` blocked in `BLPOP key 0` (it waits for ever).
    pub fn blpop(&self, client: &Host, key: &str) -> Result<Blocked> {
        let process = client
            .command("redis-cli")
            .args(self.cli_args(self.addr))
            .args(["BLPOP", key, "0"])
            .spawn()?;
        Ok(Blocked {
            process,
            key: key.to_owned(),
        })
    }

    /// Runs one command with redis-cli on the server host itself (over its loopback);
    /// returns the reply.
    pub fn local(&self, host: &Host, args: &[&str]) -> Result<String> {
        let out = host
            .command("redis-cli")
            .args(self.cli_args(IpAddr::from([127, 0, 0, 1])))
            .args(args)
            .run(Duration::from_secs(10))?
            .check()?;
        Ok(out.stdout.trim().to_owned())
    }
}

/// One redis-cli connection: each command line gets one reply line (the commands used here
/// have one-line replies).
#[derive(Debug)]
pub struct RedisCli {
    process: Process,
    /// Commands sent.
    sent: usize,
    /// Reply lines already returned.
    consumed: usize,
}

impl RedisCli {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `command` and waits up to `timeout` for its reply line.
    pub fn ask(&mut self, command: &str, timeout: Duration) -> Result<String> {
        self.send(command)?;
        self.reply(timeout)
    }

    /// Sends `command` without waiting for the reply.
    pub fn send(&mut self, command: &str) -> Result<()> {
        self.process
            .write_stdin(format!("{command}\n").as_bytes())?;
        self.sent += 1;
        Ok(())
    }

    /// Waits up to `timeout` for the reply to the oldest command not yet answered.
    pub fn reply(&mut self, timeout: Duration) -> Result<String> {
        let want = self.consumed + 1;
        if want > self.sent {
            return Err(ScenarioError::program(
                "redis-cli",
                "no command awaits a reply",
            ));
        }
        let line = poll(
            &format!("redis-cli's reply number {want}"),
            timeout,
            |detail| {
                let out = self.process.stdout();
                // A reply is complete once its newline has arrived.
                let complete: Vec<&str> = out
                    .split_inclusive('\n')
                    .filter(|l| l.ends_with('\n'))
                    .collect();
                if complete.len() >= want {
                    return Ok(Some(complete[want - 1].trim_end().to_owned()));
                }
                if let Some(status) = self.process.try_wait()? {
                    return Err(ScenarioError::program(
                        "redis-cli",
                        format!("exited ({status}); stderr: {}", self.process.stderr()),
                    ));
                }
                *detail = format!("{} reply lines so far", complete.len());
                Ok(None)
            },
        )?;
        self.consumed = want;
        Ok(line)
    }
}

/// A client blocked in `BLPOP`.
#[derive(Debug)]
pub struct Blocked {
    process: Process,
    key: String,
}

impl Blocked {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether it still waits.
    pub fn waiting(&self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// Waits for the popped value: redis-cli prints the key and the value, then exits with 0.
    pub fn value(self, timeout: Duration) -> Result<String> {
        let out = self.process.wait(timeout)?;
        let lines: Vec<&str> = out.stdout.lines().collect();
        match lines[..] {
            [key, value] if out.success() && key == self.key => Ok(value.to_owned()),
            _ => Err(ScenarioError::program(
                "redis-cli BLPOP",
                format!(
                    "exited with {}; stdout {:?}; stderr {:?}",
                    out.status, out.stdout, out.stderr
                ),
            )),
        }
    }
}
