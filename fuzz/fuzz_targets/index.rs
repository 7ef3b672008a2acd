#![no_main]
//! An index file, alone or with its segment: `[flag][seg_len u16 LE][segment][index]`
//! when `flag & 1`, else `[flag][index]` (checked against its own header).
//! With `flag & 2`, the checksums of both are recomputed first.
use annal::fuzzing::{fix_blockfile, fix_segment_crcs, index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let (seg, idx) = match rest {
        [a, b, rest @ ..] if flag & 1 == 1 => {
            let n = (u16::from_le_bytes([*a, *b]) as usize).min(rest.len());
            let (s, i) = rest.split_at(n);
            (Some(s.to_vec()), i.to_vec())
        }
        _ => (None, rest.to_vec()),
    };
    let (mut seg, mut idx) = (seg, idx);
    if flag & 2 == 2 {
        if let Some(s) = seg.as_mut() {
            fix_segment_crcs(s);
        }
        fix_blockfile(&mut idx);
    }
    index(&idx, seg.as_deref());
});
