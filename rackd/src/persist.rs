//! The state file: rackd's managed connections written down so that the next run takes them
//! over (a restart or an upgrade keeps them protected, and the peer never holds them for
//! nothing). It sits beside the control socket (`flows.state`, on /run: gone after a reboot,
//! like the sockets it describes), mode 0600, since it holds the connections' secrets; it is
//! replaced atomically, at most once a second and when rackd stops.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, SavedFlow};

const FILE_NAME: &str = "flows.state";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("state file {path} is not a rackd state file: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {path} has version {found}; this rackd reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Serialize, Deserialize)]
struct Contents {
    version: u32,
    flows: Vec<SavedFlow>,
}

#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// The engine revision last written.
    written: Option<u64>,
}

impl StateFile {
    /// The state file of the rackd whose control socket is `control_socket`: each instance
    /// (one per network namespace in tests) has its own.
    pub fn beside(control_socket: &Path) -> Self {
        let dir = control_socket.parent().unwrap_or(Path::new("."));
        StateFile {
            path: dir.join(FILE_NAME),
            written: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connections a previous run left; none if there is no file.
    pub fn load(&self) -> Result<Vec<SavedFlow>, StateError> {
        let io_err = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(e)),
        };
        let contents: Contents =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Format {
                path: self.path.clone(),
                source,
            })?;
        if contents.version != VERSION {
            return Err(StateError::Version {
                path: self.path.clone(),
                found: contents.version,
            });
        }
        Ok(contents.flows)
    }

    /// Writes the engine's managed connections if they changed since the last write.
    pub fn save(&mut self, engine: &Engine) -> Result<(), StateError> {
        if self.written == Some(engine.revision()) {
            return Ok(());
        }
        let contents = Contents {
            version: VERSION,
            flows: engine.saved_flows(),
        };
        let bytes = serde_json::to_vec(&contents).expect("state serialises");
        let tmp = self.path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.written = Some(engine.revision());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rackd-persist-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_file_is_no_connections_and_bad_files_name_the_path() {
        let d = dir().join("a");
        std::fs::create_dir_all(&d).unwrap();
        let state = StateFile::beside(&d.join("control.sock"));
        assert!(state.load().unwrap().is_empty());
        std::fs::write(state.path(), b"{\"version\":1,\"flows\":[{}]}").unwrap();
        let e = state.load().unwrap_err().to_string();
        assert!(
            e.contains("flows.state") && e.contains("not a rackd state file"),
            "{e}"
        );
        std::fs::write(state.path(), b"{\"version\":9,\"flows\":[]}").unwrap();
        let e = state.load().unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_empty_engine_is_saved_privately_and_read_back() {
        let d = dir().join("b");
        std::fs::create_dir_all(&d).unwrap();
        let mut state = StateFile::beside(&d.join("control.sock"));
        let engine = Engine::new(
            1,
            Box::new(edp::crypto::DeterministicEntropy::new(1)),
            Default::default(),
        );
        state.save(&engine).unwrap();
        let mode = std::fs::metadata(state.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(state.load().unwrap().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
