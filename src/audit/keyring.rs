//! The subject keys one log's writer or reader shares with every view it
//! hands out: sealing the events of an append that name subjects, unsealing
//! stored records, and erasing subjects (spec 3.8, 22).
//!
//! A [`KeyRing`] holds the log's `annal.keys` as loaded (`SubjectKeys`)
//! behind one lock. The writer's ring is loaded when the log opens (a wrong
//! or missing master key fails the open, and a torn tail is cut then), a
//! reader's on the first sealed record it meets. Views share their ring, so
//! an erasure through the writer turns every later unseal of the subject's
//! events, in every view of that process, into "erased" as soon as it
//! returns.
//!
//! Invariants: a key is durable in `annal.keys` before any event sealed with
//! it is handed to the writer (`SubjectKeys::ensure` returns after its
//! fsync); the writer never reloads (it is the only one who writes the
//! file), a reader reloads once per unknown key id and then calls the id
//! damage, never erasure.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};

use zeroize::Zeroizing;

use crate::audit::subjects::{KeyState, MasterKey, OpenFailed, SubjectKeys, open, seal};
use crate::error::{Error, Result};
use crate::format::record::{EventData, RecordRef};
use crate::format::sealed::{KeyId, MAX_KEY_ID, Seal, SealedWith, aad, sealed_plaintext, split_plaintext};
use crate::format::subject_keys::KEYS_FILE;
use crate::storage::io::Io;

/// A decrypted sealed plaintext (zeroized when dropped), with where its
/// metadata and payload are.
#[derive(Clone)]
pub(crate) struct Plain {
    pub bytes: Zeroizing<Vec<u8>>,
    pub metadata: Range<usize>,
    pub payload: Range<usize>,
}

impl Plain {
    pub(crate) fn metadata(&self) -> &[u8] {
        self.bytes.get(self.metadata.clone()).unwrap_or_default()
    }

    pub(crate) fn payload(&self) -> &[u8] {
        self.bytes.get(self.payload.clone()).unwrap_or_default()
    }
}

/// What unsealing a record gave.
pub(crate) enum Unsealing {
    /// The sealed plaintext.
    Opened(Plain),
    /// The key was erased.
    Erased,
}

/// Why a record did not unseal.
pub(crate) enum UnsealFailure {
    /// The key file could not be read (the error names it).
    Keys(Error),
    /// No key of that id, after a reload: keys were lost (spec 22.5).
    Unknown { key: u64, known: usize, path: PathBuf },
    /// The ciphertext does not open, or its plaintext does not split: the
    /// record was changed (the caller names the segment and offset).
    Damaged(String),
}

/// One log's subject keys, shared by its writer or reader and their views.
pub(crate) struct KeyRing {
    dir: PathBuf,
    master: Option<MasterKey>,
    /// The writer's seam; `None` for a reader's ring (never writes).
    io: Option<Arc<dyn Io>>,
    log_id: OnceLock<[u8; 16]>,
    /// `None` until loaded (a reader's, on first use).
    keys: RwLock<Option<SubjectKeys>>,
    /// A reader's: what `annal.keys` looked like when last loaded.
    stamp: std::sync::Mutex<Option<FileStamp>>,
}

