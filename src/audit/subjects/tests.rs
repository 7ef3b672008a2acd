//! Unit tests of `audit::subjects` (spec 22): round trips, mismatched keys
//! and logs, torn tails, every byte changed, erasure, crashes and failures
//! through a recording seam, special files, the AEAD helpers, the golden
//! vectors and a property test of the loader.
#![allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]

use std::io;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::storage::io::StdIo;

const LOG: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// The published test master key of the golden vector: never for a real log.
const TEST_MASTER: [u8; 32] = [0x4d; 32];

fn master() -> MasterKey {
    MasterKey::from_bytes(TEST_MASTER)
}

/// What a [`Seam`] records and which operations it fails.
#[derive(Debug, Default)]
struct SeamState {
    fail: Mutex<Vec<&'static str>>,
    ops: Mutex<Vec<String>>,
}

impl SeamState {
    fn hit(&self, op: &'static str, what: &Path) -> io::Result<()> {
        let name = what
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.ops.lock().unwrap().push(format!("{op} {name}"));
        let mut fail = self.fail.lock().unwrap();
        if let Some(i) = fail.iter().position(|f| *f == op) {
            fail.remove(i);
            return Err(io::Error::other(format!("injected {op} failure")));
        }
        Ok(())
    }
}

/// A seam over the real file system that records every operation and
/// fails the next operation of each name in `fail`.
#[derive(Debug, Default, Clone)]
struct Seam(Arc<SeamState>);

impl Seam {
    fn fail(&self, op: &'static str) {
        self.0.fail.lock().unwrap().push(op);
    }
    fn ops(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.ops.lock().unwrap())
    }
}

#[derive(Debug)]
struct SeamFile {
    inner: Box<dyn IoFile>,
    path: PathBuf,
    state: Arc<SeamState>,
}

impl IoFile for SeamFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.state.hit("write", &self.path)?;
        self.inner.write_at(offset, buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.state.hit("sync", &self.path)?;
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.state.hit("truncate", &self.path)?;
        self.inner.truncate(len)
    }
}

