//! `Log` is a `Clone` handle: clones share one writer; `close` on any clone
//! closes the log for all of them and lets go of the lock (even while a
//! repository or subscription keeps a clone); dropping the last clone closes
//! it too.

use annal::{Error, EventData, ExpectedVersion, Log, Reader};

#[test]
fn clones_share_one_writer_and_the_last_drop_closes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let other = log.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    log.append(&format!("s-{t}"), ExpectedVersion::Any, &[EventData::new("E", b"x")])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(other.next_position(), 100);
    drop(log);
    // One clone left: the log is still open, and still locked.
    assert!(matches!(Log::open(dir.path()), Err(Error::Locked { .. })));
    other
        .append("s-0", ExpectedVersion::Exact(24), &[EventData::new("E", b"y")])
        .unwrap();
    drop(other);
    // The last clone closed it cleanly.
    let reopened = Log::open(dir.path()).unwrap();
    assert!(reopened.recovery().truncated.is_none(), "{:?}", reopened.recovery());
    assert_eq!(reopened.next_position(), 101);
}

#[test]
fn close_on_one_clone_closes_the_log_for_all_and_frees_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let kept = log.clone();
    let sub = log.subscribe_all(0);
    log.append("a-1", ExpectedVersion::Any, &[EventData::new("E", b"x")])
        .unwrap();
    log.close().unwrap();
    let err = kept
        .append("a-1", ExpectedVersion::Any, &[EventData::new("E", b"y")])
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
    // The clone and the subscription do not keep the lock.
    let again = Log::open(dir.path()).unwrap();
    again
        .append("a-1", ExpectedVersion::Exact(0), &[EventData::new("E", b"z")])
        .unwrap();
    drop((kept, sub));
    again.close().unwrap();
    assert_eq!(Reader::open(dir.path()).unwrap().view().unwrap().next_position(), 2);
}
