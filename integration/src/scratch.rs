//! A directory for one scenario's files (configurations, keys, data), removed when dropped —
//! also when the test panics.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::testbed::{Result, ScenarioError};

#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// `<tmp>/<prefix>-<what>`, created empty and readable by everyone: services that drop
    /// privileges (nginx workers run as nobody) must reach the files in it.
    pub fn new(prefix: &str, what: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{what}"));
        // A run that was killed may have left it behind.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(ScenarioError::io(format!("creating {dir:?}")))?;
        fs::set_permissions(&dir, Permissions::from_mode(0o755))
            .map_err(ScenarioError::io(format!("chmod {dir:?}")))?;
        Ok(Scratch(dir))
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `contents` to `name` and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.path(name);
        fs::write(&path, contents).map_err(ScenarioError::io(format!("writing {path:?}")))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Nothing to do if it is gone already.
        let _ = fs::remove_dir_all(&self.0);
    }
}
