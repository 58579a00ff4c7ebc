//! The C ABI as a C program sees it: include/rackhook.h compiles cleanly, declares exactly the
//! functions librackhook.so exports, and a program linked against the library (shared or
//! static) gets the library's error messages. Needs `cc` and `nm` (binutils); fails without them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

mod support;
use support::{built_library, compile_c, run, Link, HEADER_DIR};

const MISSING_SOCKET: &str = "/nonexistent/rackhook-c-test/control.sock";

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
    assert_eq!(declared, exported_functions(&built_library(Link::Shared)));
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
    assert_error_messages(Link::Shared);
}

#[test]
fn a_statically_linked_c_program_gets_them_too() {
    assert_error_messages(Link::Static);
}

/// tests/c/errors.c, run with no rackd at the control socket, prints each failing call's
/// result and message.
fn assert_error_messages(link: Link) {
    let program = compile_c("errors", link);
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
