//! Finding the workspace's programs (rackd, rackctl, rk-stream) from a test.

use std::path::PathBuf;

use crate::{Error, Result};

/// The path of workspace binary `name`: `CARGO_BIN_EXE_<name>` if set at run time (nextest
/// sets it; in a test of the binary's own package prefer `env!("CARGO_BIN_EXE_<name>")`), else
/// the cargo output directory the running test binary was built in (`target/<profile>/`).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let mut looked = Vec::new();
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")).map(PathBuf::from) {
        if path.is_file() {
            return Ok(path);
        }
        looked.push(path);
    }
    if let Ok(exe) = std::env::current_exe() {
        // Test binaries live in target/<profile>/deps, examples in target/<profile>/examples.
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            looked.push(candidate);
        }
    }
    Err(Error::BinaryNotFound {
        name: name.to_owned(),
        looked,
    })
}
