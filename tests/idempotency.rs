//! Idempotent appends: a retry (same ids) returns the original result and
//! writes nothing; a partial overlap is an error.

use annal::{Error, EventData, ExpectedVersion, Log, Options, Uuid};

fn ev(id: u128) -> EventData<'static> {
    EventData::new("E", id.to_le_bytes().to_vec()).with_id(Uuid::from_u128(id))
}

fn count(log: &Log) -> u64 {
    log.view().unwrap().read_all(0).count() as u64
}

#[test]
fn exact_retry_returns_the_original_result_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.append("s-1", ExpectedVersion::NoStream, &[ev(1)]).unwrap();
    let first = log.append("s-1", ExpectedVersion::Exact(0), &[ev(2), ev(3)]).unwrap();
    log.append("other-1", ExpectedVersion::Any, &[ev(9)]).unwrap();
    let before = count(&log);
    let retry = log.append("s-1", ExpectedVersion::Exact(0), &[ev(2), ev(3)]).unwrap();
    assert_eq!(retry, first);
    assert_eq!(count(&log), before, "a retry writes nothing");
    // A retry of only the first event of that batch is a retry too.
    let part = log.append("s-1", ExpectedVersion::Exact(0), &[ev(2)]).unwrap();
    assert_eq!(
        (part.first_position, part.last_position, part.stream_version),
        (first.first_position, first.first_position, 1)
    );
    // NoStream retry of the very first append.
    let again = log.append("s-1", ExpectedVersion::NoStream, &[ev(1)]).unwrap();
    assert_eq!((again.first_position, again.stream_version), (0, 0));
    assert_eq!(count(&log), before);
}

#[test]
fn partial_overlap_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.append("s-1", ExpectedVersion::NoStream, &[ev(1), ev(2)]).unwrap();
    let before = count(&log);
    // Versions 0..1 hold ids 1, 2: a batch 1, 5 matches only in part.
    let e = log
        .append("s-1", ExpectedVersion::NoStream, &[ev(1), ev(5)])
        .unwrap_err();
    assert!(matches!(e, Error::IdempotencyConflict { .. }), "{e}");
    // A batch longer than what is stored overlaps in part too.
    let e = log
        .append("s-1", ExpectedVersion::NoStream, &[ev(1), ev(2), ev(3)])
        .unwrap_err();
    assert!(matches!(e, Error::IdempotencyConflict { .. }), "{e}");
    // No id matches: an ordinary conflict.
    let e = log.append("s-1", ExpectedVersion::Exact(0), &[ev(7)]).unwrap_err();
    assert!(matches!(e, Error::WrongExpectedVersion { actual: Some(1), .. }), "{e}");
    let e = log.append("s-1", ExpectedVersion::Any, &[ev(2), ev(8)]).unwrap_err();
    assert!(matches!(e, Error::IdempotencyConflict { .. }), "{e}");
    assert_eq!(count(&log), before);
}

#[test]
fn any_retries_are_detected_within_the_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().idempotency_window(3)).unwrap();
    let r = log.append("s-1", ExpectedVersion::Any, &[ev(1)]).unwrap();
    assert_eq!(log.append("s-1", ExpectedVersion::Any, &[ev(1)]).unwrap(), r);
    // The same id on another stream is another event.
    log.append("t-1", ExpectedVersion::Any, &[ev(1)]).unwrap();
    assert_eq!(count(&log), 2);
    for i in 10..14 {
        log.append("u-1", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    // Id 1 of s-1 has left the 3-event window: with Any it is appended again.
    log.append("s-1", ExpectedVersion::Any, &[ev(1)]).unwrap();
    assert_eq!(log.stream_version("s-1").unwrap(), Some(1));
    // With Exact the retry is still recognised, by reading the log.
    let e = log.append("s-1", ExpectedVersion::Exact(0), &[ev(1)]).unwrap();
    assert_eq!(e.stream_version, 1);
}

#[test]
fn exact_retries_survive_reopen_and_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().segment_size(2048);
    let mut results = Vec::new();
    {
        let log = Log::open_with(dir.path(), opts()).unwrap();
        for i in 0..60u128 {
            let expected = if i == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(i as u64 - 1)
            };
            results.push(log.append("s-1", expected, &[ev(100 + i)]).unwrap());
            log.append(&format!("noise-{i}"), ExpectedVersion::Any, &[ev(1000 + i)])
                .unwrap();
        }
    }
    let log = Log::open_with(dir.path(), opts()).unwrap();
    assert!(log.view().unwrap().segment_count() > 3);
    let before = count(&log);
    for (i, want) in results.iter().enumerate() {
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i as u64 - 1)
        };
        let got = log.append("s-1", expected, &[ev(100 + i as u128)]).unwrap();
        assert_eq!(&got, want, "retry of version {i} after reopen");
    }
    assert_eq!(count(&log), before);
}
