//! nginx serving files from the scratch directory, and curl downloading one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netns_tests::{Host, Process};

use crate::scratch::Scratch;
use crate::service::Service;
use crate::testbed::{Result, ScenarioError};

/// nginx's `send_timeout`: it closes a connection whose writes make no progress for this long
/// (60 s by default). That is the application's own limit, which rackd leaves alone on
/// purpose; it must outlast the outage a scenario runs.
const SEND_TIMEOUT_S: u32 = 300;

/// nginx (master and one worker running as nobody), its configuration, pid file, logs and
/// document root in the scratch directory.
#[derive(Debug)]
pub struct Nginx {
    service: Service,
    root: PathBuf,
    base: String,
    error_log: PathBuf,
}

impl Nginx {
    pub fn start(host: &Host, scratch: &Scratch, addr: IpAddr, port: u16) -> Result<Nginx> {
        let root = scratch.path("www");
        std::fs::create_dir_all(&root).map_err(ScenarioError::io("creating the document root"))?;
        let listen = std::net::SocketAddr::new(addr, port);
        let p = |name: &str| scratch.path(name).display().to_string();
        let config = scratch.write(
            "nginx.conf",
            &format!(
                "daemon off;\nworker_processes 1;\nuser nobody nogroup;\npid {pid};\n\
                 error_log {error_log} info;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log {access_log};\n  client_body_temp_path {tmp}/body;\n  \
                 proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fastcgi;\n  \
                 uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n  \
                 sendfile on;\n  send_timeout {SEND_TIMEOUT_S}s;\n  \
                 server {{ listen {listen}; root {root}; }}\n}}\n",
                pid = p("nginx.pid"),
                error_log = p("nginx-error.log"),
                access_log = p("nginx-access.log"),
                tmp = scratch.dir().display(),
                root = root.display(),
            ),
        )?;
        let process = host
            .command("nginx")
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(scratch.dir())
            .spawn()?;
        let service = Service::new(process);
        super::wait_listening(host, port).map_err(|e| {
            ScenarioError::program(
                "nginx",
                format!("{e}; stderr: {}", service.process().stderr()),
            )
        })?;
        Ok(Nginx {
            service,
            root,
            base: format!("http://{listen}"),
            error_log: scratch.path("nginx-error.log"),
        })
    }

    /// Where files to serve go.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The URL of `name` in the document root.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// nginx's master process.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// nginx's error log (it also notes timeouts and resets).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

/// A curl download to a file, running in the background.
#[derive(Debug)]
pub struct Download {
    process: Process,
    output: PathBuf,
}

/// What curl said when it finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Downloaded {
    pub http_code: u16,
    pub size: u64,
    pub seconds: f64,
}

impl Download {
    /// Starts `curl` in `client` fetching `url` into `output`.
    pub fn start(client: &Host, url: &str, output: &Path) -> Result<Download> {
        let process = client
            .command("curl")
            .args(["--silent", "--show-error", "--fail", "--output"])
            .arg(output)
            .args([
                "--write-out",
                "%{http_code} %{size_download} %{time_total}\\n",
            ])
            .arg(url)
            .spawn()?;
        Ok(Download {
            process,
            output: output.to_owned(),
        })
    }

    /// Bytes written to the output file so far.
    pub fn received(&self) -> u64 {
        std::fs::metadata(&self.output).map_or(0, |m| m.len())
    }

    /// Whether curl still runs.
    pub fn running(&self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// Waits for curl to finish; fails unless it exits with 0 and reports what it fetched.
    pub fn finish(self, timeout: Duration) -> Result<Downloaded> {
        let out = self.process.wait(timeout)?;
        let fields: Vec<&str> = out.stdout.split_whitespace().collect();
        let parsed = match fields[..] {
            [code, size, secs] => code
                .parse()
                .ok()
                .zip(size.parse().ok())
                .zip(secs.parse().ok())
                .map(|((http_code, size), seconds)| Downloaded {
                    http_code,
                    size,
                    seconds,
                }),
            _ => None,
        };
        match parsed {
            Some(d) if out.success() => Ok(d),
            _ => Err(ScenarioError::program(
                "curl",
                format!(
                    "exited with {}; stdout {:?}; stderr {:?}",
                    out.status,
                    out.stdout.trim(),
                    out.stderr.trim()
                ),
            )),
        }
    }
}
