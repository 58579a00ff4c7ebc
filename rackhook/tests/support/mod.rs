//! What the integration tests share: the library cargo built, and C programs compiled against
//! it and the header.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");

/// How a C test program gets the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// librackhook.so, found at run time through the program's rpath.
    Shared,
    /// librackhook.a, with the system libraries the Rust standard library needs.
    Static,
}

impl Link {
    fn file_name(self) -> &'static str {
        match self {
            Link::Shared => "librackhook.so",
            Link::Static => "librackhook.a",
        }
    }
}

/// The library file cargo built for this test run. Cargo builds the cdylib and staticlib
/// before integration tests but passes no path to them: they are beside this test binary
/// (target/<profile>/deps/, or target/<profile>/ after a `cargo build`).
pub fn built_library(link: Link) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let name = link.file_name();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|lib| lib.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found in the two directories above {} (cargo builds it for \
                 integration tests: is it still in the crate-type list?)",
                exe.display()
            )
        })
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Compiles tests/c/`name`.c, strictly, against the header and the library; returns the
/// program (in cargo's temporary directory for integration tests).
pub fn compile_c(name: &str, link: Link) -> PathBuf {
    let lib = built_library(link);
    let program =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rackhook-c-{name}-{link:?}"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(format!("-I{HEADER_DIR}"))
        .arg(source);
    match link {
        Link::Shared => {
            let dir = lib.parent().unwrap().display();
            cc.arg(format!("-L{dir}"))
                .arg(format!("-Wl,-rpath,{dir}"))
                .arg("-lrackhook");
        }
        // The libraries docs/checkpoint.md names for static linking.
        Link::Static => {
            cc.arg(&lib).args(["-lpthread", "-ldl", "-lm"]);
        }
    }
    run(cc.arg("-o").arg(&program));
    program
}
