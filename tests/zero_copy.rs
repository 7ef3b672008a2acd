//! Replay is zero-copy: a record's payload points into the segment mapping,
//! and iterating allocates nothing per record.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use annal::{EventData, ExpectedVersion, Log, Options, ReadOptions, Reader};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn replay_borrows_from_the_mapping_and_allocates_nothing_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().segment_size(64 << 10)).unwrap();
    let payload = vec![9u8; 200];
    for b in 0..200u32 {
        let evs: Vec<EventData<'_>> = (0..10)
            .map(|_| EventData::new("Tick", payload.as_slice()).with_metadata(b"m".as_slice()))
            .collect();
        log.append(&format!("s-{}", b % 7), ExpectedVersion::Any, &evs).unwrap();
    }
    log.close().unwrap();

    let view = Reader::open(dir.path()).unwrap().view().unwrap();
    assert!(view.segment_count() > 1, "the test needs several segments");
    let ranges: Vec<std::ops::Range<usize>> = view
        .segment_bytes()
        .map(|b| b.expect("segment maps"))
        .map(|b| b.as_ptr() as usize..b.as_ptr() as usize + b.len())
        .collect();

    // A view looks up what stream metadata hides (spec 3.7) once, on its
    // first read of the whole log: not counted here, where what is counted
    // is the replay's cost per record.
    assert!(view.read_all(0).next().is_some());
    for verify_crc in [true, false] {
        let before = ALLOCS.load(Ordering::Relaxed);
        let mut n = 0u64;
        let mut inside = 0u64;
        for rec in view.read_all_with(0, ReadOptions::default().verify_crc(verify_crc)) {
            let rec = rec.unwrap();
            let p = rec.payload().as_ptr() as usize;
            let s = rec.stream().as_ptr() as usize;
            if ranges.iter().any(|r| r.contains(&p) && r.contains(&s)) {
                inside += 1;
            }
            n += 1;
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(n, 2000);
        assert_eq!(inside, n, "every payload and stream name must point into a mapping");
        assert_eq!(
            allocs, 0,
            "replay of {n} records allocated {allocs} times (verify_crc = {verify_crc})"
        );
    }
}
