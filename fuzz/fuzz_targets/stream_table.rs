#![no_main]
//! One `stream_table` file's bytes through its decoder, as given, then with its
//! checksums recomputed.
use annal::fuzzing::{fix_blockfile, stream_table, with_fixed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| with_fixed(data, fix_blockfile, stream_table));
