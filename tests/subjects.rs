//! Events that name a subject (spec 3.8, 22): sealed on disk, read back
//! through `LogView::unseal`, erased by `Log::erase_subject`.

use annal::{Direction, EventData, ExpectedVersion, Log, Options, Reader};

fn ev(t: &str, payload: &str, subject: Option<&str>) -> EventData<'static> {
    let e =
        EventData::new(t.to_owned(), payload.as_bytes().to_vec()).with_metadata(format!("meta:{payload}").into_bytes());
    match subject {
        Some(s) => e.with_subject(s.to_owned()),
        None => e,
    }
}

/// Every byte of every file under `dir`, searched for `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn sealed_events_round_trip_and_read_as_erased_after_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    log.append(
        "customer-1",
        ExpectedVersion::NoStream,
        &[
            ev("Registered", "ann@example.com", Some("ann")),
            ev("Noted", "public note", None),
            ev("Moved", "12 Secret Street", Some("ann")),
        ],
    )
    .unwrap();
    log.append(
        "customer-2",
        ExpectedVersion::NoStream,
        &[ev("Registered", "bob@example.com", Some("bob"))],
    )
    .unwrap();
    log.sync().unwrap();
    // The plaintext is nowhere on disk.
    for secret in ["ann@example.com", "12 Secret Street", "bob@example.com", "meta:ann@"] {
        assert_eq!(
            files_holding(dir.path(), secret.as_bytes()),
            Vec::<std::path::PathBuf>::new(),
            "{secret}"
        );
    }
    let view = log.view().unwrap();
    let recs: Vec<_> = view.read_all(0).map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 4);
    assert!(recs[0].is_sealed() && !recs[1].is_sealed() && recs[2].is_sealed());
    assert_eq!(recs[0].subject_key(), recs[2].subject_key());
    assert_ne!(recs[0].subject_key(), recs[3].subject_key());
    let opened: Vec<_> = recs.iter().map(|r| view.unseal(*r).unwrap()).collect();
    assert_eq!(opened[0].payload(), b"ann@example.com");
    assert_eq!(opened[0].metadata(), b"meta:ann@example.com");
    assert_eq!(opened[1].payload(), b"public note");
    assert_eq!(opened[2].record().payload(), b"12 Secret Street");
    assert_eq!(opened[3].payload(), b"bob@example.com");

    // A reader that loaded the keys before the erasure.
    let mut early = Reader::open(dir.path()).unwrap();
    let ev0 = early.view().unwrap();
    let first = ev0.read_all(0).next().unwrap().unwrap();
    assert_eq!(ev0.unseal(first).unwrap().payload(), b"ann@example.com");

    let erased = log.erase_subject("ann").unwrap();
    // Its next view sees the erasure (the key file changed).
    let ev1 = early.view().unwrap();
    let first = ev1.read_all(0).next().unwrap().unwrap();
    assert!(ev1.unseal(first).unwrap().is_erased());
    assert_eq!(erased, recs[0].subject_key());
    assert_eq!(log.erase_subject("ann").unwrap(), None, "erased already");
    // The same view, and a new one, and a reader in "another process".
    let view2 = log.view().unwrap();
    let mut reader = Reader::open(dir.path()).unwrap();
    let rview = reader.view().unwrap();
    for v in [&view, &view2, &rview] {
        let got: Vec<_> = v.read_all(0).map(|r| v.unseal(r.unwrap()).unwrap()).collect();
        assert!(got[0].is_erased() && got[0].payload().is_empty() && got[0].metadata().is_empty());
        assert_eq!(got[0].record().event_type(), "Registered");
        assert_eq!(got[0].record().stream(), "customer-1");
        assert!(!got[1].is_erased());
        assert_eq!(got[1].payload(), b"public note");
        assert!(got[2].is_erased());
        assert_eq!(got[3].payload(), b"bob@example.com");
    }
    // Stream reads see the same.
    let s: Vec<_> = view2
        .read_stream("customer-1", 0, Direction::Forward, 10)
        .map(|r| view2.unseal(r.unwrap()).unwrap().is_erased())
        .collect();
    assert_eq!(s, [true, false, true]);
    // The subject named again gets a new key; old events stay erased.
    log.append(
        "customer-1",
        ExpectedVersion::Any,
        &[ev("Returned", "ann again", Some("ann"))],
    )
    .unwrap();
    let v = log.view().unwrap();
    let last = v.read_all(4).next().unwrap().unwrap();
    assert_ne!(last.subject_key(), erased);
    assert_eq!(v.unseal(last).unwrap().payload(), b"ann again");
    assert!(v.unseal(v.read_all(0).next().unwrap().unwrap()).unwrap().is_erased());
    log.close().unwrap();

    // Reopened: the same.
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let v = log.view().unwrap();
    let got: Vec<_> = v.read_all(0).map(|r| v.unseal(r.unwrap()).unwrap()).collect();
    let erased: Vec<bool> = got.iter().map(|u| u.is_erased()).collect();
    assert_eq!(erased, [true, false, true, false, false]);
    assert_eq!(got[4].payload(), b"ann again");
    drop(log);
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{report:?}");
}
