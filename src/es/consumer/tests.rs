use super::*;
use crate::storage::io::IoFile;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The real file system, but the first `sweeps` links find their source
/// removed just before, as a writer's recovery removing `*.tmp` would.
#[derive(Debug)]
struct Sweeping {
    sweeps: AtomicUsize,
}

impl Io for Sweeping {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        StdIo.create(path)
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn IoFile>> {
        StdIo.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdIo.sync_dir(dir)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        if self
            .sweeps
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            std::fs::remove_file(from)?;
        }
        StdIo.hard_link(from, to)
    }
}

#[test]
fn names_that_could_name_another_names_file_are_refused() {
    for ok in [
        "b", "b.x", "b.locks", "lock", "tmp", "b-lock", "b.tmp1", "a.lock.b", "parked", "b_tmp",
    ] {
        check_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "b.lock",
        "b.tmp",
        "b.parked",
        "b.LOCK",
        "b.Tmp",
        "x.y.parked",
        ".lock",
        "b~v1",
        "b~serving",
        "",
        ".b",
        "b/c",
    ] {
        assert!(matches!(check_name(bad), Err(Error::InvalidArgument(_))), "{bad}");
    }
    let e = check_name("b.lock").unwrap_err().to_string();
    assert!(e.contains("must not end in") && e.contains("24.1"), "{e}");
}

#[test]
fn a_creation_whose_temporary_a_recovery_removed_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("annal.sub.x");
    let io = Sweeping {
        sweeps: AtomicUsize::new(3),
    };
    create_once(&io, dir.path(), &path, b"whole").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["annal.sub.x"], "no temporary left behind");

    // A sweep at every try: reported, naming the file, nothing left.
    let path = dir.path().join("annal.sub.y");
    let io = Sweeping {
        sweeps: AtomicUsize::new(usize::MAX),
    };
    let err = create_once(&io, dir.path(), &path, b"whole").unwrap_err();
    assert!(
        matches!(&err, Error::Io { op: "link", path: p, .. } if *p == path),
        "{err}"
    );
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