/// What tells a key file changed: a replace makes a new file (another inode,
/// usually another length), an append makes it longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    /// The stamp of the file at `path` (`None`: no such file).
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::symlink_metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            inode,
        })
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("writer", &self.io.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// The writer's ring: `annal.keys` opened now (a leftover temp file
    /// removed, a torn tail cut), its master key checked.
    pub(crate) fn writer(io: Arc<dyn Io>, dir: &Path, log_id: [u8; 16], master: Option<MasterKey>) -> Result<KeyRing> {
        let keys = SubjectKeys::open(&*io, dir, log_id, master.as_ref())?;
        Ok(KeyRing {
            dir: dir.to_owned(),
            master,
            io: Some(io),
            log_id: OnceLock::from(log_id),
            keys: RwLock::new(Some(keys)),
            stamp: std::sync::Mutex::new(None),
        })
    }

    /// A reader's ring: loaded on first use, once the log's id is known
    /// ([`KeyRing::set_log_id`]).
    pub(crate) fn reader(dir: &Path, master: Option<MasterKey>) -> KeyRing {
        KeyRing {
            dir: dir.to_owned(),
            master,
            io: None,
            log_id: OnceLock::new(),
            keys: RwLock::new(None),
            stamp: std::sync::Mutex::new(None),
        }
    }

    /// A reader's ring, before a new view: if `annal.keys` changed since it
    /// was loaded (a subject erased, keys added), load it again when next
    /// needed, so that an erasure by the writer reaches this reader's next
    /// view. One `stat` when keys were loaded; nothing otherwise.
    pub(crate) fn refresh(&self) {
        if self.io.is_some() {
            return;
        }
        let stamp = *self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(was) = stamp
            && FileStamp::of(&self.dir.join(KEYS_FILE)) != Some(was)
        {
            *self.write() = None;
        }
    }

    /// The log's id (from a segment header), for a reader's ring.
    pub(crate) fn set_log_id(&self, id: [u8; 16]) {
        let _ = self.log_id.set(id);
    }

    /// Deterministic keys and nonces from `seed` (test hook).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn use_fixed_random(&self, seed: u64) {
        if let Some(k) = self.write().as_mut() {
            k.use_fixed_random(seed);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<SubjectKeys>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<SubjectKeys>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    fn log_id(&self) -> Result<[u8; 16]> {
        self.log_id.get().copied().ok_or_else(|| Error::NotALog {
            path: self.dir.clone(),
            detail: "no segment header was read yet, so the subject keys cannot be checked against the log".into(),
        })
    }

    fn writer_io(&self) -> Result<&dyn Io> {
        self.io.as_deref().ok_or_else(|| {
            Error::InvalidArgument("subject keys are written only by the log's writer (Log), not by a Reader".into())
        })
    }

    /// The events of an append to `stream`, those that name a subject
    /// sealed (spec 3.8): each subject's key made durable first (new
    /// subjects get keys: one append and one fsync of `annal.keys`), then
    /// each such event's metadata and payload encrypted under a fresh nonce.
    /// Events without a subject are kept as they are.
    pub(crate) fn seal_events<'e>(&self, stream: &str, events: &[EventData<'e>]) -> Result<Vec<EventData<'e>>> {
        let io = self.writer_io()?;
        let log_id = self.log_id()?;
        // An erasure between `ensure` and sealing takes the key away: the
        // subject is then named anew (a new key), as after any erasure.
        for _ in 0..8 {
            {
                let guard = self.read();
                let keys = guard.as_ref().ok_or_else(|| self.unloaded())?;
                if let Some(sealed) = seal_with(keys, &log_id, stream, events)? {
                    return Ok(sealed);
                }
            }
            let mut guard = self.write();
            let keys = guard.as_mut().ok_or_else(|| self.unloaded())?;
            keys.ensure(io, events.iter().filter_map(|e| e.subject.as_deref()))?;
        }
        Err(Error::InvalidArgument(
            "the subjects of this append were erased while it was being sealed, 8 times in a row".into(),
        ))
    }

    fn unloaded(&self) -> Error {
        Error::InvalidArgument(format!(
            "the subject keys of {} are not loaded (a writer's ring is loaded at open)",
            self.dir.display()
        ))
    }

    /// Unseal `rec`, stored sealed as `seal`: its plaintext, or erased.
    pub(crate) fn unseal(&self, rec: &RecordRef<'_>, seal: Seal<'_>) -> Result<Unsealing, UnsealFailure> {
        let mut reloaded = false;
        loop {
            {
                let guard = self.read();
                if let Some(keys) = guard.as_ref() {
                    match keys.state(KeyId(seal.key)) {
                        KeyState::Live(key) => {
                            let log_id = self.log_id().map_err(UnsealFailure::Keys)?;
                            let aad = aad(&log_id, seal.key, rec.stream_bytes(), rec.event_type_bytes());
                            let plain = open(key, seal.nonce, &aad, rec.payload()).map(Zeroizing::new).map_err(
                                |OpenFailed| {
                                    UnsealFailure::Damaged(format!(
                                        "the sealed payload of the event at position {} does not open with key {} \
                                         (the ciphertext, its nonce or the record's stream or type was changed)",
                                        rec.position(),
                                        seal.key
                                    ))
                                },
                            )?;
                            let (metadata, payload) = split_plaintext(&plain).map_err(|(_, why)| {
                                UnsealFailure::Damaged(format!(
                                    "the sealed plaintext of the event at position {} does not split: {why}",
                                    rec.position()
                                ))
                            })?;
                            return Ok(Unsealing::Opened(Plain {
                                bytes: plain,
                                metadata,
                                payload,
                            }));
                        }
                        KeyState::Erased => return Ok(Unsealing::Erased),
                        KeyState::Unknown if reloaded || self.io.is_some() => {
                            return Err(UnsealFailure::Unknown {
                                key: seal.key,
                                known: keys.len(),
                                path: keys.path().to_owned(),
                            });
                        }
                        KeyState::Unknown => {}
                    }
                }
            }
            // Not loaded yet, or an id the file did not hold when loaded
            // (the writer may have added keys since): (re)load.
            // The stamp first: a change after it is seen by the next refresh.
            let stamp = FileStamp::of(&self.dir.join(KEYS_FILE));
            let mut guard = self.write();
            match guard.as_mut() {
                Some(keys) => keys.reload().map_err(UnsealFailure::Keys)?,
                None => {
                    let log_id = self.log_id().map_err(UnsealFailure::Keys)?;
                    let keys =
                        SubjectKeys::load(&self.dir, log_id, self.master.as_ref()).map_err(UnsealFailure::Keys)?;
                    *guard = Some(keys);
                }
            }
            *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
            reloaded = true;
        }
    }

    /// Erase `subjects`' keys durably (one replace of `annal.keys`): each
    /// one's key id, `None` for a subject with no live key.
    pub(crate) fn erase(&self, subjects: &[&str]) -> Result<Vec<Option<KeyId>>> {
        let io = self.writer_io()?;
        let mut guard = self.write();
        let keys = guard.as_mut().ok_or_else(|| self.unloaded())?;
        keys.erase_all(io, subjects)
    }

    /// A reader's ring loaded now (for `check`: the key file verified even
    /// when no record needed it), and what it holds: live keys, erased
    /// keys, and the offset of a torn tail it ignored. `None` fields: no key
    /// file.
    pub(crate) fn load_summary(&self) -> Result<(u64, u64, Option<u64>)> {
        let mut guard = self.write();
        if guard.is_none() {
            *guard = Some(SubjectKeys::load(&self.dir, self.log_id()?, self.master.as_ref())?);
        }
        let keys = guard.as_ref().ok_or_else(|| self.unloaded())?;
        let live = keys.live_count() as u64;
        Ok((live, keys.len() as u64 - live, keys.ignored_tail()))
    }

    /// Whether key `id` is erased in the keys as loaded (`false` for a
    /// ring not loaded yet, or an unknown id).
    pub(crate) fn is_erased(&self, id: KeyId) -> bool {
        self.read()
            .as_ref()
            .is_some_and(|k| matches!(k.state(id), KeyState::Erased))
    }
}

