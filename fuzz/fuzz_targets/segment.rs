#![no_main]
//! A whole segment file: header, frame walk, records, checkpoints, seal, index
//! rebuild; as given, then with its checksums recomputed.
use annal::fuzzing::{fix_segment_crcs, segment, with_fixed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| with_fixed(data, fix_segment_crcs, segment));
