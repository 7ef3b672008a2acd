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

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zerocopy::{FromBytes, IntoBytes};
use zeroize::{Zeroize, Zeroizing};

use crate::audit::random::Random;
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

    /// Read a key written by [`MasterKey::write_file`]: 64 hexadecimal
    /// digits (and an optional newline), in a file no one but its owner may
    /// read (the rules of the chain key files, spec 21.4).
    pub fn from_file(path: impl AsRef<Path>) -> Result<MasterKey> {
        crate::audit::chain::read_hex_file(path.as_ref(), "master key", true).map(MasterKey)
    }

    /// Write the key as 64 hexadecimal digits and a newline to a new file,
    /// readable and writable by its owner only (mode 0600 on Unix). Fails if
    /// the file exists. Keep it outside the log directory and its backups.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::audit::chain::write_hex_file(path.as_ref(), &self.0, 0o600)
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

pub use crate::format::sealed::KeyId;

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
/// twice with one key: take each from [`SubjectKeys::nonces`].
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
/// random nonces do not collide in practice). The writer takes a batch's
/// nonces at once ([`SubjectKeys::nonces`]).
#[cfg(test)]
pub(crate) fn new_nonce() -> Result<Nonce> {
    let mut n = [0u8; NONCE_LEN];
    Random::Os.fill(&mut n)?;
    Ok(n)
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

    /// How many live keys there are.
    pub(crate) fn live_count(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, Slot::Live { .. })).count()
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
                    Some(m) => Some(wrap(&self.random, m, &self.log_id, id, &key)?),
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
                    Some(m) => Some(check_for(&self.random, m, &self.log_id)?),
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
    #[cfg(test)]
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

    /// Fresh nonces for `n` encryptions, from one call to the generator.
    pub(crate) fn nonces(&self, n: usize) -> Result<Vec<Nonce>> {
        let mut bytes = Zeroizing::new(vec![0u8; n * NONCE_LEN]);
        self.random.fill(&mut bytes)?;
        Ok(bytes
            .chunks_exact(NONCE_LEN)
            .map(|c| {
                let mut a = [0u8; NONCE_LEN];
                a.copy_from_slice(c);
                a
            })
            .collect())
    }

    /// Fresh keys and nonces from `seed` from now on (tests and golden
    /// vectors: deterministic bytes).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn use_fixed_random(&mut self, seed: u64) {
        self.random = Random::Fixed {
            seed,
            counter: std::sync::atomic::AtomicU64::new(0),
        };
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
        k.use_fixed_random(seed);
        Ok(k)
    }
}

/// `key` wrapped by the master key: nonce, ciphertext, tag (spec 22.3).
fn wrap(random: &Random, master: &MasterKey, log_id: &[u8; 16], id: u64, key: &DataKey) -> Result<[u8; 72]> {
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
fn check_for(random: &Random, master: &MasterKey, log_id: &[u8; 16]) -> Result<(Nonce, [u8; TAG_LEN])> {
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
mod tests;
