//! A local read-only copy of a remote log (spec 23.6): what `annal follow`
//! keeps up to date and [`RemoteReader`](super::RemoteReader) reads from.
//!
//! The replica is an ordinary log directory that this process writes as its
//! writer would: it holds the writer lock while it lives (no `Log` may open
//! it for writing meanwhile), adds bytes only in whole shipped parts and
//! whole sealed segments, makes them durable, and only then moves the head
//! file (spec 5.2) over them, so that a [`Reader`](crate::Reader) in any
//! process sees complete batches only and its subscriptions wake on the
//! head as they do for a live writer.
//!
//! Invariants: every byte written is a byte of an object the manifest names,
//! checked against its length and BLAKE3 first; a file appears whole (a
//! temporary file renamed into place) or grows at its end; a local byte that
//! differs from the remote log's is never overwritten silently (the round
//! fails naming the file and offset: the replica diverged); nothing is
//! written outside the replica's directory, and a directory that is not
//! empty is used only if it is a replica (it holds [`REPLICA_FILE`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::names::{index_file_name, segment_file_name};
use crate::read::view::{list_segments, read_segment_header};
use crate::storage::head::{self, Head, HeadWriter};
use crate::storage::io::{Io, StdIo};
use crate::storage::writer_lock::WriterLock;

use super::RemoteLog;
use super::manifest::{Manifest, Shipped};
use super::transfer::to_file;

/// The file that marks a directory as a replica (it holds the remote log's
/// address, for people): `annal follow` uses a directory that holds files
/// only if this one is among them.
pub const REPLICA_FILE: &str = "annal.replica";

/// The temporary name a whole file is written under before it is renamed
/// into place (removed when a replica opens).
const REPLICA_TMP: &str = "annal.replica.tmp";

/// What one round of [`Replica::sync_once`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaReport {
    /// The manifest version the replica now holds (0: nothing was shipped
    /// to the remote log yet).
    pub manifest_seq: u64,
    /// Objects read from the store this round.
    pub objects: usize,
    /// Bytes written to the replica this round.
    pub bytes: u64,
    /// The position after the last batch the replica holds.
    pub next_position: u64,
}

/// One segment file of the replica.
#[derive(Debug, Clone, Copy)]
struct Local {
    base: u64,
    len: u64,
    /// Whether it is a whole sealed segment of the manifest (else it is a
    /// copy of the active segment, as far as it was shipped).
    sealed: bool,
}

/// A local read-only copy of a remote log, kept up to date by
/// [`sync_once`](Replica::sync_once) or [`follow`](Replica::follow).
///
/// Read it with a [`Reader`](crate::Reader) on [`dir`](Replica::dir), from
/// this process or any other; its subscriptions see each round's events.
///
/// ```no_run
/// # async fn demo() -> annal::Result<()> {
/// use annal::remote::{Follow, RemoteLog, Replica};
/// let remote = RemoteLog::open("s3://my-bucket/orders")?;
/// let mut replica = Replica::open(remote, "./orders-replica")?;
/// let round = replica.sync_once().await?;
/// println!("positions below {} are here", round.next_position);
/// let reader = annal::Reader::open("./orders-replica")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Replica {
    remote: RemoteLog,
    dir: PathBuf,
    io: StdIo,
    _lock: WriterLock,
    head: Option<HeadWriter>,
    local: Vec<Local>,
    /// The log's id and format version (from the first segment's header).
    log: Option<([u8; 16], u16)>,
    /// The manifest version copied last (0: none).
    seq: u64,
    next_position: u64,
    /// Whether the replica keeps every sealed segment (else only the
    /// newest segment: a remote reader's partial copy, whose sealed
    /// segments are read from the store, spec 23.7).
    whole: bool,
    /// The sealed segments of the manifest copied last.
    sealed: Vec<super::SealedEntry>,
}

