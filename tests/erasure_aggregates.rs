//! Aggregates over events that name a subject (spec 3.8, 20, 22): they load
//! from the decrypted events, their snapshots name the subject keys they
//! depend on (snapshot format version 2), erasing the subject removes those
//! snapshots, and a load after the erasure gets the erased events through
//! `Aggregate::apply_erased`. After the erasure no file in the log directory
//! holds the subject's plaintext, payloads and snapshot state alike.

use std::fs;
use std::path::{Path, PathBuf};

use annal::{Aggregate, AsOf, Event, EventData, ExpectedVersion, KeyId, Log, RecordRef, Repository};
use serde::{Deserialize, Serialize};

const EMAIL: &str = "ann@example.com";
const ADDRESS: &str = "12 Secret Street";
const BOB_EMAIL: &str = "bob@example.net";

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CustomerEvent {
    Registered { email: String },
    Moved { address: String },
    Noted { text: String },
}

impl Event for CustomerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::Registered { .. } => "Registered",
            CustomerEvent::Moved { .. } => "Moved",
            CustomerEvent::Noted { .. } => "Noted",
        }
    }
}

/// A customer: what its events said, and which of them were erased.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Customer {
    email: Option<String>,
    address: Option<String>,
    notes: Vec<String>,
    /// `(stream version, event type)` of each event seen as erased.
    erased: Vec<(u64, String)>,
}

impl Aggregate for Customer {
    type Event = CustomerEvent;
    /// A note to add.
    type Command = String;
    type Error = String;

    fn handle(&self, note: &String) -> Result<Vec<CustomerEvent>, String> {
        // Needs the decrypted state: a note is refused before registration.
        if self.email.is_none() && self.erased.is_empty() {
            return Err("not registered".into());
        }
        Ok(vec![CustomerEvent::Noted { text: note.clone() }])
    }

    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::Registered { email } => self.email = Some(email.clone()),
            CustomerEvent::Moved { address } => self.address = Some(address.clone()),
            CustomerEvent::Noted { text } => self.notes.push(text.clone()),
        }
    }

    fn apply_erased(&mut self, record: &RecordRef<'_>) {
        assert!(record.is_erased() && record.payload().is_empty() && record.metadata().is_empty());
        self.erased
            .push((record.stream_version(), record.event_type().to_owned()));
    }
}

/// A typed event, sealed for `subject` if one is given.
fn event(e: &CustomerEvent, subject: Option<&str>) -> EventData<'static> {
    let data = annal::typed::encode(e).unwrap();
    match subject {
        Some(s) => data.with_subject(s.to_owned()),
        None => data,
    }
}

fn registered(email: &str) -> CustomerEvent {
    CustomerEvent::Registered { email: email.into() }
}

fn moved(address: &str) -> CustomerEvent {
    CustomerEvent::Moved {
        address: address.into(),
    }
}

/// Every byte of every file under `dir` (recursively), searched for `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle) {
                out.push(p);
            }
        }
    }
    out
}

/// The snapshot files in the log directory, sorted.
fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir.join("snapshots")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// A snapshot file's stream, format version and key list, read as spec
/// 20.2 lays them out (not with annal's decoder).
fn parse_snapshot(bytes: &[u8]) -> (String, u16, Vec<u64>) {
    assert_eq!(&bytes[..8], b"ANNALSNP");
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let stream_len = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
    let key_count = u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize;
    let payload_len = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let stream = String::from_utf8(bytes[64..64 + stream_len].to_vec()).unwrap();
    let keys: Vec<u64> = match version {
        1 => {
            assert_eq!(key_count, 0, "reserved1");
            Vec::new()
        }
        2 => bytes[64 + stream_len..64 + stream_len + 8 * key_count]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        v => panic!("snapshot format version {v}"),
    };
    assert_eq!(bytes.len(), 64 + stream_len + 8 * keys.len() + payload_len);
    (stream, version, keys)
}

