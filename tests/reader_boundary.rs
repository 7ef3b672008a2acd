//! Readers apply the durable boundary of spec 5.1 as recovery and `check` do
//! (issue 13, defect 1): damage inside a durable frame is an error naming the
//! segment and the offset, never a quiet end of the log, whatever the head
//! file says; and a reader of a log that was not cleanly closed nor recovered
//! says so (`LogView::unrecovered`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use annal::{Direction, Durability, Error, EventData, ExpectedVersion, Log, Options, Reader};
use common::{crash_image, frames, fresh_copy, read_all, segments, u64_at};

const HEAD: &str = "annal.head";
const SLOT: usize = 64;

fn fsync_opts() -> Options {
    Options::default().format_version(2).durability(Durability::Fsync)
}

/// A cleanly closed log: 30 batches of 3 events, each appended with Fsync,
/// over three streams; the stream `late` is written only after the middle.
fn build() -> tempfile::TempDir {
    let dir = common::scratch();
    let log = Log::open_with(dir.path(), fsync_opts()).expect("open");
    for i in 0..30u64 {
        let stream = if i >= 20 {
            "late".to_owned()
        } else {
            format!("s-{}", i % 3)
        };
        let events: Vec<_> = (0..3)
            .map(|j| EventData::new("Happened", common::payload(i * 10 + j, 40 + (i as usize * 7) % 50)))
            .collect();
        log.append(&stream, ExpectedVersion::Any, &events).expect("append");
    }
    log.close().expect("close");
    dir
}

/// The sequence number of head slot `i`.
fn sequence(head: &[u8], i: usize) -> u64 {
    u64_at(head, i * SLOT + 16)
}

/// Break the CRC of head slot `i` (flip a byte of its sequence field).
fn break_slot(dir: &Path, i: usize) {
    common::edit(&dir.join(HEAD), |b| b[i * SLOT + 17] ^= 0x40);
}

/// The newer of the two slots.
fn newer_slot(dir: &Path) -> usize {
    let head = fs::read(dir.join(HEAD)).expect("read head");
    if sequence(&head, 0) > sequence(&head, 1) { 0 } else { 1 }
}

/// Flip one payload byte of the batch in the middle of the only segment;
/// returns the segment's path and the frame's byte range.
fn damage_middle(dir: &Path) -> (PathBuf, std::ops::Range<u64>) {
    let seg = segments(dir).pop().expect("a segment");
    let bytes = fs::read(&seg).expect("read segment");
    let fr = frames(&bytes);
    let mid = fr[fr.len() / 2];
    common::edit(&seg, |b| b[(mid.offset + mid.len - 12) as usize] ^= 0x01);
    (seg, mid.offset..mid.offset + mid.len)
}

/// `Reader::view` (or a read from the view) fails with `Error::Corrupt`
/// naming `seg` at an offset in `range`, and the stream written after the
/// damage is not returned as empty.
fn expect_reader_error(dir: &Path, seg: &Path, range: std::ops::Range<u64>, label: &str) {
    // The walk of the active segment (spec 7, step 4) is what applies the
    // boundary: without the segment's index checkpoints, it starts at 128.
    // (With them, a batch they cover is validated when read, as a sealed
    // segment's: tests/index_checkpoints.rs.)
    common::remove_checkpoints(dir);
    let reader = Reader::open(dir).expect("reader");
    let err = match reader.view() {
        Err(e) => e,
        Ok(view) => match read_all(&view, 0) {
            Err(e) => e,
            Ok(recs) => panic!("{label}: the reader returned {} records and no error", recs.len()),
        },
    };
    match &err {
        Error::Corrupt { path, offset, detail } => {
            assert_eq!(path, seg, "{label}: {err}");
            assert!(
                range.contains(offset),
                "{label}: offset {offset} not in {range:?}: {detail}"
            );
            assert!(
                detail.contains("below the durable boundary"),
                "{label}: the message states X and B: {detail}"
            );
        }
        e => panic!("{label}: expected Error::Corrupt, got {e}"),
    }
    // The stream written after the damage: an error, not "no events".
    let late: annal::Result<Vec<u64>> = reader.view().and_then(|v| {
        v.read_stream("late", 0, Direction::Forward, u64::MAX)
            .map(|r| r.map(|r| r.position()))
            .collect()
    });
    assert!(late.is_err(), "{label}: read_stream(late) returned {late:?}");
}

