#![no_main]
//! A whole segment file: header, frame walk, records, checkpoints, seal, index rebuild.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| annal::fuzzing::segment(data));
