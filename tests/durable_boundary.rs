//! The durable boundary decides between "torn tail, cut it" and "corruption,
//! report it and change nothing" (spec 5.1, 6 step 4, 11.7, 12).

mod common;

use std::fs;
use std::path::Path;

use annal::{Durability, Error, EventData, ExpectedVersion, Log, Options, Recovery};
use common::{FrameAt, Rec, Rng, crash_image, fresh_copy, read_all, read_until_err, segments, snapshot};

fn opts() -> Options {
    Options::default()
        .format_version(2)
        .segment_size(2048)
        .durability(Durability::Buffered)
}

fn ev(ty: &str, tag: u64, meta: usize, pay: usize) -> EventData<'static> {
    EventData::new(ty.to_owned(), common::payload(tag, pay)).with_metadata(common::payload(tag + 7, meta))
}

/// Append one batch of `n` events to `stream`.
fn batch(log: &Log, stream: &str, tag: u64, n: u64) {
    let events: Vec<_> = (0..n)
        .map(|i| {
            ev(
                "Happened",
                tag * 100 + i,
                (tag * 3 + i) as usize % 40,
                20 + (tag * 37 + i * 11) as usize % 90,
            )
        })
        .collect();
    log.append(stream, ExpectedVersion::Any, &events).expect("append");
}

/// The frames of the last segment of `dir`.
fn active_frames(dir: &Path) -> (String, Vec<FrameAt>) {
    let segs = segments(dir);
    let last = segs.last().expect("a segment");
    let bytes = fs::read(last).expect("read segment");
    (common::file_name(last), common::frames(&bytes))
}

/// Open `dir` and expect `Error::Corrupt` in `file` at an offset in `range`,
/// with every file (segments and head) byte-for-byte unchanged.
fn expect_corrupt(dir: &Path, file: &str, range: std::ops::Range<u64>, label: &str) {
    let before = snapshot(dir);
    match Log::open_with(dir, opts()) {
        Err(Error::Corrupt { path, offset, detail }) => {
            assert_eq!(path, dir.join(file), "{label}: {detail}");
            assert!(
                range.contains(&offset),
                "{label}: offset {offset} not in {range:?}: {detail}"
            );
        }
        Err(e) => panic!("{label}: expected Error::Corrupt, got {e}"),
        Ok(log) => panic!(
            "{label}: damage below the durable boundary was accepted: {:?}",
            log.recovery()
        ),
    }
    assert!(snapshot(dir) == before, "{label}: a failed open modified the log");
}

/// With the index checkpoint of the active segment in place, the damaged
/// batch is not read on open: the writer opens, removes nothing, and a
/// replay reports `Error::Corrupt` in `file` at an offset in `range`.
fn expect_opens_then_reads_report(dir: &Path, file: &str, range: std::ops::Range<u64>, label: &str) {
    let before = snapshot(dir);
    let log = Log::open_with(dir, opts()).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    assert!(log.recovery().truncated.is_none(), "{label}");
    let view = log.view().expect("view");
    match read_until_err(&view, 0).1 {
        Some(Error::Corrupt { path, offset, detail }) => {
            assert_eq!(path, dir.join(file), "{label}: {detail}");
            assert!(
                range.contains(&offset),
                "{label}: offset {offset} not in {range:?}: {detail}"
            );
        }
        other => panic!("{label}: expected Error::Corrupt from the replay, got {other:?}"),
    }
    drop(view);
    log.close().expect("close");
    let after = snapshot(dir);
    assert!(after.get(file) == before.get(file), "{label}: the segment was modified");
}

/// A reader reports the damage too, after returning only undamaged records.
fn expect_reader_reports(dir: &Path, original: &[Rec], label: &str) {
    let reader = annal::Reader::open(dir).unwrap_or_else(|e| panic!("{label}: reader open: {e}"));
    let (got, err) = match reader.view() {
        Ok(view) => read_until_err(&view, 0),
        Err(e) => (Vec::new(), Some(e)),
    };
    assert!(
        err.is_some(),
        "{label}: the reader returned {} records and no error",
        got.len()
    );
    assert!(got.len() <= original.len(), "{label}");
    assert_eq!(got, original[..got.len()], "{label}: records returned before the error");
}

