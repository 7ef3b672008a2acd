#![no_main]
//! A log directory (see `annal::fuzzing::split_dir` for the chunk format; a
//! chunk kind with bit 7 set has its checksums recomputed): check, check
//! --repair, readers, writer recovery, one append.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| annal::fuzzing::open_dir_bytes(data));