/// The snapshot files of `stream`: (path, format version, keys).
fn snapshots_of(dir: &Path, stream: &str) -> Vec<(PathBuf, u16, Vec<u64>)> {
    snapshot_files(dir)
        .into_iter()
        .filter_map(|p| {
            let (s, v, k) = parse_snapshot(&fs::read(&p).unwrap());
            (s == stream).then_some((p, v, k))
        })
        .collect()
}

/// Two customers with sealed events (ann, bob) and one stream without
/// subjects, each with a snapshot; the key ids of ann and bob.
fn populated(log: &Log) -> (KeyId, KeyId) {
    log.append(
        "customer-ann",
        ExpectedVersion::NoStream,
        &[
            event(&registered(EMAIL), Some("ann")),
            event(
                &CustomerEvent::Noted {
                    text: "likes tea".into(),
                },
                None,
            ),
            event(&moved(ADDRESS), Some("ann")),
        ],
    )
    .unwrap();
    log.append(
        "customer-bob",
        ExpectedVersion::NoStream,
        &[event(&registered(BOB_EMAIL), Some("bob"))],
    )
    .unwrap();
    log.append(
        "customer-plain",
        ExpectedVersion::NoStream,
        &[event(&registered("public@example.org"), None)],
    )
    .unwrap();
    let view = log.view().unwrap();
    let key = |stream: &str| {
        view.read_stream(stream, 0, annal::Direction::Forward, 1)
            .next()
            .unwrap()
            .unwrap()
            .subject_key()
            .unwrap()
    };
    (key("customer-ann"), key("customer-bob"))
}