/// (a) A cleanly closed log: its boundary is its end, so a flipped bit in the
/// first batch of the active segment is corruption, never a cut. Recovery
/// walks the segment only where no index checkpoint covers it (spec 17.5):
/// with the checkpoints removed it walks it all and refuses to open; with
/// them, it opens without reading the batch, changes nothing, and every read
/// of the batch reports the damage.
#[test]
fn bitflip_in_first_active_batch_of_a_cleanly_closed_log_is_corruption() {
    let src = common::scratch();
    let log = Log::open_with(src.path(), opts()).expect("create");
    let mut tag = 0;
    while segments(src.path()).len() < 2 {
        tag += 1;
        batch(&log, &format!("s-{}", tag % 3), tag, 2);
    }
    for _ in 0..2 {
        tag += 1;
        batch(&log, "later", tag, 2);
    }
    log.close().expect("close");
    let original = read_all(
        &annal::Reader::open(src.path()).expect("reader").view().expect("view"),
        0,
    )
    .expect("read");
    let (active, frames) = active_frames(src.path());
    assert!(frames.len() >= 2, "{frames:?}");
    let first = frames[0];
    let range = first.offset..first.offset + first.len;
    let mut cases = 0;
    for off in range.clone() {
        let copy = fresh_copy(src.path());
        let label = format!("clean log, bit {} of byte {off} of {active}", off % 8);
        common::edit(&copy.path().join(&active), |b| b[off as usize] ^= 1 << (off % 8));
        if off % 16 == 0 {
            expect_opens_then_reads_report(copy.path(), &active, range.clone(), &label);
        }
        assert_eq!(common::remove_checkpoints(copy.path()), 1, "{label}");
        expect_corrupt(copy.path(), &active, range.clone(), &label);
        expect_reader_reports(copy.path(), &original, &label);
        cases += 1;
    }
    println!("clean log: {cases} cases");
}

/// (a) A crash image taken after a sync that covers the first batches: damage
/// in them is below the boundary, whether the boundary comes from the head
/// file or (head file removed) from a later frame header.
#[test]
fn bitflip_in_synced_batches_of_a_crash_image_is_corruption() {
    let src = common::scratch();
    let log = Log::open_with(src.path(), opts()).expect("create");
    batch(&log, "a", 1, 2);
    batch(&log, "b", 2, 1);
    log.sync().expect("sync");
    batch(&log, "a", 3, 2);
    let image = crash_image(src.path());
    let original = read_all(&log.view().expect("view"), 0).expect("read");
    drop(log);

    let (active, frames) = active_frames(image.path());
    assert_eq!(frames.len(), 3);
    let mut cases = 0;
    for f in &frames[..2] {
        let range = f.offset..f.offset + f.len;
        for off in range.clone() {
            for drop_head in [false, true] {
                let copy = fresh_copy(image.path());
                if drop_head {
                    fs::remove_file(copy.path().join(annal::HEAD_FILE)).expect("remove head");
                }
                let label = format!("crash image (head removed: {drop_head}), bit {} of byte {off}", off % 8);
                common::edit(&copy.path().join(&active), |b| b[off as usize] ^= 1 << (off % 8));
                expect_corrupt(copy.path(), &active, range.clone(), &label);
                if !drop_head {
                    // The head says this is durable: a reader reports it too.
                    expect_reader_reports(copy.path(), &original, &label);
                }
                cases += 1;
            }
        }
    }
    println!("crash image: {cases} cases");
}

struct Holed {
    _src: tempfile::TempDir,
    image: tempfile::TempDir,
    active: String,
    frames: Vec<FrameAt>,
    /// Records of B1..B3.
    durable: Vec<Rec>,
}

/// B1..B3 synced, B4 and B5 written but not synced, crash image.
fn holed() -> Holed {
    let src = common::scratch();
    let log = Log::open_with(src.path(), opts()).expect("create");
    batch(&log, "x", 1, 2);
    batch(&log, "y", 2, 1);
    batch(&log, "x", 3, 3);
    log.sync().expect("sync");
    let durable = read_all(&log.view().expect("view"), 0).expect("read");
    batch(&log, "y", 4, 2);
    batch(&log, "x", 5, 2);
    let image = crash_image(src.path());
    drop(log);
    let (active, frames) = active_frames(image.path());
    assert_eq!(frames.len(), 5, "one segment, five batches: {frames:?}");
    Holed {
        _src: src,
        image,
        active,
        frames,
        durable,
    }
}

