//! Subject keys for crypto-shredding (spec 22): the key file `annal.keys`
//! loaded, extended and rewritten through the I/O seam, and the AEAD helpers
//! that encrypt a subject's events with its data key.
//!
//! Every subject (a person named by events) has a 32-byte random data key.
//! [`SubjectKeys::ensure`] gives keys to new subjects and makes them durable
//! (one append, one fsync) before the caller encrypts anything with them;
//! [`SubjectKeys::erase`] replaces the file atomically with the subject's
//! key entry turned into an erased entry, after which the subject's events
//! read as erased. The file is the only copy of the keys: it is not derived,
//! nothing rebuilds it.
//!
//! The protocol (spec 22.4): a new file and every erasure are written to
//! `annal.keys.tmp`, fsynced, renamed over `annal.keys`, and the directory
//! fsynced; new keys of an existing file are appended in one write and one
//! fsync. A crash leaves the old or the new file (replace), or a torn tail
//! past the durable boundary (append), which the writer cuts on open and a
//! reader ignores; the keys in a torn tail were never handed out.
//!
//! Memory: data keys, the master key and the buffers that held key bytes
//! are zeroized when dropped; an erased subject's name and key are zeroized
//! when the erasure returns.
#![allow(
    dead_code,
    reason = "the integration of issue 16 uses every item: Log::open (SubjectKeys::open, MasterKey), \
              append with subjects (ensure, key_for, seal, new_nonce), Log::erase_subject (erase, erase_all), \
              readers (load, reload, state, open)"
)]

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zerocopy::{FromBytes, IntoBytes};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Damage, Error, Result, corrupt};
use crate::format::subject_keys::{
    DATA_KEY_LEN, ENTRY_HEADER_LEN, EntryBody, KEYS_CHECK_OFFSET, KEYS_FILE, KEYS_LOG_ID_OFFSET, KEYS_TMP_FILE,
    KeysHeader, MAX_SUBJECT_LEN, NONCE_LEN, RawBody, TAG_LEN, WrappedKey, decode, encode_file, push_entry,
};
use crate::storage::io::{Io, IoFile, open_read};

/// AAD of the master-key check (spec 22.2), followed by the log's id.
const CHECK_AAD: &[u8] = b"annal.keys master key check v1";

/// An XChaCha20-Poly1305 nonce.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// The key that wraps (encrypts) the data keys in `annal.keys` at rest.
/// Given when a log is opened, never stored in the log. `Debug` never
/// prints it; it is zeroized when dropped.
#[derive(Clone)]
pub struct MasterKey([u8; DATA_KEY_LEN]);

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> MasterKey {
        MasterKey(bytes)
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<MasterKey> {
        let mut k = [0u8; DATA_KEY_LEN];
        Random::Os.fill(&mut k)?;
        Ok(MasterKey(k))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A subject's 32-byte data key. `Debug` never prints it; it is zeroized
/// when dropped, and never cloned.
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> DataKey {
        DataKey(bytes)
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<secret>)")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The id of a data key: 1, 2, 3, ... in the order keys were created, never
/// reused (spec 22.3). Events name their key by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u64);

/// What the key file says of a key id.
#[derive(Debug)]
pub(crate) enum KeyState<'a> {
    /// The key exists.
    Live(&'a DataKey),
    /// The key was erased: its events read as erased.
    Erased,
    /// No such id in the file as loaded. A reader may reload: the writer may
    /// have added keys since. After a reload, an id that a durable event
    /// names and the file does not hold is damage (spec 22.5), never erasure.
    Unknown,
}

/// A ciphertext that does not open: damaged, or sealed with another key,
/// nonce or AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFailed;

impl fmt::Display for OpenFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the ciphertext does not open with its key (damaged, or sealed with another key, nonce or AAD)")
    }
}

impl std::error::Error for OpenFailed {}