#[test]
fn aggregates_load_sealed_events_snapshot_their_keys_and_survive_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let (ann, bob) = populated(&log);
    assert_ne!(ann, bob);
    let repo = Repository::<Customer>::new(&log).snapshot_every(2, 1);

    // Loads decrypt: the state holds the plaintext.
    let loaded = repo.load("customer-ann").unwrap();
    assert_eq!(loaded.state.email.as_deref(), Some(EMAIL));
    assert_eq!(loaded.state.address.as_deref(), Some(ADDRESS));
    assert_eq!(loaded.state.notes, ["likes tea"]);
    assert!(loaded.state.erased.is_empty());
    assert_eq!((loaded.version, loaded.replayed), (Some(2), 3));

    // execute works on a sealed stream; its append (to 4 events) crosses a
    // multiple of 2, so a snapshot is written: format version 2, naming ann's key.
    let ex = repo.execute("customer-ann", &"called".to_owned()).unwrap();
    assert!(ex.snapshot_written && ex.snapshot_error.is_none(), "{ex:?}");
    let snaps = snapshots_of(dir.path(), "customer-ann");
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].1, snaps[0].2.clone()), (2, vec![ann.0]));
    let ann_snapshot = fs::read(&snaps[0].0).unwrap();
    // The snapshot holds the state's plaintext (so its removal matters).
    assert!(ann_snapshot.windows(EMAIL.len()).any(|w| w == EMAIL.as_bytes()));
    // Loading starts from it.
    let loaded = repo.load("customer-ann").unwrap();
    assert_eq!((loaded.snapshot_version, loaded.replayed), (Some(3), 0));
    assert_eq!(loaded.state.email.as_deref(), Some(EMAIL));
    assert_eq!(loaded.state.notes, ["likes tea", "called"]);

    // bob: a snapshot naming bob's key; plain: a version 1 snapshot, no keys.
    repo.execute("customer-bob", &"hello".to_owned()).unwrap();
    let bob_snaps = snapshots_of(dir.path(), "customer-bob");
    assert_eq!(
        bob_snaps.iter().map(|s| (s.1, s.2.clone())).collect::<Vec<_>>(),
        [(2, vec![bob.0])]
    );
    repo.execute("customer-plain", &"hi".to_owned()).unwrap();
    let plain_snaps = snapshots_of(dir.path(), "customer-plain");
    assert_eq!(
        plain_snaps.iter().map(|s| (s.1, s.2.clone())).collect::<Vec<_>>(),
        [(1, vec![])]
    );
    let plain_bytes = fs::read(&plain_snaps[0].0).unwrap();
    assert_eq!(repo.snapshot("customer-plain").unwrap(), Some(1));
    assert_eq!(fs::read(&plain_snaps[0].0).unwrap(), plain_bytes, "v1, byte for byte");
    log.sync().unwrap();
    // Before: the plaintext is in ann's snapshot, never in a segment.
    assert_eq!(files_holding(dir.path(), EMAIL.as_bytes()), [snaps[0].0.clone()]);

    // Erase ann: her snapshot file is gone, the others stay.
    assert_eq!(log.erase_subject("ann").unwrap(), Some(ann));
    assert!(snapshots_of(dir.path(), "customer-ann").is_empty());
    assert_eq!(snapshots_of(dir.path(), "customer-bob").len(), 1);
    assert_eq!(fs::read(&plain_snaps[0].0).unwrap(), plain_bytes);
    // No file in the log directory holds ann's plaintext.
    for secret in [EMAIL, ADDRESS, "ann@"] {
        assert_eq!(
            files_holding(dir.path(), secret.as_bytes()),
            Vec::<PathBuf>::new(),
            "{secret}"
        );
    }
    assert!(
        !files_holding(dir.path(), BOB_EMAIL.as_bytes()).is_empty(),
        "bob's snapshot stays"
    );

    // A load rebuilds from the events: the erased ones through apply_erased.
    let loaded = repo.load("customer-ann").unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.replayed, 4);
    assert_eq!(loaded.state.email, None);
    assert_eq!(loaded.state.address, None);
    assert_eq!(loaded.state.notes, ["likes tea", "called"]);
    assert_eq!(
        loaded.state.erased,
        [(0, "Registered".to_owned()), (2, "Moved".to_owned())],
        "apply_erased, once per erased event"
    );
    // Without snapshots: the same.
    let bare = Repository::<Customer>::new(&log).ignore_snapshots();
    assert_eq!(bare.load("customer-ann").unwrap().state, loaded.state);
    // Temporal loads too.
    let early = repo.load_as_of("customer-ann", AsOf::Version(1)).unwrap();
    assert_eq!(early.state.erased, [(0, "Registered".to_owned())]);
    assert_eq!(early.state.notes, ["likes tea"]);

    // A copy of the old snapshot put back is skipped: superseded by the erasure.
    fs::write(&snaps[0].0, &ann_snapshot).unwrap();
    let loaded = repo.load("customer-ann").unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.state.email, None);
    assert_eq!(loaded.state.erased.len(), 2);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains(&format!("superseded by the erasure of key {}", ann.0)),
        "{:?}",
        loaded.warnings
    );
    // The next erasure (of nothing) removes it.
    assert_eq!(log.erase_subjects(&[]).unwrap(), Vec::<Option<KeyId>>::new());
    assert!(snapshots_of(dir.path(), "customer-ann").is_empty());

    // execute still works after the erasure; the state folded the erased
    // events as erased (their envelopes only), so it holds nothing of the
    // subject: its snapshot is kept and names no erased key.
    let ex = repo.execute("customer-ann", &"again".to_owned()).unwrap();
    assert!(ex.appended.is_some() && ex.snapshot_error.is_none(), "{ex:?}");
    let ex = repo.execute("customer-ann", &"and again".to_owned()).unwrap();
    assert!(ex.snapshot_error.is_none(), "{ex:?}");
    assert!(repo.snapshot("customer-ann").unwrap().is_some());
    let snaps = snapshots_of(dir.path(), "customer-ann");
    assert!(
        !snaps.is_empty() && snaps.iter().all(|s| !s.2.contains(&ann.0)),
        "{snaps:?}"
    );
    let loaded = repo.load("customer-ann").unwrap();
    assert_eq!(loaded.state.notes, ["likes tea", "called", "again", "and again"]);
    assert_eq!(loaded.state.erased.len(), 2);
    log.close().unwrap();

    // Reopened: the same, and still no plaintext anywhere.
    let log = Log::open(dir.path()).unwrap();
    let repo = Repository::<Customer>::new(&log).snapshot_every(2, 1);
    let loaded = repo.load("customer-ann").unwrap();
    assert_eq!(loaded.state.erased.len(), 2);
    assert_eq!(loaded.state.email, None);
    assert_eq!(
        repo.load("customer-bob").unwrap().state.email.as_deref(),
        Some(BOB_EMAIL)
    );
    drop(log);
    for secret in [EMAIL, ADDRESS] {
        assert_eq!(
            files_holding(dir.path(), secret.as_bytes()),
            Vec::<PathBuf>::new(),
            "{secret}"
        );
    }
}

