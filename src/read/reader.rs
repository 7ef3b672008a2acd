//! The cross-process [`Reader`]: views of a log for a process that does not
//! hold the writer lock.
//!
//! Each [`Reader::view`] reads the head file first (spec 7), lists the
//! segments, opens the sealed ones it has not seen (header and seal checked),
//! validates the new bytes of the active segment by copying them (`active`)
//! and maps only what it validated. It never writes a file nor takes the
//! writer lock (a durable subscription opened from a reader writes its own
//! checkpoint file: `es::consumer`, spec 24).
//!
//! Invariants: sealed segments are contiguous in position (a gap is
//! corruption naming the segment); the view never delivers bytes past the
//! head's visible end; a log left unrecovered by a crash is said so
//! ([`LogView::unrecovered`]), never silently cut.

use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::keyring::KeyRing;
use crate::audit::subjects::MasterKey;
use crate::error::{Error, Result};
use crate::format::names::{LOCK_FILE, parse_segment_file_name, segment_file_name};
use crate::format::{HeadSlot, SEGMENT_BASE_POSITION_OFFSET, SEGMENT_HEADER_LEN};
use crate::index::streamtable::{STREAM_TABLE_FILE, StreamTable};
use crate::read::active::ActiveRead;
use crate::read::budget::{max_mapped, trim_mappings};
#[cfg(feature = "remote")]
use crate::read::cold::{ColdFront, ColdTier};
use crate::read::logview::{LogView, Unrecovered, ViewSegment};
use crate::read::sealed::{open_sealed_in, prefetch_open, read_segment_header};
use crate::storage::head;

/// Where the head file names its segment (the first slot's `segment_base`),
/// for the error when that segment does not exist.
const HEAD_SEGMENT_BASE_AT: u64 = offset_of!(HeadSlot, segment_base) as u64;

/// Reads a log without holding the writer lock, from any process.
///
/// Each call to [`Reader::view`] refreshes: it reads the head file to learn
/// what the writer has made visible (with `Durability::Fsync`, only what is
/// durable), validates the new bytes of the active segment by copying them,
/// and maps only what it validated.
///
/// A `Reader` is `Send + Sync`: [`Reader::view`] takes `&self` (the reader's
/// state is behind a mutex, held while a view is taken), so one reader may be
/// shared by threads or kept in a service's state.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    state: std::sync::Mutex<State>,
}

/// What a [`Reader`] keeps between views.
#[derive(Debug)]
struct State {
    dir: PathBuf,
    sealed: Vec<ViewSegment>,
    /// Next position after the sealed segments.
    sealed_next: u64,
    /// Boxed: a `Reader` stays small to move around.
    active: Option<Box<ActiveRead>>,
    /// At most this many sealed segments stay mapped between views.
    max_mapped: usize,
    /// The subject keys (spec 22), loaded when a view first unseals.
    keys: Arc<KeyRing>,
    /// Compaction records from this position on are looked at by the next
    /// view (`follow`).
    compaction_from: u64,
    /// Sealed segments kept in an object store, in front of the
    /// directory's (spec 23.7).
    #[cfg(feature = "remote")]
    cold: Option<ColdFront>,
}

/// The bases of the segment files in `dir`, sorted.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut bases = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Whether the segment file at `path` is no longer than a header and holds
/// no valid header: torn while being created. A failure to open or read it
/// is [`Error::Io`], not a torn file.
fn torn_at_creation(path: &Path, base: u64) -> Result<bool> {
    let file = crate::storage::io::open_read(path).map_err(|e| Error::io("open", path, e))?;
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    if len > SEGMENT_HEADER_LEN as u64 {
        return Ok(false);
    }
    match read_segment_header(&file, path, base) {
        Ok(_) => Ok(false),
        // An I/O failure says nothing about the header: not torn.
        Err(e @ Error::Io { .. }) => Err(e),
        Err(_) => Ok(true),
    }
}

