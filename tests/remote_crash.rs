//! Crash tests of shipping (issue 18).
//!
//! - A remote log taken by a writer that shipped nothing before it died (its
//!   first manifest version names nothing): a restore is refused, as for a
//!   remote log without a manifest.

#![cfg(feature = "remote")]

mod remote_support;

use std::sync::Arc;

use annal::Error;
use annal::remote::{RemoteLog, RestoreTo, restore};
use remote_support::rt;

/// A remote log a writer took (the manifest version it takes it with names
/// nothing) and shipped nothing to, as a writer killed or failing between
/// that version and its first shipping round leaves it: a restore says
/// nothing was shipped (it said it restored 0 segments, leaving an empty
/// directory, which is no log).
#[test]
fn a_restore_of_a_remote_log_taken_but_never_shipped_to_is_refused() {
    use object_store::{ObjectStore, PutPayload};
    let store = Arc::new(object_store::memory::InMemory::new());
    let remote = RemoteLog::from_store(store.clone(), "taken", "memory://taken");
    let taken = annal::remote::Manifest {
        version: 1,
        seq: 1,
        epoch: 1,
        writer: "ab".repeat(16),
        log_id: "cd".repeat(16),
        sealed: Vec::new(),
        active: None,
        next_position: 0,
        written_at: 1,
        newest_event_at: None,
    };
    let rt = rt();
    let at = object_store::path::Path::from("taken/manifest/00000000000000000001");
    rt.block_on(store.put(&at, PutPayload::from(taken.encode()))).unwrap();
    assert_eq!(rt.block_on(remote.latest_manifest()).unwrap(), Some(taken));
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    match rt.block_on(restore(&remote, &dst, RestoreTo::Latest)) {
        Err(Error::Remote { object, detail }) => {
            assert!(object.ends_with("manifest/00000000000000000001"), "{object}");
            assert!(detail.contains("nothing was shipped"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
}