#[test]
fn damage_in_a_durable_frame_with_both_head_slots_invalid_is_an_error() {
    let log = build();
    let dir = fresh_copy(log.path());
    break_slot(dir.path(), 0);
    break_slot(dir.path(), 1);
    let (seg, range) = damage_middle(dir.path());
    expect_reader_error(dir.path(), &seg, range, "both slots invalid");
    // Recovery agrees: the same damage, nothing removed (recovery walks the
    // batches no index checkpoint covers: without them, all of them).
    common::remove_checkpoints(dir.path());
    let before = common::snapshot(dir.path());
    assert!(matches!(
        Log::open_with(dir.path(), fsync_opts()),
        Err(Error::Corrupt { .. })
    ));
    assert!(common::snapshot(dir.path()) == before);
}

#[test]
fn damage_in_a_durable_frame_with_only_the_older_head_slot_valid_is_an_error() {
    let log = build();
    let dir = fresh_copy(log.path());
    let newer = newer_slot(dir.path());
    break_slot(dir.path(), newer);
    let (seg, range) = damage_middle(dir.path());
    expect_reader_error(dir.path(), &seg, range, "only the older slot valid");
}

#[test]
fn damage_past_a_lagging_head_but_below_the_boundary_is_an_error() {
    // The only valid slot (the older) declares visible and durable only the
    // first third of the batches (a crash left the head behind); a batch of
    // the last third is damaged. The reader does not deliver past the head,
    // but the damage lies below the durable boundary that the later frames
    // carry: an error, not a quiet (if signalled) end.
    let log = build();
    let dir = fresh_copy(log.path());
    let seg = segments(dir.path()).pop().expect("a segment");
    let bytes = fs::read(&seg).expect("read segment");
    let fr = frames(&bytes);
    let lag = fr[fr.len() / 3];
    let newer = newer_slot(dir.path());
    let older = 1 - newer;
    common::edit(&dir.path().join(HEAD), |h| {
        let at = older * SLOT;
        h[at + 32..at + 40].copy_from_slice(&lag.offset.to_le_bytes());
        h[at + 40..at + 48].copy_from_slice(&lag.offset.to_le_bytes());
        h[at + 48..at + 56].copy_from_slice(&lag.first_position.to_le_bytes());
        let crc = crc32fast::hash(&h[at + 8..at + SLOT]);
        h[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    });
    break_slot(dir.path(), newer);
    // Undamaged, the reader holds back and says so.
    let view = Reader::open(dir.path()).expect("reader").view().expect("view");
    assert_eq!(view.next_position(), lag.first_position);
    assert_eq!(view.unrecovered().map(|u| u.position), Some(lag.first_position));
    let victim = fr[fr.len() * 2 / 3];
    common::edit(&seg, |b| b[(victim.offset + victim.len - 12) as usize] ^= 0x01);
    expect_reader_error(
        dir.path(),
        &seg,
        victim.offset..victim.offset + victim.len,
        "lagging head",
    );
}

#[test]
fn damage_found_only_by_resynchronisation_is_an_error() {
    // No head at all, and the damage is in the frame header itself (its
    // CRC): the walk stops there; only the frames past it, found by the
    // resynchronisation scan, say that it was durable.
    let log = build();
    let dir = fresh_copy(log.path());
    fs::remove_file(dir.path().join(HEAD)).expect("remove head");
    let seg = segments(dir.path()).pop().expect("a segment");
    let bytes = fs::read(&seg).expect("read segment");
    let fr = frames(&bytes);
    let mid = fr[fr.len() / 2];
    common::edit(&seg, |b| b[mid.offset as usize + 20] ^= 0x01);
    expect_reader_error(
        dir.path(),
        &seg,
        mid.offset..mid.offset + mid.len,
        "no head, header damaged",
    );
}

#[test]
fn a_torn_tail_past_the_boundary_is_not_an_error_but_is_signalled() {
    // The last batch torn (cut in the middle), no valid head slot: what lies
    // past the last complete batch is past every frame's durable_end, so the
    // reader delivers the complete batches, with no error, and says it
    // cannot vouch for the rest.
    let log = build();
    let dir = fresh_copy(log.path());
    break_slot(dir.path(), 0);
    break_slot(dir.path(), 1);
    let seg = segments(dir.path()).pop().expect("a segment");
    let bytes = fs::read(&seg).expect("read segment");
    let last = *frames(&bytes).last().expect("frames");
    let f = fs::OpenOptions::new().write(true).open(&seg).expect("open");
    f.set_len(last.offset + last.len / 2).expect("cut");
    drop(f);
    let view = Reader::open(dir.path()).expect("reader").view().expect("view");
    let recs = read_all(&view, 0).expect("read");
    assert_eq!(recs.len() as u64, last.first_position);
    let u = view.unrecovered().expect("the log is not recovered");
    assert_eq!(u.position, last.first_position);
    assert_eq!(u.offset, last.offset);
    assert_eq!(u.segment, seg);
    let msg = u.to_string();
    assert!(
        msg.contains(&format!("from position {} on", last.first_position)) && msg.contains("annal check --repair"),
        "{msg}"
    );
}

#[test]
fn the_signal_is_absent_for_a_closed_log_and_while_a_writer_holds_it() {
    let log = build();
    let view = Reader::open(log.path()).expect("reader").view().expect("view");
    assert_eq!(read_all(&view, 0).expect("read").len(), 90);
    assert_eq!(view.unrecovered(), None, "a cleanly closed log");

    // A killed writer's image whose head lags (its slots describe an earlier
    // end): the reader holds back, and says so; a writer then recovers it.
    let w = Log::open_with(
        log.path(),
        Options::default().format_version(2).durability(Durability::Buffered),
    )
    .expect("open");
    let writer_view = w.view().expect("writer view");
    assert_eq!(writer_view.unrecovered(), None, "the writer's own view");
    w.append("more", ExpectedVersion::Any, &[EventData::new("E", b"x".as_slice())])
        .expect("append");
    // While the writer holds the lock: in progress is normal.
    let v = Reader::open(log.path()).expect("reader").view().expect("view");
    assert_eq!(v.unrecovered(), None, "a writer holds the log");
    let img = crash_image(log.path());
    drop(w);
    // The image's head names the whole file; make it lag by one batch: both
    // slots state an earlier end, as after a power cut before a slot write.
    let seg = segments(img.path()).pop().expect("segment");
    let bytes = fs::read(&seg).expect("read");
    let last = *frames(&bytes).last().expect("frames");
    let head = fs::read(img.path().join(HEAD)).expect("head");
    let newer = if sequence(&head, 0) > sequence(&head, 1) { 0 } else { 1 };
    let older = 1 - newer;
    let older_visible = u64_at(&head, older * SLOT + 40);
    break_slot(img.path(), newer);
    let view = Reader::open(img.path()).expect("reader").view().expect("view");
    let n = read_all(&view, 0).expect("read").len() as u64;
    assert!(older_visible < bytes.len() as u64, "the older slot lags");
    assert!(
        n <= last.first_position,
        "the reader holds back the batch the head does not declare"
    );
    let u = view.unrecovered().expect("the image is not recovered");
    assert_eq!(u.position, n);
    assert_eq!(u.segment, seg);
    // A writer recovers it: the signal is gone, every event is there.
    Log::open_with(img.path(), Options::default().format_version(2))
        .expect("recover")
        .close()
        .expect("close");
    let view = Reader::open(img.path()).expect("reader").view().expect("view");
    assert_eq!(view.unrecovered(), None);
    assert_eq!(read_all(&view, 0).expect("read").len(), 91);
}