/// Encrypt `plaintext` with `key` (XChaCha20-Poly1305): the ciphertext and
/// its 16-byte tag, `plaintext.len() + 16` bytes. A nonce must never be used
/// twice with one key: take each from [`new_nonce`].
pub(crate) fn seal(key: &DataKey, nonce: &Nonce, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    #[expect(
        clippy::expect_used,
        reason = "XChaCha20-Poly1305 fails only past 2^38 bytes; an event is at most 4 GiB"
    )]
    key.cipher()
        .encrypt(XNonce::from_slice(nonce), Payload { msg: plaintext, aad })
        .expect("a plaintext below 256 GiB encrypts")
}

/// Decrypt what [`seal`] returned, checking its tag.
pub(crate) fn open(key: &DataKey, nonce: &Nonce, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, OpenFailed> {
    key.cipher()
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| OpenFailed)
}

/// A fresh random nonce from the operating system's generator (24 bytes:
/// random nonces do not collide in practice).
pub(crate) fn new_nonce() -> Result<Nonce> {
    let mut n = [0u8; NONCE_LEN];
    Random::Os.fill(&mut n)?;
    Ok(n)
}

/// Where fresh keys and nonces come from: the operating system, or (tests,
/// golden vectors) a fixed seed, so that the file's bytes are deterministic.
enum Random {
    Os,
    #[cfg(test)]
    Fixed {
        seed: u64,
        counter: u64,
    },
}

impl Random {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        match self {
            Random::Os => getrandom::fill(buf)
                .map_err(|e| Error::InvalidArgument(format!("the operating system gave no random bytes: {e}"))),
            #[cfg(test)]
            Random::Fixed { seed, counter } => {
                let mut h = blake3::Hasher::new();
                h.update(&seed.to_le_bytes()).update(&counter.to_le_bytes());
                h.finalize_xof().fill(buf);
                *counter += 1;
                Ok(())
            }
        }
    }
}

/// A key of the file, by index (key id = index + 1).
enum Slot {
    /// A live key and, in a wrapped file, its stored (wrapped) material.
    Live {
        key: DataKey,
        wrapped: Option<[u8; size_of::<WrappedKey>()]>,
    },
    Erased,
}

/// The file as last loaded or written.
struct FileState {
    generation: u64,
    check: Option<(Nonce, [u8; TAG_LEN])>,
    /// Its length (where the next append goes).
    len: u64,
    /// The writer's handle for appends (opened on first use; a replace drops it).
    handle: Option<Box<dyn IoFile>>,
}

/// The subject keys of one log: the contents of `annal.keys`.
pub(crate) struct SubjectKeys {
    dir: PathBuf,
    path: PathBuf,
    log_id: [u8; 16],
    master: Option<MasterKey>,
    writable: bool,
    /// `None`: there is no file (no key yet).
    file: Option<FileState>,
    slots: Vec<Slot>,
    by_subject: HashMap<String, usize>,
    random: Random,
    /// The first failure that left the file's state unknown: no more writes.
    poisoned: Option<String>,
    /// A reader's ignored torn tail: its offset.
    ignored_tail: Option<u64>,
}

