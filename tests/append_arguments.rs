//! Arguments an append refuses are error variants a caller can match, each
//! carrying the numbers that decided it, and nothing is written.

use annal::{Error, EventData, ExpectedVersion, Log, Options};

fn log(opts: Options) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), opts).expect("open");
    (dir, log)
}

/// The log holds no event after the refused appends.
fn assert_empty(log: &Log) {
    let view = log.view().expect("view");
    assert_eq!(view.read_all(0).count(), 0, "a refused append wrote something");
}

#[test]
fn an_empty_batch_is_its_own_variant() {
    let (_d, log) = log(Options::default());
    let e = log.append("s", ExpectedVersion::Any, &[]).expect_err("empty batch");
    assert!(matches!(e, Error::EmptyBatch), "{e:?}");
    assert_eq!(e.to_string(), "invalid argument: an append needs at least one event");
    assert_empty(&log);
}

#[test]
fn stream_names_and_event_types_outside_1_to_65535_bytes_say_their_length() {
    let (_d, log) = log(Options::default());
    let ev = [EventData::new("T", b"x".as_slice())];
    let e = log.append("", ExpectedVersion::Any, &ev).expect_err("empty name");
    assert!(matches!(e, Error::StreamNameLength { len: 0 }), "{e:?}");
    let long = "s".repeat(65_536);
    let e = log.append(&long, ExpectedVersion::Any, &ev).expect_err("long name");
    assert!(matches!(e, Error::StreamNameLength { len: 65_536 }), "{e:?}");

    let evs = [
        EventData::new("T", b"x".as_slice()),
        EventData::new("", b"x".as_slice()),
    ];
    let e = log.append("s", ExpectedVersion::Any, &evs).expect_err("empty type");
    assert!(matches!(e, Error::EventTypeLength { index: 1, len: 0 }), "{e:?}");
    assert_empty(&log);
}

#[test]
fn an_event_over_max_event_bytes_names_its_index_size_and_limit() {
    let (_d, log) = log(Options::default().max_event_bytes(100));
    let evs = [
        EventData::new("T", vec![0u8; 10]),
        EventData::new("T", vec![0u8; 90]).with_metadata(vec![1u8; 11]),
    ];
    let e = log.append("s", ExpectedVersion::Any, &evs).expect_err("too large");
    assert!(
        matches!(
            e,
            Error::EventTooLarge {
                index: 1,
                size: 101,
                limit: 100
            }
        ),
        "{e:?}"
    );
    // At the limit it is accepted.
    log.append("s", ExpectedVersion::Any, &[EventData::new("T", vec![0u8; 100])])
        .expect("an event of exactly max_event_bytes");
}

#[test]
fn a_batch_over_max_batch_bytes_says_how_large_it_encodes() {
    let (_d, log) = log(Options::default().max_batch_bytes(4096));
    let evs: Vec<EventData<'_>> = (0..40).map(|_| EventData::new("T", vec![0u8; 200])).collect();
    let e = log
        .append("s", ExpectedVersion::Any, &evs)
        .expect_err("batch too large");
    match e {
        Error::BatchTooLarge { size, limit } => {
            assert_eq!(limit, 4096);
            assert!(size > 40 * 200, "size {size} must count every event");
        }
        e => panic!("expected BatchTooLarge, got {e:?}"),
    }
    assert_empty(&log);
}
