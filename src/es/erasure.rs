//! Erasing a subject (spec 22): [`Log::erase_subject`], the log's key ring
//! first, then what snapshots hold of the subject.
//!
//! Invariant: when `erase_subject` returns `Ok`, the subject's key is gone
//! from `annal.keys` (durably) and from every view of this process, so
//! every event sealed with it reads as erased; and no snapshot file names an
//! erased key (spec 20.6): each one was removed, and the removals made
//! durable, under the lock every snapshot save of this process takes, so a
//! save racing the erasure either is removed here or removes its own file.

use crate::error::Result;
use crate::es::snapshot::SnapshotStore;
use crate::format::sealed::KeyId;
use crate::writer::Log;

impl Log {
    /// Erase `subject` (crypto-shredding, spec 22): its data key is
    /// destroyed durably (`annal.keys` replaced atomically), so every event
    /// that names it reads as erased from now on: the envelope (position,
    /// stream, version, type, time, id) stays, payload and metadata are gone
    /// ([`LogView::unseal`](crate::LogView::unseal), [`crate::Unsealed::is_erased`]).
    /// The audit chain still verifies: it covers the ciphertext.
    ///
    /// Returns the erased key's id, or `None` if the subject had no live key
    /// (never named, or erased already). A subject named again after its
    /// erasure gets a new key; its earlier events stay erased.
    ///
    /// What it does not reach: copies of `annal.keys` made before (backups,
    /// file system blocks) and processes that loaded the key before (a
    /// [`Reader`](crate::Reader) in another process reloads the keys when
    /// it meets a key id it does not hold, not on every read). See spec
    /// 22.7.
    pub fn erase_subject(&self, subject: &str) -> Result<Option<KeyId>> {
        Ok(self.erase_subjects(&[subject])?.into_iter().next().flatten())
    }

    /// [`Log::erase_subject`] of several subjects at once (one replace of
    /// the key file): each one's erased key id, in the order given.
    ///
    /// Then the snapshots (spec 20.6): every snapshot file of every stream
    /// whose key list names an erased key (of these subjects or of any
    /// erased before) is removed, with damaged version 2 files and leftover
    /// temp files of saves, and the `snapshots/` folder fsynced, before it
    /// returns. Only headers and key lists are read. If that fails (an I/O
    /// error is returned), the keys are erased all the same and loads skip
    /// the files that remain; calling it again, even with no subjects
    /// (`erase_subjects(&[])`), removes them.
    pub fn erase_subjects(&self, subjects: &[&str]) -> Result<Vec<Option<KeyId>>> {
        let erased = self.erase_keys(subjects)?;
        let view = self.view()?;
        let ring = view.keys()?;
        SnapshotStore::new(self.dir(), self.io().clone()).remove_erased(&|k| ring.is_erased(k))?;
        Ok(erased)
    }
}
