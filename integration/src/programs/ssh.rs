//! OpenSSH: an sshd started by the test with its own configuration and host key, and an
//! interactive session (`ssh -tt`, key authentication) driven through pipes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use netns_tests::{Host, Process};

use crate::scratch::Scratch;
use crate::service::Service;
use crate::testbed::{poll, Result, ScenarioError};

/// sshd refuses to start without its privilege separation directory, which the package's
/// service unit normally creates at boot.
const PRIVSEP_DIR: &str = "/run/sshd";

/// An sshd listening on one address and port, accepting only the scenario's client key.
#[derive(Debug)]
pub struct SshServer {
    service: Service,
    addr: IpAddr,
    port: u16,
    client_key: PathBuf,
    known_hosts: PathBuf,
}

fn keygen(path: &std::path::Path) -> Result<()> {
    let out = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rackd-scenario",
            "-f",
        ])
        .arg(path)
        .output()
        .map_err(ScenarioError::io("running ssh-keygen"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ScenarioError::program(
            "ssh-keygen",
            String::from_utf8_lossy(&out.stderr),
        ))
    }
}

impl SshServer {
    /// Generates a host key and a client key in `scratch` and starts sshd in `host` on
    /// `addr:port`: public-key authentication only, no PAM, logs on stderr.
    pub fn start(host: &Host, scratch: &Scratch, addr: IpAddr, port: u16) -> Result<SshServer> {
        let (host_key, client_key) = (scratch.path("ssh_host_key"), scratch.path("client_key"));
        keygen(&host_key)?;
        keygen(&client_key)?;
        let authorized = scratch.path("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized)
            .map_err(ScenarioError::io("writing authorized_keys"))?;
        std::fs::create_dir_all(PRIVSEP_DIR)
            .map_err(ScenarioError::io(format!("creating {PRIVSEP_DIR}")))?;
        let config = scratch.write(
            "sshd_config",
            &format!(
                "ListenAddress {}\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nPrintMotd no\nLogLevel VERBOSE\n",
                bracketed(addr),
                host_key.display(),
                authorized.display(),
                scratch.path("sshd.pid").display()
            ),
        )?;
        // sshd re-executes itself and insists on an absolute path.
        let process = host
            .command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .spawn()?;
        process.wait_for_output("Server listening", Duration::from_secs(10))?;
        Ok(SshServer {
            service: Service::new(process),
            addr,
            port,
            client_key,
            known_hosts: scratch.path("known_hosts"),
        })
    }

    /// What sshd logged (connections, authentication, sessions).
    pub fn log(&self) -> String {
        self.service.process().stderr()
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn bracketed(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// An interactive shell session over ssh with a pseudo-terminal (as a person at a terminal
/// would have), typed into through a pipe.
#[derive(Debug)]
pub struct SshSession {
    process: Process,
}

impl SshSession {
    /// Logs in from `client` as root with the scenario's key and starts `sh` on a terminal.
    pub fn open(client: &Host, server: &SshServer) -> Result<SshSession> {
        let process = client
            .command("ssh")
            .args(["-tt", "-e", "none", "-F", "/dev/null"])
            .arg("-i")
            .arg(&server.client_key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                server.known_hosts.display()
            ))
            .args(["-p", &server.port.to_string()])
            .arg(format!("root@{}", server.addr))
            .arg("sh")
            .stdin_piped()
            .spawn()?;
        Ok(SshSession { process })
    }

    /// Types `line` and Enter.
    pub fn type_line(&self, line: &str) -> Result<()> {
        self.process.write_stdin(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    /// What the terminal showed so far, with the terminal's CR LF turned into LF.
    pub fn screen(&self) -> String {
        self.process.stdout().replace("\r\n", "\n")
    }

    /// Waits until the terminal shows `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<()> {
        poll(&format!("ssh to show {needle:?}"), timeout, |detail| {
            let screen = self.screen();
            if screen.contains(needle) {
                return Ok(Some(()));
            }
            if let Some(status) = self.process.try_wait()? {
                return Err(ScenarioError::program(
                    "ssh",
                    format!(
                        "exited ({status}) before showing {needle:?}; stderr: {}",
                        self.process.stderr()
                    ),
                ));
            }
            let tail: String = screen.chars().rev().take(300).collect::<String>();
            *detail = format!("screen ends {:?}", tail.chars().rev().collect::<String>());
            Ok(None)
        })
    }

    /// Ends the shell with `exit` and waits for ssh to finish; fails unless it exits with 0.
    pub fn exit(self, timeout: Duration) -> Result<()> {
        self.type_line("exit")?;
        self.process.close_stdin();
        let out = self.process.wait(timeout)?;
        if out.success() {
            Ok(())
        } else {
            Err(ScenarioError::program(
                "ssh",
                format!("exited with {}: {}", out.status, out.stderr.trim()),
            ))
        }
    }
}