/// A subject named again after its erasure gets a new key: the snapshots
/// of the new state name the new key only (the erased one's events were
/// folded as erased); a state that folded only live keys keeps its
/// snapshots.
#[test]
fn a_subject_named_again_and_streams_without_erased_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let (ann, _) = populated(&log);
    log.erase_subject("ann").unwrap();
    // A new stream for the returning subject: its key is new.
    log.append(
        "customer-ann-2",
        ExpectedVersion::NoStream,
        &[event(&registered("ann@new.example"), Some("ann"))],
    )
    .unwrap();
    let repo = Repository::<Customer>::new(&log).snapshot_every(2, 1);
    let ex = repo.execute("customer-ann-2", &"back".to_owned()).unwrap();
    assert!(ex.snapshot_written, "{ex:?}");
    let snaps = snapshots_of(dir.path(), "customer-ann-2");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].1, 2);
    assert_eq!(snaps[0].2.len(), 1);
    assert!(snaps[0].2[0] > ann.0, "a new key: {:?}", snaps[0].2);
    let loaded = repo.load("customer-ann-2").unwrap();
    assert_eq!(
        (loaded.snapshot_version, loaded.state.email.as_deref()),
        (Some(1), Some("ann@new.example"))
    );
    // The old stream folds its erased events as erased: its snapshot is kept
    // and names no erased key.
    assert!(repo.snapshot("customer-ann").unwrap().is_some());
    let snaps = snapshots_of(dir.path(), "customer-ann");
    assert!(
        !snaps.is_empty() && snaps.iter().all(|s| !s.2.contains(&ann.0)),
        "{snaps:?}"
    );
}

/// Saves racing erasures: for each of ten customers, one thread executes
/// commands (a snapshot after every event) while another erases the
/// customer's subject, later for each customer (so at another round of
/// the saves). When both are done, no snapshot file names the
/// erased key (checked after each erasure, before the next one could
/// remove what it left) and no file holds any customer's plaintext.
#[test]
fn saves_racing_erasures_leave_no_snapshot_of_an_erased_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let email = |i: usize| format!("customer{i}@secret.example");
    let rounds = 12;
    for i in 0..10 {
        let stream = format!("c-{i}");
        log.append(
            &stream,
            ExpectedVersion::NoStream,
            &[event(&registered(&email(i)), Some(&format!("s{i}")))],
        )
        .unwrap();
        let key = {
            let view = log.view().unwrap();
            let rec = view
                .read_stream(&stream, 0, annal::Direction::Forward, 1)
                .next()
                .unwrap()
                .unwrap();
            rec.subject_key().unwrap()
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let repo = Repository::<Customer>::new(&log).snapshot_every(1, 2);
                for round in 0..rounds {
                    let ex = repo.execute(&stream, &format!("note {round}")).unwrap();
                    assert!(ex.snapshot_error.is_none(), "{ex:?}");
                }
            });
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(4 * i as u64));
                assert_eq!(log.erase_subject(&format!("s{i}")).unwrap(), Some(key));
            });
        });
        for p in snapshot_files(dir.path()) {
            let (stream, version, named) = parse_snapshot(&fs::read(&p).unwrap());
            assert!(
                !named.contains(&key.0),
                "{stream} (v{version}) names erased key {key:?}"
            );
        }
        let loaded = Repository::<Customer>::new(&log).load(&stream).unwrap();
        assert_eq!((loaded.state.email, loaded.state.erased.len()), (None, 1));
        assert_eq!(loaded.state.notes.len(), rounds);
    }
    log.sync().unwrap();
    for i in 0..10 {
        assert_eq!(
            files_holding(dir.path(), email(i).as_bytes()),
            Vec::<PathBuf>::new(),
            "{}",
            email(i)
        );
    }
}
