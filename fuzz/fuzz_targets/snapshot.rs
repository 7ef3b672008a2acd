#![no_main]
//! One `snapshot` file's bytes through its decoder, as given, then with its
//! checksums recomputed.
use annal::fuzzing::{fix_snapshot_crc, snapshot, with_fixed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| with_fixed(data, fix_snapshot_crc, snapshot));
