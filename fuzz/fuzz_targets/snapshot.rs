#![no_main]
//! One `snapshot` file's bytes through its decoder.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| annal::fuzzing::snapshot(data));