/// (b) A hole past the boundary followed by a valid batch: the log is cut at
/// the hole; the valid-looking batch after it goes too.
#[test]
fn hole_past_the_boundary_followed_by_a_valid_batch_is_cut() {
    let h = holed();
    let b4 = h.frames[3];
    let (s, e) = (b4.offset as usize, (b4.offset + b4.len) as usize);
    let seed = common::seed("hole");
    let mut rng = Rng::new(seed);
    let garbage = rng.bytes(e - s);
    type Damage<'a> = (&'a str, Box<dyn Fn(&mut Vec<u8>) + 'a>);
    let damages: Vec<Damage<'_>> = vec![
        ("B4 zeroed", Box::new(|b: &mut Vec<u8>| b[s..e].fill(0))),
        (
            "B4 garbled",
            Box::new(|b: &mut Vec<u8>| b[s..e].copy_from_slice(&garbage)),
        ),
        ("B4 header zeroed", Box::new(|b: &mut Vec<u8>| b[s..s + 72].fill(0))),
        ("B4 last byte flipped", Box::new(|b: &mut Vec<u8>| b[e - 1] ^= 0x40)),
        (
            "B4 first record body flipped",
            Box::new(|b: &mut Vec<u8>| b[s + 72 + 80] ^= 1),
        ),
    ];
    for (name, damage) in &damages {
        for drop_head in [false, true] {
            let label = format!("{name} (head removed: {drop_head}, seed {seed})");
            let copy = fresh_copy(h.image.path());
            let path = copy.path().join(&h.active);
            common::edit(&path, |b| damage(b));
            if drop_head {
                fs::remove_file(copy.path().join(annal::HEAD_FILE)).expect("remove head");
            }
            let len = common::file_len(&path);
            // The B5 frame is still there, intact, before the open.
            let bytes = fs::read(&path).expect("read");
            assert_eq!(&bytes[e..e + 4], b"BTCH", "{label}");

            let log = Log::open_with(copy.path(), opts()).unwrap_or_else(|err| panic!("{label}: open: {err}"));
            let t = log
                .recovery()
                .truncated
                .clone()
                .unwrap_or_else(|| panic!("{label}: no truncation reported: {:?}", log.recovery()));
            assert_eq!(t.path, path, "{label}");
            assert_eq!(t.offset, b4.offset, "{label}: {t:?}");
            assert_eq!(t.bytes_removed, len - b4.offset, "{label}: {t:?}");
            assert_eq!(common::file_len(&path), b4.offset, "{label}: B5 is gone from the file");
            let got = read_all(&log.view().expect("view"), 0).unwrap_or_else(|err| panic!("{label}: read: {err}"));
            assert_eq!(got, h.durable, "{label}: B1..B3 remain, nothing else");
            let r = log
                .append(
                    "y",
                    ExpectedVersion::Exact(0),
                    &[EventData::new("Again", b"!".as_slice())],
                )
                .unwrap_or_else(|err| panic!("{label}: append: {err}"));
            assert_eq!(r.first_position, h.durable.len() as u64, "{label}");
            assert_eq!(r.stream_version, 1, "{label}");
            drop(log);
            let log = Log::open_with(copy.path(), opts()).unwrap_or_else(|err| panic!("{label}: reopen: {err}"));
            assert_eq!(log.recovery(), &Recovery::default(), "{label}");
            assert_eq!(
                read_all(&log.view().expect("view"), 0).expect("read").len(),
                h.durable.len() + 1
            );
        }
    }
}

/// The contrast to (b): the same hole in a synced batch (B3, below the
/// boundary) is corruption, even with valid batches after it.
#[test]
fn hole_below_the_boundary_is_corruption() {
    let h = holed();
    for i in 0..3 {
        let f = h.frames[i];
        let (s, e) = (f.offset as usize, (f.offset + f.len) as usize);
        for drop_head in [false, true] {
            let label = format!("B{} zeroed (head removed: {drop_head})", i + 1);
            let copy = fresh_copy(h.image.path());
            common::edit(&copy.path().join(&h.active), |b| b[s..e].fill(0));
            if drop_head {
                fs::remove_file(copy.path().join(annal::HEAD_FILE)).expect("remove head");
            }
            expect_corrupt(copy.path(), &h.active, f.offset..f.offset + f.len, &label);
        }
    }
}
