//! Every parser of bytes from the network: frames (whole and streamed), the SYN option, compact
//! resumption messages, and the EDP server machine. Run with `cargo fuzz run parse_untrusted`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edp::fuzzing::exercise(data));
