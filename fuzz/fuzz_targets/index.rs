#![no_main]
//! An index file, alone or with its segment: `[flag][seg_len u16 LE][segment][index]`
//! when `flag & 1`, else `[flag][index]` (checked against its own header).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data {
        [flag, a, b, rest @ ..] if flag & 1 == 1 => {
            let n = (u16::from_le_bytes([*a, *b]) as usize).min(rest.len());
            let (seg, idx) = rest.split_at(n);
            annal::fuzzing::index(idx, Some(seg));
        }
        [_, rest @ ..] => annal::fuzzing::index(rest, None),
        [] => {}
    }
});