impl Reader {
    /// Open the log in `dir` for reading. Never modifies anything and never
    /// takes the writer lock.
    pub fn open(dir: impl AsRef<Path>) -> Result<Reader> {
        let dir = dir.as_ref().to_owned();
        let _span = crate::trace::span!(DEBUG, "annal.reader_open", dir = %dir.display());
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotALog {
                    path: dir,
                    detail: "it is not a directory".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotALog {
                    path: dir,
                    detail: "it does not exist".into(),
                });
            }
            Err(e) => return Err(Error::io("stat", &dir, e)),
        }
        if list_segments(&dir)?.is_empty() {
            return Err(Error::NotALog {
                path: dir,
                detail: "it holds no segment files (*.seg)".into(),
            });
        }
        let state = State {
            sealed: Vec::new(),
            sealed_next: 0,
            active: None,
            max_mapped: max_mapped(),
            keys: Arc::new(KeyRing::reader(&dir, None)),
            compaction_from: 0,
            #[cfg(feature = "remote")]
            cold: None,
            dir: dir.clone(),
        };
        Ok(Reader {
            dir,
            state: std::sync::Mutex::new(state),
        })
    }

    /// The state, whatever a panicking holder left.
    fn state(&mut self) -> &mut State {
        self.state.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Unseal the events of subjects (spec 22) with the data keys of a key
    /// file wrapped by `key` (the master key the log's writer was given,
    /// [`Options::master_key`](crate::Options::master_key)). Without it, a
    /// wrapped key file is an error when a view first unseals a record.
    pub fn master_key(&mut self, key: MasterKey) -> &mut Self {
        let keys = Arc::new(KeyRing::reader(&self.dir, Some(key)));
        self.state().keys = keys;
        self
    }

    /// Read the sealed segments that `tier` holds below the directory's
    /// first segment as if they were in the directory (spec 23.7).
    #[cfg(feature = "remote")]
    pub(crate) fn set_cold(&self, tier: Arc<dyn ColdTier>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).cold = Some(ColdFront::new(tier));
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep at most `n` sealed segments (each with its index file) mapped
    /// between views (default 512): each view maps the segments it reads on
    /// first use, and holds them until it is dropped; this reader lets go of
    /// the least recently mapped beyond `n` when it takes the next view. For
    /// tests.
    #[doc(hidden)]
    pub fn set_max_mapped_segments(&mut self, n: usize) {
        self.state().max_mapped = n;
    }

    /// Refresh and return a view of everything currently visible.
    ///
    /// What is visible (spec 7): the segments before the head file's segment
    /// in full, and in the head's segment the complete batches up to the
    /// head's `visible_end`; with no valid head slot, every complete batch.
    /// Every batch of the active segment is validated (by copying it) before
    /// it is delivered.
    ///
    /// Damage is never a quiet end of the log: a batch that is not complete
    /// at an offset `X` below the active segment's durable boundary `B` (spec
    /// 5.1: the largest of 128, the head slot's `durable_end` if it names the
    /// segment, and the `durable_end` of every valid frame header in the
    /// segment, found past the damage by scanning) is [`Error::Corrupt`]
    /// naming the segment, the offset of the damage, `X` and `B`. Past `B` it
    /// is a torn or in-progress write, and the view ends before it.
    ///
    /// If no writer holds the log and it was not cleanly closed nor recovered
    /// since (a crash, a power cut), the files may hold events past what the
    /// head declares, which this view holds back: [`LogView::unrecovered`]
    /// then says from which position on the view cannot vouch for the log.
    /// A writer's [`Log::open`](crate::Log::open) (or `annal check --repair`)
    /// recovers it.
    ///
    /// Sealed segments are mapped when first read; the view keeps what it
    /// mapped until it is dropped, and this reader keeps at most 512 sealed
    /// segments mapped between views.
    ///
    /// A log whose first segment does not start at position 0 is read only
    /// if a retention record says the segments before it were removed (spec
    /// 3.9); otherwise the view is [`Error::Corrupt`] naming the missing
    /// first segment (unless the view is not yet recovered, when the record
    /// may lie past what it can vouch for).
    pub fn view(&self) -> Result<LogView> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).view()
    }
}

