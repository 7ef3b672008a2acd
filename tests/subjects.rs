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
    let log = Log::open(dir.path()).unwrap();
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
    let early = Reader::open(dir.path()).unwrap();
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
    let reader = Reader::open(dir.path()).unwrap();
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
    let log = Log::open(dir.path()).unwrap();
    let v = log.view().unwrap();
    let got: Vec<_> = v.read_all(0).map(|r| v.unseal(r.unwrap()).unwrap()).collect();
    let erased: Vec<bool> = got.iter().map(|u| u.is_erased()).collect();
    assert_eq!(erased, [true, false, true, false, false]);
    assert_eq!(got[4].payload(), b"ann again");
    drop(log);
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn projections_subscriptions_and_typed_events_get_the_erased_case() {
    use annal::{Projection, RecordRef};
    struct Emails;
    impl Projection for Emails {
        type Model = (Vec<String>, u64);
        fn empty(&self) -> Self::Model {
            (Vec::new(), 0)
        }
        fn apply(&self, m: &mut Self::Model, r: &RecordRef<'_>) {
            m.0.push(String::from_utf8(r.payload().to_vec()).unwrap());
        }
        fn apply_erased(&self, m: &mut Self::Model, r: &RecordRef<'_>) {
            assert!(r.is_erased() && r.payload().is_empty());
            m.1 += 1;
        }
        fn merge(&self, mut a: Self::Model, b: Self::Model) -> Self::Model {
            a.0.extend(b.0);
            a.1 += b.1;
            a
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    for i in 0..60 {
        let who = ["ann", "bob", "cy"][i % 3];
        log.append(
            &format!("c-{who}"),
            ExpectedVersion::Any,
            &[ev("Email", &format!("{who}{i}"), Some(who))],
        )
        .unwrap();
    }
    let view = log.view().unwrap();
    let before = view.rebuild(&Emails).unwrap();
    assert_eq!((before.0.len(), before.1), (60, 0));
    assert_eq!(before.0[0], "ann0");
    log.erase_subject("bob").unwrap();
    for m in [
        view.rebuild(&Emails).unwrap(),
        view.par_rebuild(&Emails).unwrap(),
        view.par_rebuild_chunks(&Emails, 7).unwrap(),
        view.par_rebuild_by_stream(&Emails).unwrap(),
    ] {
        assert_eq!(m.1, 20, "bob's 20 events erased");
        assert_eq!(m.0.len(), 40);
        assert!(m.0.iter().all(|e| !e.starts_with("bob")));
    }
    // Subscriptions deliver owned copies, unsealed.
    let mut sub = log.subscribe_all(0);
    let got: Vec<_> = (0..60).map(|_| sub.next().unwrap().unwrap()).collect();
    assert!(got[0].subject_key.is_some() && !got[0].erased && got[0].payload == b"ann0");
    assert!(got[1].erased && got[1].payload.is_empty() && got[1].metadata.is_empty());
    assert_eq!(got[1].stream, "c-bob");
    // The typed layer: a sealed record is refused until unsealed; an erased
    // one is a value.
    let rec = view.read_all(1).next().unwrap().unwrap();
    assert!(annal::typed::decode::<String>(&rec).is_err());
    let u = view.unseal(rec).unwrap();
    let t = annal::Typed::new(u.record(), &annal::Upcasters::new()).unwrap();
    assert!(t.is_erased());
    assert_eq!(t.decode_unless_erased::<String>().unwrap(), None);
}

#[test]
fn a_master_key_wraps_the_key_file_and_readers_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let master = annal::MasterKey::from_bytes([9; 32]);
    let log = Log::open_with(dir.path(), Options::default().master_key(master.clone())).unwrap();
    log.append(
        "c-1",
        ExpectedVersion::Any,
        &[ev("Email", "ann@example.com", Some("ann"))],
    )
    .unwrap();
    log.close().unwrap();
    // The writer needs the key, and refuses another one or none.
    let e = Log::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("annal.keys"), "{e}");
    let e = Log::open_with(
        dir.path(),
        Options::default().master_key(annal::MasterKey::from_bytes([8; 32])),
    )
    .unwrap_err();
    assert!(e.to_string().contains("annal.keys"), "{e}");
    // A reader without it: an error naming the key file, never "erased".
    let r = Reader::open(dir.path()).unwrap();
    let v = r.view().unwrap();
    let rec = v.read_all(0).next().unwrap().unwrap();
    let e = v.unseal(rec).unwrap_err();
    assert!(e.to_string().contains("annal.keys"), "{e}");
    let mut r = Reader::open(dir.path()).unwrap();
    r.master_key(master.clone());
    let v = r.view().unwrap();
    let rec = v.read_all(0).next().unwrap().unwrap();
    assert_eq!(v.unseal(rec).unwrap().payload(), b"ann@example.com");
    // check: unverified without the key (a warning), verified with it.
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(
        report.is_ok() && report.subjects.is_none() && !report.warnings.is_empty(),
        "{report:?}"
    );
    let report = annal::check(dir.path(), annal::CheckOptions::default().master_key(master)).unwrap();
    let s = report.subjects.unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report:?}");
    assert_eq!((s.sealed, s.erased, s.live_keys, s.erased_keys), (1, 0, 1, 0));
}

