//! Owning forms of a view's reads: [`LogView::into_read_all`] and its
//! siblings consume a view (a cheap clone of one, usually) and yield
//! [`OwnedRecord`]s, so the iterator is `'static` and `Send`: it can be
//! returned from a function, moved into a task or turned into a response
//! body while the borrowing iterators ([`LogView::read_all`], ...) cannot
//! outlive their view.
//!
//! Invariants: the iterator reads through the borrowing iterator of the same
//! query in chunks of at most [`CHUNK`] records, resuming each chunk from a
//! cursor just past the last record taken (a position, or a stream version),
//! so it yields exactly the records, in the order, that the borrowing
//! iterator would; records are unsealed as [`OwnedRecord`]s of
//! subscriptions are; after an error it ends.

use std::collections::VecDeque;

use crate::error::Result;
use crate::read::logview::LogView;
use crate::read::subscription::OwnedRecord;
use crate::types::{Direction, StreamPosition};

/// Records copied out of the view per chunk (bounds the iterator's memory).
const CHUNK: usize = 1024;

#[derive(Debug)]
enum Query {
    All,
    Category(String),
    EventType(String),
    Stream {
        name: String,
        dir: Direction,
        /// How many records may still be yielded.
        left: u64,
    },
}

/// An owning iterator over records of a [`LogView`]: see
/// [`LogView::into_read_all`].
#[derive(Debug)]
pub struct IntoRecords {
    view: LogView,
    query: Query,
    /// The next position (or for a stream, version) to read from.
    cursor: u64,
    buffered: VecDeque<OwnedRecord>,
    /// Nothing is left to read past `buffered`.
    done: bool,
}

impl LogView {
    /// [`LogView::read_all`] as an owning iterator of [`OwnedRecord`]s
    /// (unsealed): it keeps the view, so it outlives the borrow.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, IntoRecords, Log};
    /// fn events_of(log: &Log) -> annal::Result<IntoRecords> {
    ///     Ok(log.view()?.into_read_all(0))
    /// }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path())?;
    /// log.append("order-1", ExpectedVersion::Any, &[EventData::new("Placed", b"{}")])?;
    /// let all = std::thread::spawn({
    ///     let events = events_of(&log)?;
    ///     move || events.map(|r| r.map(|r| r.event_type)).collect::<annal::Result<Vec<_>>>()
    /// });
    /// assert_eq!(all.join().unwrap()?, ["Placed"]);
    /// # Ok(()) }
    /// ```
    pub fn into_read_all(self, from: u64) -> IntoRecords {
        IntoRecords::new(self, Query::All, from)
    }

    /// [`LogView::read_category`] as an owning iterator (see
    /// [`LogView::into_read_all`]).
    pub fn into_read_category(self, category: &str, from: u64) -> IntoRecords {
        IntoRecords::new(self, Query::Category(category.to_owned()), from)
    }

    /// [`LogView::read_event_type`] as an owning iterator (see
    /// [`LogView::into_read_all`]).
    pub fn into_read_event_type(self, event_type: &str, from: u64) -> IntoRecords {
        IntoRecords::new(self, Query::EventType(event_type.to_owned()), from)
    }

    /// [`LogView::read_stream`] as an owning iterator (see
    /// [`LogView::into_read_all`]).
    pub fn into_read_stream(
        self,
        stream: &str,
        from: impl Into<StreamPosition>,
        dir: Direction,
        max_count: u64,
    ) -> IntoRecords {
        let query = Query::Stream {
            name: stream.to_owned(),
            dir,
            left: max_count,
        };
        IntoRecords::new(self, query, from.into().version())
    }
}

impl IntoRecords {
    fn new(view: LogView, query: Query, cursor: u64) -> IntoRecords {
        IntoRecords {
            view,
            query,
            cursor,
            buffered: VecDeque::new(),
            done: false,
        }
    }

    /// The view read.
    pub fn view(&self) -> &LogView {
        &self.view
    }

    /// Copy the next chunk out of the view and move the cursor past it.
    fn fill(&mut self) -> Result<()> {
        let view = &self.view;
        let mut taken = Vec::with_capacity(CHUNK);
        let mut copy = |r: Result<crate::RecordRef<'_>>| -> Result<()> {
            taken.push(OwnedRecord::unsealed(view, r?)?);
            Ok(())
        };
        let chunk = match &mut self.query {
            Query::All => {
                view.read_all(self.cursor).take(CHUNK).try_for_each(&mut copy)?;
                CHUNK
            }
            Query::Category(c) => {
                view.read_category(c, self.cursor).take(CHUNK).try_for_each(&mut copy)?;
                CHUNK
            }
            Query::EventType(t) => {
                view.read_event_type(t, self.cursor)
                    .take(CHUNK)
                    .try_for_each(&mut copy)?;
                CHUNK
            }
            Query::Stream { name, dir, left } => {
                let n = (*left).min(CHUNK as u64);
                view.read_stream(name.as_str(), self.cursor, *dir, n)
                    .try_for_each(&mut copy)?;
                *left -= taken.len() as u64;
                n as usize
            }
        };
        self.done = taken.len() < chunk || matches!(self.query, Query::Stream { left: 0, .. });
        if let Some(last) = taken.last() {
            self.cursor = match self.query {
                Query::Stream {
                    dir: Direction::Backward,
                    ..
                } => match last.stream_version.checked_sub(1) {
                    Some(v) => v,
                    None => {
                        self.done = true;
                        0
                    }
                },
                Query::Stream { .. } => last.stream_version + 1,
                _ => last.position + 1,
            };
        }
        self.buffered.extend(taken);
        Ok(())
    }
}

impl Iterator for IntoRecords {
    type Item = Result<OwnedRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty()
            && !self.done
            && let Err(e) = self.fill()
        {
            self.done = true;
            return Some(Err(e));
        }
        self.buffered.pop_front().map(Ok)
    }
}