impl State {
    fn trim_mappings(&mut self) {
        trim_mappings(&mut self.sealed, self.max_mapped);
    }

    /// See [`Reader::view`]: [`State::view_checked`], again while log
    /// retention removes, from the front, a segment the check of the
    /// view's front was reading (its first records are read there).
    fn view(&mut self) -> Result<LogView> {
        let mut removed_ahead = 0u32;
        loop {
            match self.view_checked() {
                Err(Error::Io { source, path, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && path.extension().is_some_and(|e| e == "seg")
                        && removed_ahead < 10_000
                        && self.removed_from_front(&path) =>
                {
                    removed_ahead += 1;
                }
                r => return r,
            }
        }
    }

    /// A view whose front is checked (see [`Reader::view`]).
    fn view_checked(&mut self) -> Result<LogView> {
        let view = self.view_following()?;
        if view.unrecovered.is_some() || crate::read::front::check_front(&view, &self.dir).is_ok() {
            return Ok(view);
        }
        // Retention removes segments only after its record is visible: a
        // head read before the record was published is stale. Look again.
        let view = self.view_following()?;
        if view.unrecovered.is_none() {
            crate::read::front::check_front(&view, &self.dir)?;
        }
        Ok(view)
    }

    /// [`Reader::view_racing_retention`], again if a compaction replaced a
    /// sealed segment this reader holds (spec 3.10; see `follow`).
    fn view_following(&mut self) -> Result<LogView> {
        let first = self.sealed.is_empty() && self.compaction_from == 0;
        let view = self.view_racing_retention()?;
        if view.unrecovered.is_some() {
            return Ok(view);
        }
        // A first view opened every sealed segment itself: without a
        // compaction in flight there is nothing below its end to follow.
        if first && !crate::read::follow::compaction_traces(&self.dir, &self.sealed)? {
            self.compaction_from = view.next_position();
            return Ok(view);
        }
        let (changed, next) =
            crate::read::follow::follow_compactions(&self.dir, &mut self.sealed, &view, self.compaction_from)?;
        self.compaction_from = next;
        if changed {
            return self.view_racing_retention();
        }
        Ok(view)
    }

    /// [`Reader::view_once`], again if a segment listed was removed before
    /// it was opened (log retention runs while readers list, spec 3.9).
    ///
    /// A segment that is gone and below the first one listed now was
    /// removed from the front by retention: the view is taken again, as
    /// often as that happens (each time retention made progress; a busy
    /// writer with small segments removes one at every seal). A segment
    /// gone otherwise is looked for 3 times, then the error is returned.
    fn view_racing_retention(&mut self) -> Result<LogView> {
        let mut tries = 0;
        let mut removed_ahead = 0u32;
        loop {
            match self.view_once() {
                Err(Error::Io { source, path, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && path.extension().is_some_and(|e| e == "seg")
                        && (tries < 3 || (removed_ahead < 10_000 && self.removed_from_front(&path))) =>
                {
                    if self.removed_from_front(&path) {
                        removed_ahead += 1;
                    } else {
                        tries += 1;
                    }
                }
                r => return r,
            }
        }
    }

    /// Whether the segment file `path` lies below the first segment listed
    /// now (log retention removed it).
    fn removed_from_front(&self, path: &Path) -> bool {
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_file_name);
        match (base, list_segments(&self.dir).ok().and_then(|l| l.first().copied())) {
            (Some(b), Some(first)) => b < first,
            _ => false,
        }
    }

    fn view_once(&mut self) -> Result<LogView> {
        // A first view: what it reads, the head file included, asked for
        // at once (advice only: from a listing taken before the head is
        // read, which the listing below, taken after it, replaces).
        let (mut opened, ahead) = match self.active {
            None => {
                let listed = list_segments(&self.dir)?;
                match listed.split_last() {
                    Some((&last, sealed)) => (prefetch_open(&self.dir, sealed, Some(last)), sealed.to_vec()),
                    None => (Vec::new(), Vec::new()),
                }
            }
            Some(_) => (Vec::new(), Vec::new()),
        };
        // The head first: the writer creates a segment before any head slot
        // names it, so every segment the head names is in the listing after.
        let head = head::read(&self.dir)?;
        let bases = list_segments(&self.dir)?;
        let visible = self.visible_segments(head, &bases)?;
        let Some((&last, sealed)) = visible.split_last() else {
            return Ok(LogView::new(Vec::new(), 0, None));
        };
        // The files opened ahead serve only if they are the segments this
        // view opens.
        if ahead != sealed {
            opened.clear();
        }
        // Log retention (spec 3.9) removes segments from the front: the log
        // starts at the first segment listed. Views taken before keep the
        // segments they hold.
        let first = sealed.first().copied().unwrap_or(last);
        self.sealed.retain(|s| s.base >= first);
        if self.sealed.is_empty() {
            self.sealed_next = self.sealed_next.max(first);
        }
        self.open_new_sealed(sealed, opened)?;
        if self.active.as_ref().is_none_or(|a| a.base != last) {
            let active = ActiveRead::open(&self.dir, last)?;
            self.keys.set_log_id(active.log_id);
            self.active = Some(Box::new(active));
        }
        self.refresh_sealed_indexes();
        self.keys.refresh();
        let table = open_stream_table(&self.dir);
        let log_id = self.active.as_ref().map_or([0; 16], |a| a.log_id);
        let front = self.cold_below(first, log_id)?;
        let mut segs = self.sealed.clone();
        let Some(active) = self.active.as_mut() else {
            return Ok(LogView::new(segs, self.sealed_next, table)
                .with_keys(self.keys.clone())
                .with_front(front));
        };
        let (segment, writer) = active.refresh(&self.dir, head)?;
        let position = active.next_position;
        segs.push(segment);
        let mut view = LogView::new(segs, position, table)
            .with_keys(self.keys.clone())
            .with_front(front);
        view.unrecovered = self.unrecovered(head, bases.last().copied(), position, writer)?;
        Ok(view)
    }

    /// The sealed segments kept in an object store below `first`, the
    /// directory's first segment (spec 23.7).
    #[cfg(feature = "remote")]
    fn cold_below(&mut self, first: u64, log_id: [u8; 16]) -> Result<Vec<ViewSegment>> {
        match self.cold.as_mut() {
            Some(c) => c.below(Some(first), log_id),
            None => Ok(Vec::new()),
        }
    }

    /// Without the feature `remote`, there are none.
    #[cfg(not(feature = "remote"))]
    fn cold_below(&mut self, _first: u64, _log_id: [u8; 16]) -> Result<Vec<ViewSegment>> {
        Ok(Vec::new())
    }

    /// The bases of the segments a view shows: all, or up to the head's
    /// segment (which must exist), less a newest segment torn at creation.
    fn visible_segments(&self, head: Option<head::Head>, bases: &[u64]) -> Result<Vec<u64>> {
        // A head naming a segment below the first one is from before log
        // retention removed it (spec 3.9): it vouches for nothing left.
        let head = head.filter(|h| bases.first().is_none_or(|&f| h.segment_base >= f));
        if let Some(h) = head
            && bases.binary_search(&h.segment_base).is_err()
        {
            return Err(Error::Corrupt {
                path: self.dir.join(head::HEAD_FILE),
                offset: HEAD_SEGMENT_BASE_AT,
                detail: format!(
                    "the head names segment {}, which does not exist",
                    segment_file_name(h.segment_base)
                ),
            });
        }
        // Segments visible: all, or up to the head's segment.
        let mut visible: Vec<u64> = match head {
            Some(h) => bases.iter().copied().filter(|&b| b <= h.segment_base).collect(),
            None => bases.to_vec(),
        };
        // Without a head to rule it out, a newest segment torn while being
        // created (no whole header: a power cut during a roll) holds nothing;
        // the next writer open rewrites it (spec 6, step 4). Not visible, so
        // that the segments before it stay readable.
        if head.is_none()
            && let [.., _, newest] = visible[..]
            && torn_at_creation(&self.dir.join(segment_file_name(newest)), newest)?
        {
            visible.pop();
        }
        Ok(visible)
    }

    /// Open the sealed segments of `sealed` this reader has not opened yet,
    /// checking that each starts where the one before ended; a segment that
    /// was active and is now sealed stops being the active one.
    fn open_new_sealed(&mut self, sealed: &[u64], opened: Vec<Option<std::fs::File>>) -> Result<()> {
        let from = self.sealed.len().min(sealed.len());
        let mut opened = opened.into_iter().skip(from);
        for &base in &sealed[from..] {
            if base != self.sealed_next {
                return Err(Error::Corrupt {
                    path: self.dir.join(segment_file_name(base)),
                    offset: SEGMENT_BASE_POSITION_OFFSET as u64,
                    detail: format!(
                        "expected a segment starting at position {}, found {base}",
                        self.sealed_next
                    ),
                });
            }
            let (seg, next, _) = open_sealed_in(&self.dir, base, opened.next().flatten())?;
            self.sealed.push(seg);
            self.sealed_next = next;
            if self.active.as_ref().is_some_and(|a| a.base == base) {
                self.active = None;
            }
        }
        Ok(())
    }

    /// Switch sealed segments whose index file was missing to the file if
    /// it exists now, then keep the mappings within budget.
    fn refresh_sealed_indexes(&mut self) {
        for seg in &self.sealed {
            if seg.index.is_missing()
                && let Ok(bytes) = seg.bytes()
            {
                seg.index.retry_disk(bytes);
            }
        }
        self.trim_mappings();
    }

    /// The not-yet-recovered signal of a view just taken (see
    /// [`LogView::unrecovered`]): `head` is the head's current slot, `newest`
    /// the newest segment file, `position` the view's next position.
    fn unrecovered(
        &self,
        head: Option<head::Head>,
        newest: Option<u64>,
        position: u64,
        writer: Option<bool>,
    ) -> Result<Option<Unrecovered>> {
        let Some(active) = self.active.as_ref() else {
            return Ok(None);
        };
        let head_names_active = head.is_some_and(|h| h.segment_base == active.base);
        // Bytes past what the view delivers in the segment it reads last, or
        // no head slot vouching for that segment while it holds frames.
        let mut doubt = (active.file_len > active.validated_end
            || (!head_names_active && active.file_len > SEGMENT_HEADER_LEN as u64))
            .then(|| (active.path.to_path_buf(), active.validated_end));
        // A newer segment the (stale) head does not name yet, holding frames.
        if doubt.is_none()
            && let Some(n) = newest.filter(|&n| n > active.base)
        {
            let path = self.dir.join(segment_file_name(n));
            let len = match std::fs::symlink_metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(Error::io("stat", &path, e)),
            };
            if len > SEGMENT_HEADER_LEN as u64 {
                doubt = Some((path, SEGMENT_HEADER_LEN as u64));
            }
        }
        let Some((segment, offset)) = doubt else {
            return Ok(None);
        };
        // Probed last: a writer that took the lock since recovered the log
        // (or is appending, which is normal).
        if writer.unwrap_or_else(|| crate::storage::io::lock_held(&self.dir.join(LOCK_FILE))) {
            return Ok(None);
        }
        Ok(Some(Unrecovered {
            segment,
            offset,
            position,
        }))
    }
}

/// The stream table, if it exists and is intact: a damaged (or unreadable)
/// table is not used, and lookups search the segments' indexes instead,
/// which gives the same answers more slowly.
fn open_stream_table(dir: &Path) -> Option<Arc<StreamTable>> {
    match StreamTable::open(&dir.join(STREAM_TABLE_FILE)) {
        Ok(t) => t.map(Arc::new),
        Err(_) => None,
    }
}
