//! The owning forms of a view's reads (`LogView::into_read_*`) yield exactly
//! what the borrowing ones yield, in order, across their internal chunks, and
//! outlive the borrow (`'static + Send`).

use annal::{Direction, EventData, ExpectedVersion, IntoRecords, Log, LogView, OwnedRecord, StreamPosition};

fn log_with(dir: &std::path::Path, n: u64) -> Log {
    let log = Log::open(dir).unwrap();
    for i in 0..n {
        let ty = if i % 3 == 0 { "Paid" } else { "Placed" };
        let stream = format!("order-{}", i % 4);
        log.append(
            &stream,
            ExpectedVersion::Any,
            &[EventData::new(ty, i.to_le_bytes().to_vec())],
        )
        .unwrap();
    }
    log
}

fn collect(it: IntoRecords) -> Vec<OwnedRecord> {
    it.map(|r| r.unwrap()).collect()
}

fn borrowed<'v>(view: &'v LogView, f: impl FnOnce(&'v LogView) -> Vec<OwnedRecord>) -> Vec<OwnedRecord> {
    f(view)
}

#[test]
fn owning_reads_yield_what_borrowing_reads_yield() {
    let dir = tempfile::tempdir().unwrap();
    // More than one chunk (1,024) of every query.
    let log = log_with(dir.path(), 9000);
    let view = log.view().unwrap();
    let all = borrowed(&view, |v| v.read_all(0).map(|r| r.unwrap().into()).collect());
    assert_eq!(all.len(), 9000);
    assert_eq!(collect(view.clone().into_read_all(0)), all);
    assert_eq!(collect(view.clone().into_read_all(1500)), all[1500..]);
    assert_eq!(collect(view.clone().into_read_all(7000)), all[7000..]);
    let cat: Vec<OwnedRecord> = view.read_category("order", 7).map(|r| r.unwrap().into()).collect();
    assert_eq!(collect(view.clone().into_read_category("order", 7)), cat);
    let paid: Vec<OwnedRecord> = view.read_event_type("Paid", 0).map(|r| r.unwrap().into()).collect();
    assert_eq!(paid.len(), 3000);
    assert_eq!(collect(view.clone().into_read_event_type("Paid", 0)), paid);
    for (from, dir, max) in [
        (StreamPosition::Start, Direction::Forward, u64::MAX),
        (StreamPosition::At(100), Direction::Forward, 1300),
        (StreamPosition::End, Direction::Backward, u64::MAX),
        (StreamPosition::At(2100), Direction::Backward, 1025),
        (StreamPosition::End, Direction::Backward, 1024),
        (StreamPosition::End, Direction::Forward, 10),
    ] {
        let want: Vec<OwnedRecord> = view
            .read_stream("order-1", from, dir, max)
            .map(|r| r.unwrap().into())
            .collect();
        let got = collect(view.clone().into_read_stream("order-1", from, dir, max));
        assert_eq!(got, want, "{from:?} {dir:?} {max}");
    }
}

#[test]
fn an_owning_read_outlives_its_view_and_moves_to_another_thread() {
    fn send_static<T: Send + 'static>(t: T) -> T {
        t
    }
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 10);
    let it = send_static(
        log.view()
            .unwrap()
            .into_read_stream("order-2", StreamPosition::End, Direction::Backward, 2),
    );
    let versions: Vec<u64> = std::thread::spawn(move || it.map(|r| r.unwrap().stream_version).collect())
        .join()
        .unwrap();
    assert_eq!(versions, [1, 0]);
}