impl fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither keys nor subjects (personal data).
        f.debug_struct("SubjectKeys")
            .field("path", &self.path)
            .field("wrapped", &self.master.is_some())
            .field("writable", &self.writable)
            .field("generation", &self.generation())
            .field("keys", &self.slots.len())
            .field("live", &self.by_subject.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Drop for SubjectKeys {
    fn drop(&mut self) {
        for (mut name, _) in self.by_subject.drain() {
            name.zeroize();
        }
    }
}

/// What [`parse`] found in a file's bytes.
struct Parsed {
    generation: u64,
    check: Option<(Nonce, [u8; TAG_LEN])>,
    slots: Vec<Slot>,
    by_subject: HashMap<String, usize>,
    valid_len: u64,
    torn: Option<Damage>,
}

/// The error of a master key that is missing, not needed, or wrong.
fn master_key_error(path: &Path, detail: impl Into<String>) -> Error {
    Error::ChainKey {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Which step of a replace failed: before the rename nothing changed; after
/// it the new file is in place but perhaps not durable.
enum ReplaceFailure {
    BeforeRename(Error),
    AfterRename(Error),
}

impl SubjectKeys {
    fn empty(dir: &Path, log_id: [u8; 16], master: Option<&MasterKey>, writable: bool) -> SubjectKeys {
        SubjectKeys {
            dir: dir.to_owned(),
            path: dir.join(KEYS_FILE),
            log_id,
            master: master.cloned(),
            writable,
            file: None,
            slots: Vec::new(),
            by_subject: HashMap::new(),
            random: Random::Os,
            poisoned: None,
            ignored_tail: None,
        }
    }

    /// The writer's open (spec 22.4, 22.5): removes a leftover
    /// `annal.keys.tmp`, loads `annal.keys` (none: no keys), and cuts a torn
    /// tail through the seam. `master` must be given if and only if the
    /// file is wrapped; a new file is wrapped if it is given.
    pub(crate) fn open(io: &dyn Io, dir: &Path, log_id: [u8; 16], master: Option<&MasterKey>) -> Result<SubjectKeys> {
        let mut keys = SubjectKeys::empty(dir, log_id, master, true);
        let _ = io.remove(&dir.join(KEYS_TMP_FILE));
        keys.read_file()?;
        if let Some(cut) = keys.ignored_tail.take() {
            let path = keys.path.clone();
            let f = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
            f.truncate(cut).map_err(|e| Error::io("truncate", &path, e))?;
            f.sync().map_err(|e| Error::io("fsync", &path, e))?;
            if let Some(state) = keys.file.as_mut() {
                state.handle = Some(f);
            }
        }
        Ok(keys)
    }

    /// A reader's load: never writes; a torn tail is ignored (see
    /// [`SubjectKeys::ignored_tail`]).
    pub(crate) fn load(dir: &Path, log_id: [u8; 16], master: Option<&MasterKey>) -> Result<SubjectKeys> {
        let mut keys = SubjectKeys::empty(dir, log_id, master, false);
        keys.read_file()?;
        Ok(keys)
    }

    /// Read the file again (a reader that met an [`KeyState::Unknown`] id).
    pub(crate) fn reload(&mut self) -> Result<()> {
        let mut fresh = SubjectKeys::empty(&self.dir, self.log_id, self.master.as_ref(), false);
        fresh.read_file()?;
        std::mem::swap(&mut self.file, &mut fresh.file);
        std::mem::swap(&mut self.slots, &mut fresh.slots);
        std::mem::swap(&mut self.by_subject, &mut fresh.by_subject);
        self.ignored_tail = fresh.ignored_tail;
        Ok(())
    }

    /// The key of `subject`, if it has a live one.
    pub(crate) fn key_for(&self, subject: &str) -> Option<(KeyId, &DataKey)> {
        let &i = self.by_subject.get(subject)?;
        match self.slots.get(i)? {
            Slot::Live { key, .. } => Some((KeyId(i as u64 + 1), key)),
            Slot::Erased => None,
        }
    }

    /// What the file says of `id`.
    pub(crate) fn state(&self, id: KeyId) -> KeyState<'_> {
        let slot = usize::try_from(id.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.slots.get(i));
        match slot {
            Some(Slot::Live { key, .. }) => KeyState::Live(key),
            Some(Slot::Erased) => KeyState::Erased,
            None => KeyState::Unknown,
        }
    }

    /// The file's generation (`None`: no file yet).
    pub(crate) fn generation(&self) -> Option<u64> {
        self.file.as_ref().map(|f| f.generation)
    }

    /// How many key ids exist (live and erased).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The offset of a torn tail this reader ignored, if any.
    pub(crate) fn ignored_tail(&self) -> Option<u64> {
        self.ignored_tail
    }

    /// The key file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Give every subject without a live key a fresh one and make the new
    /// keys durable: appended at the end of the file in one write and one
    /// fsync, or, for the first key of the log, a new file written to
    /// `annal.keys.tmp`, fsynced, renamed, the directory fsynced (spec 22.4).
    /// Returns each subject's key id, in the order given.
    ///
    /// A subject that was erased gets a new key (erased entries do not name
    /// their subject). An I/O failure once the file may have changed
    /// poisons: every later `ensure` and `erase` fails until the log is
    /// reopened.
    pub(crate) fn ensure<I>(&mut self, io: &dyn Io, subjects: I) -> Result<Vec<KeyId>>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.check_writable()?;
        let mut ids = Vec::new();
        let mut fresh: Vec<(String, DataKey, Option<[u8; size_of::<WrappedKey>()]>)> = Vec::new();
        for s in subjects {
            let s = s.as_ref();
            if s.is_empty() || s.len() > MAX_SUBJECT_LEN {
                return Err(Error::InvalidArgument(format!(
                    "a subject must be 1 to {MAX_SUBJECT_LEN} bytes, found {} bytes",
                    s.len()
                )));
            }
            if let Some((id, _)) = self.key_for(s) {
                ids.push(id);
            } else if let Some(i) = fresh.iter().position(|(name, ..)| name == s) {
                ids.push(KeyId((self.slots.len() + i) as u64 + 1));
            } else {
                let id = (self.slots.len() + fresh.len()) as u64 + 1;
                let mut k = [0u8; DATA_KEY_LEN];
                self.random.fill(&mut k)?;
                let key = DataKey(k);
                k.zeroize();
                let wrapped = match &self.master {
                    Some(m) => Some(wrap(&mut self.random, m, &self.log_id, id, &key)?),
                    None => None,
                };
                fresh.push((s.to_owned(), key, wrapped));
                ids.push(KeyId(id));
            }
        }
        if fresh.is_empty() {
            return Ok(ids);
        }
        let first_id = self.slots.len() as u64 + 1;
        let material = |(_, key, wrapped): &(String, DataKey, Option<[u8; 72]>)| -> Vec<u8> {
            match wrapped {
                Some(w) => w.to_vec(),
                None => key.0.to_vec(),
            }
        };
        let materials: Vec<Zeroizing<Vec<u8>>> = fresh.iter().map(|f| Zeroizing::new(material(f))).collect();
        let bodies = fresh.iter().zip(&materials).map(|((name, ..), m)| EntryBody::Key {
            subject: name,
            material: m,
        });
        match self.file.as_mut() {
            None => {
                let check = match &self.master {
                    Some(m) => Some(check_for(&mut self.random, m, &self.log_id)?),
                    None => None,
                };
                let bytes = Zeroizing::new(encode_file(self.log_id, 1, check, bodies));
                let state = FileState {
                    generation: 1,
                    check,
                    len: bytes.len() as u64,
                    handle: None,
                };
                match self.replace(io, &bytes) {
                    Ok(()) => {
                        self.file = Some(state);
                        self.commit(fresh);
                        Ok(ids)
                    }
                    Err(ReplaceFailure::BeforeRename(e)) => Err(e),
                    Err(ReplaceFailure::AfterRename(e)) => {
                        self.file = Some(state);
                        self.commit(fresh);
                        Err(self.poison(e))
                    }
                }
            }
            Some(state) => {
                let at = state.len;
                // Sized up front: no reallocation leaves a copy of a key behind.
                let total = bodies.clone().map(|b| b.len()).sum();
                let mut bytes = Zeroizing::new(Vec::with_capacity(total));
                for (i, body) in bodies.enumerate() {
                    push_entry(&mut bytes, first_id + i as u64, body, at);
                }
                let path = &self.path;
                let written = (|| {
                    if state.handle.is_none() {
                        state.handle = Some(io.open(path).map_err(|e| Error::io("open", path, e))?);
                    }
                    let f = state
                        .handle
                        .as_ref()
                        .ok_or_else(|| Error::io("open", path, missing()))?;
                    f.write_at(at, &bytes).map_err(|e| Error::io("write", path, e))?;
                    f.sync().map_err(|e| Error::io("fsync", path, e))
                })();
                match written {
                    Ok(()) => {
                        state.len = at + bytes.len() as u64;
                        self.commit(fresh);
                        Ok(ids)
                    }
                    Err(e) => Err(self.poison(e)),
                }
            }
        }
    }

    /// Erase `subject`'s key: the file is replaced with its key entry turned
    /// into an erased entry (spec 22.4). `None` if it had no live key
    /// (nothing is written). After it returns `Ok`, no byte of the file
    /// holds the key or the subject, and this copy of both is zeroized.
    pub(crate) fn erase(&mut self, io: &dyn Io, subject: &str) -> Result<Option<KeyId>> {
        Ok(self.erase_all(io, [subject])?.into_iter().next().flatten())
    }

    /// [`SubjectKeys::erase`] of several subjects with one replace.
    pub(crate) fn erase_all<I>(&mut self, io: &dyn Io, subjects: I) -> Result<Vec<Option<KeyId>>>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.check_writable()?;
        let found: Vec<Option<KeyId>> = subjects
            .into_iter()
            .map(|s| self.key_for(s.as_ref()).map(|(id, _)| id))
            .collect();
        let mut gone: Vec<usize> = found.iter().flatten().map(|id| (id.0 - 1) as usize).collect();
        gone.sort_unstable();
        gone.dedup();
        let Some(state) = self.file.as_ref() else {
            return Ok(found);
        };
        if gone.is_empty() {
            return Ok(found);
        }
        let generation = state.generation + 1;
        let check = state.check;
        let mut names: Vec<Option<&str>> = vec![None; self.slots.len()];
        for (name, &i) in &self.by_subject {
            if let Some(n) = names.get_mut(i) {
                *n = Some(name);
            }
        }
        let materials: Vec<Option<Zeroizing<Vec<u8>>>> = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Live { wrapped: Some(w), .. } => Some(Zeroizing::new(w.to_vec())),
                Slot::Live { key, wrapped: None } => Some(Zeroizing::new(key.0.to_vec())),
                Slot::Erased => None,
            })
            .collect();
        let bodies = (0..self.slots.len()).map(|i| {
            match (
                names.get(i).copied().flatten(),
                materials.get(i).and_then(|m| m.as_ref()),
            ) {
                (Some(subject), Some(material)) if gone.binary_search(&i).is_err() => {
                    EntryBody::Key { subject, material }
                }
                _ => EntryBody::Erased,
            }
        });
        let bytes = Zeroizing::new(encode_file(self.log_id, generation, check, bodies));
        drop(names);
        let new_len = bytes.len() as u64;
        let result = self.replace(io, &bytes);
        drop(bytes);
        let after = match result {
            Err(ReplaceFailure::BeforeRename(e)) => return Err(e),
            Ok(()) => None,
            Err(ReplaceFailure::AfterRename(e)) => Some(e),
        };
        self.file = Some(FileState {
            generation,
            check,
            len: new_len,
            handle: None,
        });
        for &i in &gone {
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = Slot::Erased;
            }
        }
        let names: Vec<String> = self
            .by_subject
            .iter()
            .filter(|(_, i)| gone.binary_search(i).is_ok())
            .map(|(n, _)| n.clone())
            .collect();
        for mut n in names {
            if let Some((mut owned, _)) = self.by_subject.remove_entry(&n) {
                owned.zeroize();
            }
            n.zeroize();
        }
        match after {
            None => Ok(found),
            Some(e) => Err(self.poison(e)),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::InvalidArgument(format!(
                "{} was loaded read-only: only the writer changes it",
                self.path.display()
            )));
        }
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        self.poisoned.get_or_insert_with(|| e.to_string());
        e
    }

    fn commit(&mut self, fresh: Vec<(String, DataKey, Option<[u8; 72]>)>) {
        for (name, key, wrapped) in fresh {
            self.by_subject.insert(name, self.slots.len());
            self.slots.push(Slot::Live { key, wrapped });
        }
    }

    /// Write `bytes` as the whole file: temp file, fsync, rename, directory
    /// fsync (spec 22.4).
    fn replace(&self, io: &dyn Io, bytes: &[u8]) -> Result<(), ReplaceFailure> {
        let tmp = self.dir.join(KEYS_TMP_FILE);
        let _ = io.remove(&tmp);
        let before = ReplaceFailure::BeforeRename;
        let f = io.create(&tmp).map_err(|e| before(Error::io("create", &tmp, e)))?;
        f.write_at(0, bytes).map_err(|e| before(Error::io("write", &tmp, e)))?;
        f.sync().map_err(|e| before(Error::io("fsync", &tmp, e)))?;
        drop(f);
        io.rename(&tmp, &self.path)
            .map_err(|e| before(Error::io("rename", &tmp, e)))?;
        io.sync_dir(&self.dir)
            .map_err(|e| ReplaceFailure::AfterRename(Error::io("fsync directory", &self.dir, e)))
    }

    /// Read and check the file into `self` (no file: no keys). A torn tail
    /// is left in `ignored_tail`.
    fn read_file(&mut self) -> Result<()> {
        let file = match open_read(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("open", &self.path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io("stat", &self.path, e))?.len();
        // Never more than the file's length, however it grows meanwhile.
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(len)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", &self.path, e))?;
        let p = parse(&bytes, &self.path, &self.log_id, self.master.as_ref())?;
        self.ignored_tail = p.torn.as_ref().map(|_| p.valid_len);
        self.file = Some(FileState {
            generation: p.generation,
            check: p.check,
            len: p.valid_len,
            handle: None,
        });
        self.slots = p.slots;
        self.by_subject = p.by_subject;
        Ok(())
    }

    /// A writer whose fresh keys and nonces come from `seed` (tests and
    /// golden vectors: deterministic bytes).
    #[cfg(test)]
    pub(crate) fn open_fixed(
        io: &dyn Io,
        dir: &Path,
        log_id: [u8; 16],
        master: Option<&MasterKey>,
        seed: u64,
    ) -> Result<SubjectKeys> {
        let mut k = SubjectKeys::open(io, dir, log_id, master)?;
        k.random = Random::Fixed { seed, counter: 0 };
        Ok(k)
    }
}

