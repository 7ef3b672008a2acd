#![no_main]
//! One `stream_table` file's bytes through its decoder.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| annal::fuzzing::stream_table(data));