impl Io for Seam {
    fn create(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.0.hit("create", path)?;
        Ok(Box::new(SeamFile {
            inner: StdIo.create(path)?,
            path: path.to_owned(),
            state: self.0.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn IoFile>> {
        self.0.hit("open", path)?;
        Ok(Box::new(SeamFile {
            inner: StdIo.open(path)?,
            path: path.to_owned(),
            state: self.0.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.hit("rename", from)?;
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.hit("remove", path)?;
        StdIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.hit("sync_dir", dir)?;
        StdIo.sync_dir(dir)
    }
}

fn keys_of(k: &SubjectKeys) -> Vec<(u64, Option<[u8; 32]>)> {
    (1..=k.len() as u64)
        .map(|id| match k.state(KeyId(id)) {
            KeyState::Live(key) => (id, Some(*key.bytes())),
            KeyState::Erased => (id, None),
            KeyState::Unknown => panic!("id {id} unknown"),
        })
        .collect()
}

fn file_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(KEYS_FILE)).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The golden vectors' history (spec/vectors/keys/README.md): two
/// subjects (the file is created), one more (appended), the second
/// erased (replaced), two more in one append.
fn golden_history(dir: &Path, master: Option<&MasterKey>, seed: u64) -> SubjectKeys {
    let io = StdIo;
    let mut k = SubjectKeys::open_fixed(&io, dir, LOG, master, seed).unwrap();
    assert_eq!(
        k.ensure(&io, ["alice@example.com", "bob"]).unwrap(),
        [KeyId(1), KeyId(2)]
    );
    assert_eq!(k.ensure(&io, ["carol"]).unwrap(), [KeyId(3)]);
    assert_eq!(k.erase(&io, "bob").unwrap(), Some(KeyId(2)));
    assert_eq!(
        k.ensure(&io, ["dave", "alice@example.com", "erin"]).unwrap(),
        [KeyId(4), KeyId(1), KeyId(5)]
    );
    k
}

#[test]
fn keys_round_trip_plain_and_wrapped() {
    for m in [None, Some(master())] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let io = StdIo;
        let mut k = SubjectKeys::open(&io, dir, LOG, m.as_ref()).unwrap();
        assert_eq!(k.generation(), None);
        assert!(matches!(k.state(KeyId(1)), KeyState::Unknown));
        let ids = k.ensure(&io, ["a", "b", "a"]).unwrap();
        assert_eq!(ids, [KeyId(1), KeyId(2), KeyId(1)]);
        assert_eq!(k.ensure(&io, ["b", "c"]).unwrap(), [KeyId(2), KeyId(3)]);
        assert_eq!(k.ensure(&io, ["c"]).unwrap(), [KeyId(3)]);
        let before = keys_of(&k);
        assert_eq!(before.len(), 3);
        let writer = SubjectKeys::open(&io, dir, LOG, m.as_ref()).unwrap();
        assert_eq!(keys_of(&writer), before);
        let reader = SubjectKeys::load(dir, LOG, m.as_ref()).unwrap();
        assert_eq!(keys_of(&reader), before);
        assert_eq!(reader.key_for("b").unwrap().0, KeyId(2));
        assert!(reader.key_for("z").is_none());
        assert_eq!(reader.generation(), Some(1));
        // Wrapped: no data key is in the file.
        let bytes = file_bytes(dir);
        for (_, key) in &before {
            assert_eq!(contains(&bytes, &key.unwrap()), m.is_none());
        }
        // A reader's copy is read-only.
        let mut r = reader;
        assert!(matches!(r.ensure(&io, ["x"]), Err(Error::InvalidArgument(_))));
    }
}

#[test]
fn master_key_and_log_id_mismatches_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let io = StdIo;
    SubjectKeys::open(&io, dir, LOG, Some(&master()))
        .unwrap()
        .ensure(&io, ["a"])
        .unwrap();
    let wrong = MasterKey::from_bytes([1; 32]);
    let e = SubjectKeys::load(dir, LOG, Some(&wrong)).unwrap_err();
    assert!(
        e.to_string().contains("the master key given does not open annal.keys"),
        "{e}"
    );
    let e = SubjectKeys::open(&io, dir, LOG, None).unwrap_err();
    assert!(e.to_string().contains("none was given"), "{e}");
    let e = SubjectKeys::load(dir, [7; 16], Some(&master())).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { offset: 16, .. }) && e.to_string().contains("another log"),
        "{e}"
    );

    // The header, the log id and the master key are checked before any entry.
    let mut bytes = file_bytes(dir);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bytes[100] ^= 1;
    std::fs::write(dir.join(KEYS_FILE), &bytes).unwrap();
    let e = SubjectKeys::load(dir, [7; 16], Some(&master())).unwrap_err();
    assert!(matches!(&e, Error::Corrupt { offset: 16, .. }), "{e}");
    let e = SubjectKeys::load(dir, LOG, Some(&wrong)).unwrap_err();
    assert!(e.to_string().contains("does not open"), "{e}");
    let e = SubjectKeys::load(dir, LOG, Some(&master())).unwrap_err();
    assert!(matches!(&e, Error::Corrupt { offset: 96, .. }), "{e}");

    let plain = tempfile::tempdir().unwrap();
    SubjectKeys::open(&io, plain.path(), LOG, None)
        .unwrap()
        .ensure(&io, ["a"])
        .unwrap();
    let e = SubjectKeys::load(plain.path(), LOG, Some(&master())).unwrap_err();
    assert!(e.to_string().contains("not wrapped"), "{e}");
    assert!(!format!("{:?}", master()).contains("4d"), "Debug never prints the key");
}

#[test]
fn a_torn_tail_is_cut_by_the_writer_and_ignored_by_a_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let io = StdIo;
    let mut k = SubjectKeys::open(&io, dir, LOG, None).unwrap();
    k.ensure(&io, ["a"]).unwrap();
    let good = file_bytes(dir).len();
    k.ensure(&io, ["b", "c"]).unwrap();
    let full = file_bytes(dir);
    drop(k);
    // A crash during the second ensure: its last entry incomplete.
    std::fs::write(dir.join(KEYS_FILE), &full[..full.len() - 5]).unwrap();
    let r = SubjectKeys::load(dir, LOG, None).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r.ignored_tail(), Some((good + 72) as u64));
    assert_eq!(file_bytes(dir).len(), full.len() - 5, "a reader never writes");
    let seam = Seam::default();
    let mut w = SubjectKeys::open(&seam, dir, LOG, None).unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(file_bytes(dir).len(), good + 72, "the writer cut the torn entry");
    assert_eq!(
        seam.ops(),
        [
            "remove annal.keys.tmp",
            "open annal.keys",
            "truncate annal.keys",
            "sync annal.keys"
        ]
    );
    // The next ensure appends where the cut was; the id of the cut key is
    // given again (no durable event named it).
    assert_eq!(w.ensure(&seam, ["d"]).unwrap(), [KeyId(3)]);
    assert_eq!(seam.ops(), ["write annal.keys", "sync annal.keys"]);
    assert_eq!(SubjectKeys::load(dir, LOG, None).unwrap().len(), 3);
    drop(w);