impl Replica {
    /// Open (or create) the replica of `remote` in `dir`: created if
    /// missing; a directory holding files must be a replica already (it
    /// holds [`REPLICA_FILE`]). Takes the writer lock of `dir` for the
    /// replica's life ([`Error::Locked`] if a writer or another replica
    /// holds it). Bytes a crash left past the head file's durable end are
    /// cut (they were never announced to readers).
    pub fn open(remote: RemoteLog, dir: impl AsRef<Path>) -> Result<Replica> {
        let dir = dir.as_ref().to_owned();
        let io = StdIo;
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                return Err(Error::NotALog {
                    path: dir,
                    detail: format!(
                        "expected a directory for the replica, found a {}",
                        crate::storage::io::file_kind(&m.file_type())
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
            }
            Err(e) => return Err(Error::io("stat", &dir, e)),
        }
        let marker = dir.join(REPLICA_FILE);
        if std::fs::symlink_metadata(&marker).is_err() {
            let mut entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
            if entries.next().is_some() {
                return Err(Error::NotALog {
                    path: dir,
                    detail: format!(
                        "expected an empty directory or a replica (a directory holding {REPLICA_FILE}), found \
                         other files: a replica is never made over a log"
                    ),
                });
            }
            let text = format!("a read-only replica of {}, kept by annal follow\n", remote.url());
            crate::storage::io::write_derived(&io, &dir, &marker, text.as_bytes())?;
        }
        let lock = crate::storage::writer_lock::take_lock(&dir, &io)?;
        let tmp = dir.join(REPLICA_TMP);
        if std::fs::symlink_metadata(&tmp).is_ok() {
            io.remove(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
        }
        let mut replica = Replica {
            remote,
            dir,
            io,
            _lock: lock,
            head: None,
            local: Vec::new(),
            log: None,
            seq: 0,
            next_position: 0,
            whole: true,
            sealed: Vec::new(),
        };
        replica.scan()?;
        Ok(replica)
    }

    /// Keep only the newest segment from the next round on: the sealed
    /// segments below it are removed from the directory once the head no
    /// longer names them, and are read from the store (spec 23.7). The
    /// directory is then no log by itself: a reader of it needs the store
    /// ([`RemoteReader`](super::RemoteReader)).
    pub(crate) fn partial(mut self) -> Replica {
        self.whole = false;
        self
    }

    /// The sealed segments of the manifest copied last.
    pub(crate) fn sealed(&self) -> &[super::SealedEntry] {
        &self.sealed
    }

    /// The replica's directory (open a [`Reader`](crate::Reader) on it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the replica holds no segment yet (nothing was shipped).
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    /// The remote log this replica copies.
    pub fn remote(&self) -> &RemoteLog {
        &self.remote
    }

    /// What the directory holds: its segments (every one but the last is
    /// sealed; whether the last is, the next manifest says), the log's id,
    /// and the head file, whose durable end cuts what a crash left past it.
    fn scan(&mut self) -> Result<()> {
        let bases = list_segments(&self.dir)?;
        let current = head::read(&self.dir)?;
        for (i, &base) in bases.iter().enumerate() {
            let path = self.dir.join(segment_file_name(base));
            let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
            let mut len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
            if i == 0 {
                let h = read_segment_header(&file, &path, base)?;
                self.log = Some((h.log_id, h.format_version.get()));
            }
            let last = i + 1 == bases.len();
            if last && let Some(h) = current.filter(|h| h.segment_base == base && h.durable_end < len) {
                let f = self.io.open(&path).map_err(|e| Error::io("open", &path, e))?;
                f.truncate(h.durable_end).map_err(|e| Error::io("truncate", &path, e))?;
                f.sync().map_err(|e| Error::io("fsync", &path, e))?;
                len = h.durable_end;
            }
            self.local.push(Local {
                base,
                len,
                sealed: !last,
            });
        }
        if let Some(h) = current {
            self.next_position = h.next_position;
            if let Some((_, version)) = self.log {
                self.head = Some(HeadWriter::reuse(&self.io, &self.dir, h, version)?);
            }
        }
        Ok(())
    }

    /// One round: read the newest manifest and copy what the replica lacks
    /// (new sealed segments and index files, segments a compaction rewrote,
    /// the rest of a segment that was sealed, the active segment's new
    /// parts), then move the head file over it.
    pub async fn sync_once(&mut self) -> Result<ReplicaReport> {
        let Some(m) = self.remote.latest_manifest_from(self.seq.max(1)).await? else {
            return Ok(self.report(0, 0));
        };
        if m.seq == self.seq {
            return Ok(self.report(0, 0));
        }
        let id = crate::audit::chain::hex(&self.log.map_or([0; 16], |(id, _)| id));
        if self.log.is_some() && id != m.log_id {
            return Err(self.diverged(
                &m,
                format!(
                    "expected log id {id} (the replica's segments), found {} in the manifest",
                    m.log_id
                ),
            ));
        }
        let (mut objects, mut bytes) = (0usize, 0u64);
        // A partial replica copies the newest segment only.
        let newest = match m.active.as_ref().filter(|a| !a.parts.is_empty()) {
            Some(a) => Some(a.base),
            None => m.sealed.last().map(|e| e.base),
        };
        let whole = self.whole;
        let below = |base: u64| !whole && newest.is_some_and(|n| base < n);
        for e in &m.sealed {
            let at = self.local.iter().position(|l| l.base == e.base);
            if below(e.base) {
                // Sealed in the store: read from there; the copy goes once
                // the head no longer names it.
                if let Some(i) = at {
                    self.local[i].sealed = true;
                }
                continue;
            }
            let (o, b) = match at {
                Some(i) if self.local[i].sealed && self.local[i].len == e.segment.len => {
                    self.ensure_index(e.base, e.index.as_ref(), false).await?
                }
                Some(i) if self.local[i].sealed => self.replace_rewritten(i, e).await?,
                Some(i) => self.complete_sealed(i, e, &m).await?,
                None => {
                    if let Some(last) = self.local.last().filter(|l| !l.sealed || l.base > e.base) {
                        return Err(self.diverged(
                            &m,
                            format!(
                                "the manifest names a sealed segment based at {} after the replica's segment \
                                 based at {} it does not name",
                                e.base, last.base
                            ),
                        ));
                    }
                    self.install(&segment_file_name(e.base), &[&e.segment]).await?;
                    self.note_log(e.base)?;
                    self.local.push(Local {
                        base: e.base,
                        len: e.segment.len,
                        sealed: true,
                    });
                    let (o, b) = self.ensure_index(e.base, e.index.as_ref(), true).await?;
                    (o + 1, b + e.segment.len)
                }
            };
            objects += o;
            bytes += b;
        }
        if let Some(a) = m.active.as_ref().filter(|a| !a.parts.is_empty()) {
            let (o, b) = self.copy_active(a, &m).await?;
            objects += o;
            bytes += b;
        }
        self.seq = m.seq;
        self.next_position = m.next_position;
        self.publish()?;
        if let Some(n) = newest.filter(|_| !self.whole) {
            self.drop_below(n)?;
        }
        self.sealed = m.sealed;
        Ok(self.report(objects, bytes))
    }

    /// [`sync_once`](Replica::sync_once) for callers without a tokio
    /// runtime: runs it on a current-thread runtime of its own.
    pub fn sync_once_blocking(&mut self) -> Result<ReplicaReport> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime for", &self.dir, e))?;
        rt.block_on(self.sync_once())
    }

    /// Copy a round every `follow.interval` until `stop` completes; a round
    /// that fails on the store, the network or a timeout is retried with
    /// backoff, and the replica stops with the error only when it diverged
    /// from the remote log or its own files fail. `each` sees every round.
    pub async fn follow(
        &mut self,
        follow: super::Follow,
        each: impl FnMut(&Result<ReplicaReport>),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        super::rounds(self, follow, each, stop).await
    }

    fn report(&self, objects: usize, bytes: u64) -> ReplicaReport {
        ReplicaReport {
            manifest_seq: self.seq,
            objects,
            bytes,
            next_position: self.next_position,
        }
    }

    /// The error for a replica whose files disagree with manifest `m`.
    fn diverged(&self, m: &Manifest, detail: String) -> Error {
        Error::Diverged {
            path: self.dir.clone(),
            url: self.remote.url().to_owned(),
            detail: format!("{detail} (manifest {})", m.seq),
        }
    }

    /// Learn the log's id and format version from the header of the first
    /// segment the replica installed (based at `base`).
    fn note_log(&mut self, base: u64) -> Result<()> {
        if self.log.is_none() {
            let path = self.dir.join(segment_file_name(base));
            let file = crate::storage::io::open_read(&path).map_err(|e| Error::io("open", &path, e))?;
            let h = read_segment_header(&file, &path, base)?;
            self.log = Some((h.log_id, h.format_version.get()));
        }
        Ok(())
    }

    /// Write the index file of the segment at `base` if the manifest has one
    /// and the replica lacks it (or always, with `replace`).
    async fn ensure_index(&mut self, base: u64, index: Option<&Shipped>, replace: bool) -> Result<(usize, u64)> {
        let Some(index) = index else { return Ok((0, 0)) };
        let name = index_file_name(base);
        if !replace && std::fs::symlink_metadata(self.dir.join(&name)).is_ok() {
            return Ok((0, 0));
        }
        self.install(&name, &[index]).await?;
        Ok((1, index.len))
    }

    /// A sealed segment the replica holds whole, rewritten by a compaction
    /// (another length): its index file goes first (a crash leaves it
    /// missing, never stale), then the rewrite is renamed over it, as the
    /// writer swaps it (spec 3.10).
    async fn replace_rewritten(&mut self, i: usize, e: &super::SealedEntry) -> Result<(usize, u64)> {
        let idx = self.dir.join(index_file_name(e.base));
        if std::fs::symlink_metadata(&idx).is_ok() {
            self.io.remove(&idx).map_err(|err| Error::io("remove", &idx, err))?;
            self.io
                .sync_dir(&self.dir)
                .map_err(|err| Error::io("fsync directory", &self.dir, err))?;
        }
        self.install(&segment_file_name(e.base), &[&e.segment]).await?;
        self.local[i].len = e.segment.len;
        let (o, b) = self.ensure_index(e.base, e.index.as_ref(), true).await?;
        Ok((o + 1, b + e.segment.len))
    }

    /// The replica's copy of the active segment was sealed in the store:
    /// its bytes must be the start of the sealed object's; the rest is
    /// appended.
    async fn complete_sealed(&mut self, i: usize, e: &super::SealedEntry, m: &Manifest) -> Result<(usize, u64)> {
        let l = self.local[i];
        if i + 1 != self.local.len() || l.len > e.segment.len {
            return Err(self.diverged(
                m,
                format!(
                    "the replica's copy of segment {} is {} bytes long and not its last, but the sealed \
                     segment is {} bytes",
                    l.base, l.len, e.segment.len
                ),
            ));
        }
        // The object streams by: its first `l.len` bytes are compared with
        // the replica's, the rest appended (undone if the object fails its
        // checks at the end).
        let path = self.dir.join(segment_file_name(l.base));
        let file = crate::storage::io::open_read(&path).map_err(|err| Error::io("open", &path, err))?;
        let out = self.io.open(&path).map_err(|err| Error::io("open", &path, err))?;
        let mut at = 0u64;
        let mut differs: Option<u64> = None;
        let mut here = Vec::new();
        let copied = self
            .remote
            .download(&e.segment, |chunk| {
                let n = chunk.len() as u64;
                let held = l.len.saturating_sub(at).min(n);
                if held > 0 && differs.is_none() {
                    here.resize(usize::try_from(held).unwrap_or(0), 0);
                    crate::read::view::pread(&file, &mut here, at, &path)?;
                    let theirs = chunk.get(..here.len()).unwrap_or_default();
                    differs = here.iter().zip(theirs).position(|(a, b)| a != b).map(|k| at + k as u64);
                }
                if held < n {
                    let rest = chunk.get(usize::try_from(held).unwrap_or(0)..).unwrap_or_default();
                    out.write_at(at + held, rest)
                        .map_err(|err| Error::io("write", &path, err))?;
                }
                at += n;
                Ok(())
            })
            .await;
        if let Err(err) = copied.and_then(|()| out.sync().map_err(|err| Error::io("fsync", &path, err))) {
            let _ = out.truncate(l.len);
            return Err(err);
        }
        if let Some(at) = differs {
            let _ = out.truncate(l.len);
            return Err(Error::Diverged {
                path,
                url: self.remote.url().to_owned(),
                detail: format!(
                    "its byte {at} differs from the sealed segment {} (manifest {})",
                    e.segment.object, m.seq
                ),
            });
        }
        let rest = e.segment.len - l.len;
        self.local[i] = Local {
            base: l.base,
            len: e.segment.len,
            sealed: true,
        };
        let (o, b) = self.ensure_index(l.base, e.index.as_ref(), true).await?;
        Ok((o + 1, b + rest))
    }

    /// Copy the active segment's parts the replica lacks: appended to its
    /// copy, or a new file holding them all.
    async fn copy_active(&mut self, a: &super::ActiveEntry, m: &Manifest) -> Result<(usize, u64)> {
        let (mut objects, mut bytes) = (0usize, 0u64);
        match self.local.last().copied() {
            Some(l) if l.base == a.base && !l.sealed => {
                let from = a.parts.iter().position(|p| p.from == l.len);
                if from.is_none() && l.len != a.end() {
                    return Err(self.diverged(
                        m,
                        format!(
                            "the replica's copy of the active segment {} is {} bytes long, which is not where a \
                             part of the manifest starts or ends (it ends at {})",
                            a.base,
                            l.len,
                            a.end()
                        ),
                    ));
                }
                let path = self.dir.join(segment_file_name(a.base));
                let out = self.io.open(&path).map_err(|e| Error::io("open", &path, e))?;
                for p in a.parts.iter().skip(from.unwrap_or(a.parts.len())) {
                    let copied = self.remote.download(&p.shipped, to_file(&*out, &path, p.from)).await;
                    if let Err(e) = copied.and_then(|()| out.sync().map_err(|e| Error::io("fsync", &path, e))) {
                        let _ = out.truncate(p.from);
                        return Err(e);
                    }
                    objects += 1;
                    bytes += p.shipped.len;
                    if let Some(last) = self.local.last_mut() {
                        last.len = p.to;
                    }
                }
            }
            Some(l) if l.base >= a.base => {
                return Err(self.diverged(
                    m,
                    format!(
                        "the manifest's active segment is based at {}, but the replica holds segment {} {}",
                        a.base,
                        l.base,
                        if l.sealed { "sealed" } else { "as its active one" }
                    ),
                ));
            }
            Some(l) if !l.sealed => {
                return Err(self.diverged(
                    m,
                    format!(
                        "the replica's active segment {} is not among the manifest's sealed ones",
                        l.base
                    ),
                ));
            }
            _ => {
                let parts: Vec<&Shipped> = a.parts.iter().map(|p| &p.shipped).collect();
                self.install(&segment_file_name(a.base), &parts).await?;
                self.note_log(a.base)?;
                objects += parts.len();
                bytes += a.end();
                self.local.push(Local {
                    base: a.base,
                    len: a.end(),
                    sealed: false,
                });
            }
        }
        Ok((objects, bytes))
    }

    /// Write the objects `from`, one after the other, whole under `name`: a
    /// temporary file, fsynced, renamed into place, the directory fsynced.
    /// Each object streams into the file and is checked as it arrives.
    async fn install(&self, name: &str, from: &[&Shipped]) -> Result<()> {
        let tmp = self.dir.join(REPLICA_TMP);
        let _ = self.io.remove(&tmp);
        let f = self.io.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let mut at = 0u64;
        for s in from {
            self.remote.download(s, to_file(&*f, &tmp, at)).await?;
            at += s.len;
        }
        f.sync().map_err(|e| Error::io("fsync", &tmp, e))?;
        drop(f);
        let path = self.dir.join(name);
        self.io.rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    /// Remove the segments (and index files) below `newest` from a partial
    /// replica (after the head moved past them: readers of the store find
    /// them there).
    fn drop_below(&mut self, newest: u64) -> Result<()> {
        let gone: Vec<u64> = self.local.iter().filter(|l| l.base < newest).map(|l| l.base).collect();
        if gone.is_empty() {
            return Ok(());
        }
        for base in &gone {
            for path in [
                self.dir.join(segment_file_name(*base)),
                self.dir.join(index_file_name(*base)),
            ] {
                match self.io.remove(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &path, e)),
                }
            }
        }
        self.local.retain(|l| l.base >= newest);
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    /// Move the head file over what the replica now holds: its last
    /// segment, whole, durable and visible (written after the bytes it
    /// names were made durable; fsynced, so readers of other processes and
    /// the next open agree).
    fn publish(&mut self) -> Result<()> {
        let (Some(last), Some((_, version))) = (self.local.last().copied(), self.log) else {
            return Ok(());
        };
        let h = Head {
            sequence: 0,
            segment_base: last.base,
            durable_end: last.len,
            visible_end: last.len,
            next_position: self.next_position,
        };
        match self.head.as_mut() {
            Some(w) if w.already_says(&h) => return Ok(()),
            Some(w) => w.write(h)?,
            None => {
                self.head = Some(HeadWriter::create(&self.io, &self.dir, h, version)?);
                return Ok(());
            }
        }
        self.head.as_ref().map_or(Ok(()), HeadWriter::sync)
    }
}

impl super::Rounds for Replica {
    type Report = ReplicaReport;

    async fn round(&mut self) -> Result<ReplicaReport> {
        self.sync_once().await
    }

    /// The replica diverged, or its own files fail: copying more would not
    /// help. The store, the network or a timeout is retried.
    fn fatal(e: &Error) -> bool {
        matches!(
            e,
            Error::Diverged { .. } | Error::Corrupt { .. } | Error::NotALog { .. } | Error::Io { .. }
        )
    }
}