/// `events` with those that name a subject sealed, if every such subject
/// has a live key in `keys` (`None`: some need one first).
fn seal_with<'e>(
    keys: &SubjectKeys,
    log_id: &[u8; 16],
    stream: &str,
    events: &[EventData<'e>],
) -> Result<Option<Vec<EventData<'e>>>> {
    let named = events.iter().filter(|e| e.subject.is_some()).count();
    let nonces = keys.nonces(named)?;
    let mut nonces = nonces.into_iter();
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        let Some(subject) = ev.subject.as_deref() else {
            out.push(ev.clone());
            continue;
        };
        let Some((id, key)) = keys.key_for(subject) else {
            return Ok(None);
        };
        if id.0 > MAX_KEY_ID {
            return Err(Error::InvalidArgument(format!(
                "subject key {} is past the largest a record can name ({MAX_KEY_ID}, spec 3.8)",
                id.0
            )));
        }
        let Some(nonce) = nonces.next() else {
            return Ok(None);
        };
        let plain = sealed_plaintext(&ev.metadata, &ev.payload);
        let aad = aad(log_id, id.0, stream.as_bytes(), ev.event_type.as_bytes());
        let ciphertext = seal(key, &nonce, &aad, &plain);
        out.push(ev.sealed_copy(ciphertext, SealedWith { key: id.0, nonce }));
    }
    Ok(Some(out))
}
