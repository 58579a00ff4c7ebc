//! The C ABI as a C program sees it: include/rackhook.h compiles cleanly, declares exactly the
//! functions librackhook.so exports, and a program linked against the library gets the
//! library's error messages. Needs `cc` and `nm` (binutils); fails without them.
//!
//! Cargo builds the cdylib before integration tests but passes no path to it: it is found
//! beside this test binary (target/<profile>/ or its deps/ directory).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
const MISSING_SOCKET: &str = "/nonexistent/rackhook-c-test/control.sock";

/// librackhook.so as cargo built it for this test run.
fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("librackhook.so"))
        .find(|lib| lib.is_file())
        .unwrap_or_else(|| {
            panic!(
                "librackhook.so not found in the directories above {} (cargo builds it for \
                 integration tests: is crate-type still [.., \"cdylib\", ..]?)",
                exe.display()
            )
        })
}

fn run(cmd: &mut Command) -> Output {
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

/// The function names the header declares (comments removed).
fn declared_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(Path::new(HEADER_DIR).join("rackhook.h")).unwrap();
    let mut code = String::new();
    let mut rest = header.as_str();
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("unterminated comment") + start + 2;
        rest = &rest[end..];
    }
    code.push_str(rest);
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("rackhook_") {
        let name: String = code[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if code[i + name.len()..].starts_with('(') {
            names.insert(name);
        }
    }
    names
}

/// The rackhook_ functions the shared library exports.
fn exported_functions(lib: &Path) -> BTreeSet<String> {
    let out = run(Command::new("nm").args(["-D", "--defined-only"]).arg(lib));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, "T", name] if name.starts_with("rackhook_") => Some(name.to_owned()),
                _ => None,
            },
        )
        .collect()
}

#[test]
fn the_header_declares_exactly_what_the_library_exports() {
    let declared = declared_functions();
    assert_eq!(declared.len(), 4, "header parse: {declared:?}");
    assert_eq!(declared, exported_functions(&cdylib()));
}

/// The Rust signatures the header's declarations describe (checked by the compiler).
#[test]
fn the_rust_signatures_match_the_header() {
    use std::ffi::{c_char, c_int};
    let _: unsafe extern "C" fn(c_int, c_int, *mut *mut u8, *mut usize) -> c_int =
        rackhook::ffi::rackhook_checkpoint;
    let _: unsafe extern "C" fn(*mut u8, usize) = rackhook::ffi::rackhook_free;
    let _: unsafe extern "C" fn(*const u8, usize, *const c_char) -> c_int =
        rackhook::ffi::rackhook_restore;
    let _: extern "C" fn() -> *const c_char = rackhook::ffi::rackhook_last_error;
}

#[test]
fn a_c_program_gets_the_library_error_messages() {
    let lib = cdylib();
    let lib_dir = lib.parent().unwrap();
    let program = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rackhook-c-errors");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/errors.c");
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(format!("-I{HEADER_DIR}"))
        .arg(source)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-lrackhook", "-o"])
        .arg(&program));
    let out = run(Command::new(&program).env("RACKD_CONTROL_SOCKET", MISSING_SOCKET));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let no_socket =
        format!("is rackd running? no control socket at {MISSING_SOCKET} (see --control-socket)");
    let expected = [
        format!("checkpoint -> -1: rackhook_checkpoint: {no_socket}"),
        "checkpoint null len -> -1: rackhook_checkpoint: len is NULL".into(),
        "checkpoint pid 0 -> -1: rackhook_checkpoint: invalid pid 0: a process id is a \
         positive number"
            .into(),
        format!("restore -> -1: rackhook_restore: {no_socket}"),
        "restore null blob -> -1: rackhook_restore: blob is NULL".into(),
        "restore bad local -> -1: rackhook_restore: invalid local address \"198.51.100.x\": \
         expected an IPv4 or IPv6 address such as 203.0.113.2"
            .into(),
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
}