/// `key` wrapped by the master key: nonce, ciphertext, tag (spec 22.3).
fn wrap(random: &mut Random, master: &MasterKey, log_id: &[u8; 16], id: u64, key: &DataKey) -> Result<[u8; 72]> {
    let mut nonce = [0u8; NONCE_LEN];
    random.fill(&mut nonce)?;
    let sealed = Zeroizing::new(
        master
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &key.0,
                    aad: &wrap_aad(log_id, id),
                },
            )
            .map_err(|_| Error::InvalidArgument("XChaCha20-Poly1305 refused a 32-byte key".into()))?,
    );
    let mut out = [0u8; 72];
    let (n, rest) = out.split_at_mut(NONCE_LEN);
    n.copy_from_slice(&nonce);
    if rest.len() == sealed.len() {
        rest.copy_from_slice(&sealed);
    }
    Ok(out)
}

/// A fresh master-key check: a nonce and the tag of the empty message
/// (spec 22.2).
fn check_for(random: &mut Random, master: &MasterKey, log_id: &[u8; 16]) -> Result<(Nonce, [u8; TAG_LEN])> {
    let mut nonce = [0u8; NONCE_LEN];
    random.fill(&mut nonce)?;
    let tag = master
        .cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &[],
                aad: &check_aad(log_id),
            },
        )
        .ok()
        .and_then(|t| <[u8; TAG_LEN]>::try_from(t.as_slice()).ok())
        .ok_or_else(|| Error::InvalidArgument("XChaCha20-Poly1305 gave no 16-byte tag".into()))?;
    Ok((nonce, tag))
}