    // A crash that extended the file with zeros (its length made durable,
    // not its data): a torn tail too.
    let good = file_bytes(dir);
    let mut zeros = good.clone();
    zeros.resize(good.len() + 200, 0);
    std::fs::write(dir.join(KEYS_FILE), &zeros).unwrap();
    assert_eq!(
        SubjectKeys::load(dir, LOG, None).unwrap().ignored_tail(),
        Some(good.len() as u64)
    );
    SubjectKeys::open(&StdIo, dir, LOG, None).unwrap();
    assert_eq!(file_bytes(dir), good);
}

#[test]
fn a_bad_middle_entry_is_an_error_with_its_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let io = StdIo;
    let mut k = SubjectKeys::open(&io, dir, LOG, None).unwrap();
    k.ensure(&io, ["a"]).unwrap();
    let second = file_bytes(dir).len();
    k.ensure(&io, ["b"]).unwrap();
    k.ensure(&io, ["c"]).unwrap();
    let mut bytes = file_bytes(dir);
    bytes[second + 40] ^= 0x20;
    std::fs::write(dir.join(KEYS_FILE), &bytes).unwrap();
    for e in [
        SubjectKeys::load(dir, LOG, None).unwrap_err(),
        SubjectKeys::open(&io, dir, LOG, None).unwrap_err(),
    ] {
        match &e {
            Error::Corrupt { path, offset, detail } => {
                assert_eq!(*offset, second as u64);
                assert!(path.ends_with(KEYS_FILE));
                assert!(detail.contains("CRC"), "{detail}");
            }
            _ => panic!("{e:?}"),
        }
    }
    assert_eq!(file_bytes(dir), bytes, "nothing was cut");
}

