//! Every view and every rewrite of tcpseq on arbitrary bytes: the first `PARAMS` bytes choose
//! the rewrite parameters, the rest is the packet. Run with `cargo fuzz run parse_rewrite`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpseq::fuzzing::exercise(data));