#[test]
fn lost_keys_are_damage_never_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.append("c-1", ExpectedVersion::Any, &[ev("Email", "a", Some("ann"))])
        .unwrap();
    log.append("c-2", ExpectedVersion::Any, &[ev("Email", "b", Some("bob"))])
        .unwrap();
    log.close().unwrap();
    // Keep the file as it was after the first key only: an older copy.
    let keys = dir.path().join("annal.keys");
    let full = std::fs::read(&keys).unwrap();
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert_eq!(report.subjects.map(|s| (s.sealed, s.live_keys)), Some((2, 2)));
    // The first key's entry ends where the second's begins.
    let second = (96..full.len())
        .step_by(8)
        .find(|&at| full[at + 16] == 2 && full[at + 4] == 1)
        .unwrap();
    std::fs::write(&keys, &full[..second]).unwrap();
    let r = Reader::open(dir.path()).unwrap();
    let v = r.view().unwrap();
    let recs: Vec<_> = v.read_all(0).map(|r| r.unwrap()).collect();
    assert_eq!(v.unseal(recs[0]).unwrap().payload(), b"a");
    match v.unseal(recs[1]) {
        Err(annal::Error::Corrupt { path, detail, .. }) => {
            assert!(path.ends_with("annal.keys"), "{path:?}");
            assert!(detail.contains("not an erasure"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(!report.is_ok());
    assert!(report.problems[0].file.ends_with("annal.keys"), "{report:?}");
    // The whole key file gone: check still sees the sealed records.
    std::fs::remove_file(&keys).unwrap();
    let report = annal::check(dir.path(), annal::CheckOptions::default()).unwrap();
    assert!(!report.is_ok(), "{report:?}");
    assert!(report.problems[0].file.ends_with("annal.keys"), "{report:?}");
    assert!(report.problems[0].detail.contains("not an erasure"), "{report:?}");
}

#[test]
fn older_formats_refuse_subjects_and_system_streams_are_not_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), Options::default().format_version(3)).unwrap();
    let e = log
        .append("c-1", ExpectedVersion::Any, &[ev("Email", "a", Some("ann"))])
        .unwrap_err();
    assert!(e.to_string().contains("format version 4"), "{e}");
    assert!(!dir.path().join("annal.keys").exists(), "no key was made");
    // A subject of more than 1024 bytes, or empty, is refused before any key.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    for bad in [String::new(), "x".repeat(1025)] {
        let e = log
            .append("c-1", ExpectedVersion::Any, &[ev("Email", "a", Some(&bad))])
            .unwrap_err();
        assert!(e.to_string().contains("subject"), "{e}");
    }
    assert_eq!(log.view().unwrap().next_position(), 0);
}

/// A typed event that names its subject: an aggregate's commands seal it,
/// and after the erasure the aggregate folds its envelope through
/// `apply_erased`.
#[test]
fn typed_events_name_their_subject_and_aggregates_fold_the_erasure() {
    use annal::{Aggregate, RecordRef, Repository};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct EmailSet {
        customer: String,
        email: String,
    }
    impl annal::Event for EmailSet {
        fn event_type(&self) -> &'static str {
            "EmailSet"
        }
        fn subject(&self) -> Option<&str> {
            Some(&self.customer)
        }
    }
    #[derive(Default, Serialize, Deserialize)]
    struct Customer {
        email: Option<String>,
        erased: u32,
    }
    impl Aggregate for Customer {
        type Event = EmailSet;
        type Command = String;
        type Error = String;
        fn handle(&self, email: &String) -> Result<Vec<EmailSet>, String> {
            Ok(vec![EmailSet {
                customer: "c-9".into(),
                email: email.clone(),
            }])
        }
        fn apply(&mut self, e: &EmailSet) {
            self.email = Some(e.email.clone());
        }
        fn apply_erased(&mut self, r: &RecordRef<'_>) {
            assert_eq!(r.event_type(), "EmailSet");
            self.erased += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let repo = Repository::<Customer>::new(&log);
    repo.execute("customer-9", &"nine@example.com".to_owned()).unwrap();
    log.sync().unwrap();
    assert!(
        files_holding(dir.path(), b"nine@example.com").is_empty(),
        "sealed on disk"
    );
    let view = log.view().unwrap();
    let rec = view.read_all(0).next().unwrap().unwrap();
    assert!(rec.is_sealed());
    assert_eq!(
        repo.load("customer-9").unwrap().state.email.as_deref(),
        Some("nine@example.com")
    );
    log.erase_subject("c-9").unwrap().expect("a key");
    let loaded = repo.load("customer-9").unwrap();
    assert_eq!((loaded.state.email, loaded.state.erased), (None, 1));
}