/// Every single-byte change of a key file is detected: an error, or, for
/// a change in the last write only, a cut at an entry of that write that
/// keeps every entry before it.
#[test]
fn every_byte_change_is_detected() {
    for (m, last_write, entry_starts) in [
        (None, 288u64, vec![96u64, 184, 216, 288, 360]),
        (Some(master()), 368, vec![96, 224, 256, 368, 480]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let k = golden_history(tmp.path(), m.as_ref(), 1);
        let original = keys_of(&k);
        let path = k.path().to_owned();
        let bytes = file_bytes(tmp.path());
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                match parse(&b, &path, &LOG, m.as_ref()) {
                    Err(e) => {
                        assert!(matches!(e, Error::Corrupt { .. } | Error::ChainKey { .. }), "{e:?}");
                    }
                    Ok(p) => {
                        let at = i as u64;
                        assert!(at >= last_write, "byte {i} ^ {flip:#x}: accepted");
                        // Cut at the changed entry: all of the last write's
                        // entries say committed = its start, at or below it.
                        let cut = *entry_starts.iter().rev().find(|&&s| s <= at).unwrap();
                        assert!(p.torn.is_some());
                        assert_eq!(p.valid_len, cut, "byte {i}");
                        let kept = entry_starts.iter().filter(|&&s| s < cut).count();
                        assert_eq!(p.slots.len(), kept, "byte {i}");
                        for (slot, (id, key)) in p.slots.iter().zip(&original) {
                            match slot {
                                Slot::Live { key: k, .. } => assert_eq!(Some(k.0), *key, "{id}"),
                                Slot::Erased => assert_eq!(*key, None, "{id}"),
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn erasure_leaves_neither_key_nor_subject_in_the_file() {
    for m in [None, Some(master())] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let seam = Seam::default();
        let mut k = SubjectKeys::open(&seam, dir, LOG, m.as_ref()).unwrap();
        k.ensure(&seam, ["alice@example.com", "bob@example.com"]).unwrap();
        let (id, key) = k.key_for("bob@example.com").map(|(i, k)| (i, *k.bytes())).unwrap();
        let stored = match &k.slots[1] {
            Slot::Live { wrapped, .. } => wrapped.map(|w| w.to_vec()).unwrap_or(key.to_vec()),
            Slot::Erased => unreachable!(),
        };
        assert!(contains(&file_bytes(dir), &stored));
        assert!(contains(&file_bytes(dir), b"bob@example.com"));
        seam.ops();
        assert_eq!(k.erase(&seam, "bob@example.com").unwrap(), Some(id));
        assert_eq!(
            seam.ops(),
            [
                "remove annal.keys.tmp",
                "create annal.keys.tmp",
                "write annal.keys.tmp",
                "sync annal.keys.tmp",
                "rename annal.keys.tmp",
                "sync_dir "
            ]
            .map(|s| s.replace(
                "sync_dir ",
                &format!("sync_dir {}", dir.file_name().unwrap().to_string_lossy())
            ))
        );
        let bytes = file_bytes(dir);
        assert!(!contains(&bytes, &key));
        assert!(!contains(&bytes, &stored[..24]));
        assert!(!contains(&bytes, b"bob@example.com"));
        assert!(contains(&bytes, b"alice@example.com"));
        assert!(!dir.join(KEYS_TMP_FILE).exists());
        assert!(matches!(k.state(id), KeyState::Erased));
        assert!(k.key_for("bob@example.com").is_none());
        assert_eq!(k.generation(), Some(2));
        assert_eq!(k.erase(&seam, "bob@example.com").unwrap(), None, "already erased");
        assert!(seam.ops().is_empty(), "nothing to write");
        // Reopened: erased, and ids are never reused.
        let mut k = SubjectKeys::open(&seam, dir, LOG, m.as_ref()).unwrap();
        assert!(matches!(k.state(id), KeyState::Erased));
        assert_eq!(k.ensure(&seam, ["bob@example.com"]).unwrap(), [KeyId(3)], "a new key");
        assert_eq!(
            k.erase_all(&seam, ["alice@example.com", "nobody"]).unwrap(),
            [Some(KeyId(1)), None]
        );
        let k = SubjectKeys::load(dir, LOG, m.as_ref()).unwrap();
        assert_eq!(k.len(), 3);
        assert!(matches!(k.state(KeyId(1)), KeyState::Erased));
        assert!(matches!(k.state(KeyId(3)), KeyState::Live(_)));
        assert_eq!(k.generation(), Some(3));
    }
}

/// A crash between the temp file's write and the rename keeps the old
/// state; the leftover temp file is ignored, and removed by the writer.
#[test]
fn a_failed_or_interrupted_replace_keeps_the_old_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seam = Seam::default();
    let mut k = SubjectKeys::open(&seam, dir, LOG, None).unwrap();
    k.ensure(&seam, ["a", "b"]).unwrap();
    let before = file_bytes(dir);
    seam.fail("rename");
    assert!(matches!(k.erase(&seam, "a"), Err(Error::Io { op: "rename", .. })));
    assert_eq!(file_bytes(dir), before);
    assert!(dir.join(KEYS_TMP_FILE).exists());
    assert!(k.key_for("a").is_some(), "the erasure did not happen");
    let r = SubjectKeys::load(dir, LOG, None).unwrap();
    assert!(r.key_for("a").is_some());
    // Not poisoned: the erasure can be retried.
    assert_eq!(k.erase(&seam, "a").unwrap(), Some(KeyId(1)));
    drop(k);
    // A leftover temp file (the crash): ignored by readers, removed by the writer.
    std::fs::write(dir.join(KEYS_TMP_FILE), b"garbage").unwrap();
    assert_eq!(SubjectKeys::load(dir, LOG, None).unwrap().len(), 2);
    assert!(dir.join(KEYS_TMP_FILE).exists());
    SubjectKeys::open(&seam, dir, LOG, None).unwrap();
    assert!(!dir.join(KEYS_TMP_FILE).exists());

    // The first creation fails before its rename: no file, nothing held.
    let tmp2 = tempfile::tempdir().unwrap();
    let mut k = SubjectKeys::open(&seam, tmp2.path(), LOG, None).unwrap();
    seam.fail("sync");
    assert!(k.ensure(&seam, ["a"]).is_err());
    assert!(!tmp2.path().join(KEYS_FILE).exists());
    assert!(k.key_for("a").is_none());
    assert_eq!(k.ensure(&seam, ["a"]).unwrap(), [KeyId(1)]);
}

#[test]
fn a_failed_append_poisons() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seam = Seam::default();
    let mut k = SubjectKeys::open(&seam, dir, LOG, None).unwrap();
    k.ensure(&seam, ["a"]).unwrap();
    seam.fail("sync");
    assert!(matches!(k.ensure(&seam, ["b"]), Err(Error::Io { op: "fsync", .. })));
    assert!(k.key_for("b").is_none());
    assert!(matches!(k.ensure(&seam, ["c"]), Err(Error::Poisoned { .. })));
    assert!(matches!(k.erase(&seam, "a"), Err(Error::Poisoned { .. })));
    // Reopened: "b" was written (not synced): kept, its key never handed out.
    let k = SubjectKeys::open(&seam, dir, LOG, None).unwrap();
    assert!(k.key_for("a").is_some());
}

#[test]
fn subjects_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let io = StdIo;
    let mut k = SubjectKeys::open(&io, tmp.path(), LOG, None).unwrap();
    let long = "x".repeat(MAX_SUBJECT_LEN + 1);
    assert!(matches!(k.ensure(&io, [""]), Err(Error::InvalidArgument(_))));
    assert!(matches!(k.ensure(&io, [long.as_str()]), Err(Error::InvalidArgument(_))));
    let max = "é".repeat(MAX_SUBJECT_LEN / 2);
    assert_eq!(k.ensure(&io, [max.as_str()]).unwrap(), [KeyId(1)]);
    assert!(
        SubjectKeys::load(tmp.path(), LOG, None)
            .unwrap()
            .key_for(&max)
            .is_some()
    );
    assert!(!format!("{k:?}").contains("é"), "Debug never prints subjects");
}

#[cfg(unix)]
#[test]
fn special_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join(KEYS_FILE);
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    assert!(matches!(
        SubjectKeys::load(dir, LOG, None),
        Err(Error::Io { op: "open", .. })
    ));
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let e = SubjectKeys::open(&StdIo, dir, LOG, None).unwrap_err();
    assert!(e.to_string().contains("a directory"), "{e}");
    std::fs::remove_dir(&path).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    if made.is_ok_and(|s| s.success()) {
        let e = SubjectKeys::load(dir, LOG, None).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }
}

#[test]
fn seal_and_open_round_trip() {
    let key = DataKey::from_bytes([3; 32]);
    let nonce = new_nonce().unwrap();
    assert_ne!(nonce, new_nonce().unwrap());
    let sealed = seal(&key, &nonce, b"aad", b"personal data");
    assert_eq!(sealed.len(), 13 + TAG_LEN);
    assert!(!contains(&sealed, b"personal"));
    assert_eq!(open(&key, &nonce, b"aad", &sealed).unwrap(), b"personal data");
    assert_eq!(open(&key, &nonce, b"aaD", &sealed), Err(OpenFailed));
    assert_eq!(
        open(&DataKey::from_bytes([4; 32]), &nonce, b"aad", &sealed),
        Err(OpenFailed)
    );
    let mut bad = sealed.clone();
    bad[0] ^= 1;
    assert_eq!(open(&key, &nonce, b"aad", &bad), Err(OpenFailed));
    assert_eq!(open(&key, &nonce, b"aad", &sealed[..10]), Err(OpenFailed));
    assert_eq!(format!("{key:?}"), "DataKey(<secret>)");
}

// ---- golden vectors (spec/vectors/keys) ----

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors/keys")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A key id and, unless erased, its subject and key.
type SpecEntry = (u64, Option<(String, [u8; 32])>);

/// Decode a key file from spec 22's tables alone (offsets written out):
/// `(generation, [(key id, subject, key)])`, `None` for erased.
fn decode_by_the_spec(b: &[u8], master: Option<&[u8; 32]>) -> (u64, Vec<SpecEntry>) {
    assert_eq!(&b[0..8], b"ANNALKEY");
    assert_eq!(u32_at(b, 92), crc32fast::hash(&b[0..92]), "header_crc");
    assert_eq!(u16_at(b, 8), 1, "file_version");
    assert_eq!(u16_at(b, 10), u16::from(master.is_some()), "flags");
    assert_eq!(&b[16..32], &LOG, "log_id");
    let base_len = u64_at(b, 40);
    if let Some(m) = master {
        let aad = [b"annal.keys master key check v1".as_slice(), &LOG].concat();
        let c = XChaCha20Poly1305::new(&(*m).into());
        c.decrypt(
            XNonce::from_slice(&b[48..72]),
            Payload {
                msg: &b[72..88],
                aad: &aad,
            },
        )
        .expect("the check opens");
    } else {
        assert!(b[48..88].iter().all(|&x| x == 0));
    }
    let mut p = 96;
    let mut out = Vec::new();
    let mut prev_committed = base_len;
    while p < b.len() {
        let len = u32_at(b, p + 8) as usize;
        assert_eq!(u32_at(b, p), crc32fast::hash(&b[p + 4..p + len]), "entry crc at {p}");
        let id = u64_at(b, p + 16);
        assert_eq!(id, out.len() as u64 + 1);
        let committed = u64_at(b, p + 24);
        if (p as u64) < base_len {
            assert_eq!(committed, base_len);
        } else {
            assert!(committed == prev_committed || committed == p as u64);
        }
        prev_committed = committed;
        match b[p + 4] {
            1 => {
                let slen = u16_at(b, p + 6) as usize;
                let mlen = if master.is_some() { 72 } else { 32 };
                assert_eq!(len, (32 + mlen + slen).next_multiple_of(8));
                let subject = String::from_utf8(b[p + 32 + mlen..p + 32 + mlen + slen].to_vec()).unwrap();
                let key: [u8; 32] = match master {
                    None => b[p + 32..p + 64].try_into().unwrap(),
                    Some(m) => {
                        let mut aad = LOG.to_vec();
                        aad.extend_from_slice(&id.to_le_bytes());
                        let c = XChaCha20Poly1305::new(&(*m).into());
                        c.decrypt(
                            XNonce::from_slice(&b[p + 32..p + 56]),
                            Payload {
                                msg: &b[p + 56..p + 104],
                                aad: &aad,
                            },
                        )
                        .unwrap()
                        .try_into()
                        .unwrap()
                    }
                };
                out.push((id, Some((subject, key))));
            }
            2 => {
                assert_eq!(len, 32);
                out.push((id, None));
            }
            k => panic!("kind {k}"),
        }
        p += len;
    }
    (u64_at(b, 32), out)
}

/// The committed vectors decode, by spec 22's tables alone, to the
/// history that made them, equal what annal loads from them, and equal
/// what annal writes today; `ANNAL_REGENERATE_VECTORS=1` rewrites them.
#[test]
fn golden_vectors() {
    let regenerate = std::env::var_os("ANNAL_REGENERATE_VECTORS").is_some_and(|v| v == "1");
    for (name, m) in [("plain.keys", None), ("wrapped.keys", Some(TEST_MASTER))] {
        let mk = m.map(MasterKey::from_bytes);
        let tmp = tempfile::tempdir().unwrap();
        golden_history(tmp.path(), mk.as_ref(), 1);
        let written = file_bytes(tmp.path());
        let path = vector_dir().join(name);
        if regenerate {
            std::fs::create_dir_all(vector_dir()).unwrap();
            std::fs::write(&path, &written).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "read {}: {e} (generate with ANNAL_REGENERATE_VECTORS=1)",
                path.display()
            )
        });
        assert_eq!(stored, written, "{name}: annal writes the vector byte for byte");
        let (generation, entries) = decode_by_the_spec(&stored, m.as_ref());
        assert_eq!(generation, 2);
        let subjects: Vec<Option<&str>> = entries
            .iter()
            .map(|(_, e)| e.as_ref().map(|(s, _)| s.as_str()))
            .collect();
        assert_eq!(
            subjects,
            [
                Some("alice@example.com"),
                None,
                Some("carol"),
                Some("dave"),
                Some("erin")
            ]
        );
        std::fs::write(tmp.path().join(KEYS_FILE), &stored).unwrap();
        let loaded = SubjectKeys::load(tmp.path(), LOG, mk.as_ref()).unwrap();
        let by_spec: Vec<(u64, Option<[u8; 32]>)> = entries
            .iter()
            .map(|(id, e)| (*id, e.as_ref().map(|(_, k)| *k)))
            .collect();
        assert_eq!(keys_of(&loaded), by_spec);
        assert!(!contains(&stored, b"bob"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Loading arbitrary bytes never panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = parse(&bytes, Path::new(KEYS_FILE), &LOG, None);
        let _ = parse(&bytes, Path::new(KEYS_FILE), &LOG, Some(&master()));
    }

    /// Nor does a valid file with bytes changed, cut or appended, its
    /// header CRC fixed so the entries are reached.
    #[test]
    fn mutated_files_never_panic(
        wrapped in any::<bool>(),
        changes in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..8),
        cut in any::<u16>(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let m = wrapped.then(master);
        let mut b = golden_bytes(wrapped);
        for (at, v) in changes {
            let i = usize::from(at) % b.len();
            b[i] = v;
        }
        b.truncate(usize::from(cut).max(KEYS_HEADER_LEN_USIZE));
        b.extend_from_slice(&tail);
        if b.len() >= 96 {
            let c = crc32fast::hash(&b[..92]);
            b[92..96].copy_from_slice(&c.to_le_bytes());
        }
        if let Ok(p) = parse(&b, Path::new(KEYS_FILE), &LOG, m.as_ref()) {
            prop_assert!(p.slots.len() <= 5 + tail.len() / 32);
        }
    }
}

const KEYS_HEADER_LEN_USIZE: usize = crate::format::subject_keys::KEYS_HEADER_LEN;

fn golden_bytes(wrapped: bool) -> Vec<u8> {
    std::fs::read(vector_dir().join(if wrapped { "wrapped.keys" } else { "plain.keys" })).unwrap()
}