fn missing() -> std::io::Error {
    std::io::Error::other("no file handle")
}

fn check_aad(log_id: &[u8; 16]) -> Vec<u8> {
    [CHECK_AAD, log_id.as_slice()].concat()
}

fn wrap_aad(log_id: &[u8; 16], id: u64) -> [u8; 24] {
    let mut a = [0u8; 24];
    let (l, i) = a.split_at_mut(16);
    l.copy_from_slice(log_id);
    i.copy_from_slice(&id.to_le_bytes());
    a
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check a key file's bytes and unwrap its keys (spec 22.5): the header,
/// the log id, the master key, the entries.
fn parse(bytes: &[u8], path: &Path, log_id: &[u8; 16], master: Option<&MasterKey>) -> Result<Parsed> {
    // Spec 22.5's order: the header, the log id, the master key, the entries.
    let h = KeysHeader::parse(bytes).map_err(|d| d.at(path))?;
    if &h.log_id != log_id {
        return Err(corrupt(
            path,
            KEYS_LOG_ID_OFFSET,
            format!(
                "expected the key file of log {}, found one of log {}: annal.keys belongs to another log",
                hex(log_id),
                hex(&h.log_id)
            ),
        ));
    }
    let check = h.wrapped().then_some((h.check_nonce, h.check_tag));
    match (check, master) {
        (Some(_), None) => {
            return Err(master_key_error(
                path,
                "annal.keys is wrapped by a master key, and none was given",
            ));
        }
        (None, Some(_)) => {
            return Err(master_key_error(
                path,
                "a master key was given, but annal.keys is not wrapped by one (its keys are stored in plain)",
            ));
        }
        (Some((nonce, tag)), Some(m)) => {
            let opened = m.cipher().decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &tag,
                    aad: &check_aad(log_id),
                },
            );
            if opened.is_err() {
                return Err(master_key_error(
                    path,
                    format!(
                        "the master key given does not open annal.keys (its check at byte offset {KEYS_CHECK_OFFSET} \
                         fails)"
                    ),
                ));
            }
        }
        (None, None) => {}
    }
    let f = decode(bytes).map_err(|d| d.at(path))?;
    let mut slots = Vec::with_capacity(f.entries.len());
    let mut by_subject = HashMap::new();
    for e in &f.entries {
        match e.body {
            RawBody::Erased => slots.push(Slot::Erased),
            RawBody::Key { subject, material } => {
                let (key, wrapped) = match master {
                    None => {
                        let k = <[u8; DATA_KEY_LEN]>::try_from(material)
                            .map_err(|_| corrupt(path, e.offset, "expected 32 bytes of key material".to_owned()))?;
                        (DataKey(k), None)
                    }
                    Some(m) => {
                        let w = WrappedKey::read_from_bytes(material).map_err(|_| {
                            corrupt(path, e.offset, "expected 72 bytes of wrapped key material".to_owned())
                        })?;
                        let mut sealed = Zeroizing::new([w.ciphertext.as_slice(), w.tag.as_slice()].concat());
                        let plain = Zeroizing::new(
                            m.cipher()
                                .decrypt(
                                    XNonce::from_slice(&w.nonce),
                                    Payload {
                                        msg: &sealed,
                                        aad: &wrap_aad(log_id, e.key_id),
                                    },
                                )
                                .map_err(|_| {
                                    corrupt(
                                        path,
                                        e.offset + ENTRY_HEADER_LEN as u64,
                                        format!(
                                            "expected key id {} to open with the master key (its check passed), \
                                             found a wrapped key that does not: the entry was changed",
                                            e.key_id
                                        ),
                                    )
                                })?,
                        );
                        sealed.zeroize();
                        let k = <[u8; DATA_KEY_LEN]>::try_from(plain.as_slice())
                            .map_err(|_| corrupt(path, e.offset, "expected a 32-byte key".to_owned()))?;
                        let mut stored = [0u8; 72];
                        stored.copy_from_slice(w.as_bytes());
                        (DataKey(k), Some(stored))
                    }
                };
                by_subject.insert(subject.to_owned(), slots.len());
                slots.push(Slot::Live { key, wrapped });
            }
        }
    }
    Ok(Parsed {
        generation: h.generation.get(),
        check,
        slots,
        by_subject,
        valid_len: f.valid_len,
        torn: f.torn,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
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
}
