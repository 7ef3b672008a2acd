//! Idempotent retries: the window of recently appended events with
//! application-supplied ids, rebuilt once per open from the log's tail, and
//! the check that tells a retry (return the original result, write nothing)
//! from a conflict.
//!
//! Invariants: the window holds at most `Options::idempotency_window` ids,
//! oldest first in `recent_order`; ids appended since the open stay the
//! newest; a retry must repeat the original batch exactly.

use std::sync::Arc;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::record::EventData;
use crate::types::Direction;

use super::results::{AppendResult, ExpectedVersion};
use super::state::{Inner, RecentId, State};

impl State {
    /// Remember the application-supplied ids of a batch just queued to
    /// `stream` (its first event at `first_version`, `first_position`), and
    /// forget the oldest past the window's size.
    pub(super) fn remember_batch(
        &mut self,
        stream: &str,
        events: &[EventData<'_>],
        first_version: u64,
        first_position: u64,
        window: usize,
    ) {
        let name: Arc<str> = stream.into();
        for (i, ev) in events.iter().enumerate() {
            if let Some(id) = ev.id {
                self.remember(
                    id.into_bytes(),
                    &name,
                    first_version + i as u64,
                    first_position + i as u64,
                );
            }
        }
        while self.recent_order.len() > window {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent_ids.remove(&old);
            }
        }
    }

    fn remember(&mut self, id: [u8; 16], stream: &Arc<str>, version: u64, position: u64) {
        let prev = self.recent_ids.insert(
            id,
            RecentId {
                stream: stream.clone(),
                version,
                position,
            },
        );
        if prev.is_none() {
            self.recent_order.push_back(id);
        }
    }
}

impl Inner {
    /// If this append repeats one already in the log (same ids, same stream,
    /// consecutive versions), the original result. Errors if it repeats only
    /// part of one.
    pub(super) fn idempotent(
        &self,
        st: &mut State,
        stream: &str,
        expected: ExpectedVersion,
        current: Option<u64>,
        events: &[EventData<'_>],
    ) -> Result<Option<AppendResult>> {
        let ids: Vec<[u8; 16]> = events.iter().filter_map(|e| e.id.map(Uuid::into_bytes)).collect();
        if matches!(expected, ExpectedVersion::Any | ExpectedVersion::StreamExists)
            && !st.recent_ids.contains_key(&ids[0])
        {
            self.load_window(st)?;
        }
        let st = &*st;
        let k = ids.len() as u64;
        // The stored (version, position, id) of the stream's events from `v0`.
        let stored = |v0: u64| -> Result<Vec<(u64, u64, [u8; 16])>> {
            let mut out = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                match st.recent_ids.get(id) {
                    Some(r) if &*r.stream == stream && v0.checked_add(i as u64) == Some(r.version) => {
                        out.push((r.version, r.position, *id))
                    }
                    _ => break,
                }
            }
            if out.len() == ids.len() || !out.is_empty() {
                return Ok(out);
            }
            // Not remembered: read what the log holds (written events).
            let view = self.view()?;
            let mut out = Vec::new();
            for r in view.read_stream(stream, v0, Direction::Forward, k) {
                let r = r?;
                out.push((r.stream_version(), r.position(), r.event_id().into_bytes()));
            }
            Ok(out)
        };
        let v0 = match expected {
            ExpectedVersion::Exact(n) if current.is_some_and(|c| c > n) => n + 1,
            ExpectedVersion::Exact(_) => return Ok(None),
            ExpectedVersion::NoStream if current.is_some() => 0,
            ExpectedVersion::NoStream => return Ok(None),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => match st.recent_ids.get(&ids[0]) {
                Some(r) if &*r.stream == stream => r.version,
                _ => return Ok(None),
            },
        };
        let found = stored(v0)?;
        let matching = found.iter().zip(&ids).take_while(|((_, _, a), b)| a == *b).count() as u64;
        if matching == 0 {
            return Ok(None);
        }
        if matching < k {
            return Err(Error::IdempotencyConflict {
                stream: stream.to_owned(),
                detail: format!(
                    "the first {matching} of {k} event ids match the events stored at versions {v0}.., the rest do not: \
                     a retry must repeat the original batch exactly"
                ),
            });
        }
        let (first, last) = (found[0], found[k as usize - 1]);
        Ok(Some(AppendResult {
            first_position: first.1,
            last_position: last.1,
            stream_version: last.0,
        }))
    }

    /// Once per open, on the first idempotency lookup that misses: fill the
    /// window of recent ids from the log's tail, so that a retry is
    /// recognised across reopen and across processes. Reads the last
    /// `idempotency_window` events written before this open (whatever their
    /// ids: the format does not tell generated ids from supplied ones), in
    /// one sequential read; memory is bounded by the window (about 80 bytes
    /// an event). Ids appended since the open stay the newest.
    fn load_window(&self, st: &mut State) -> Result<()> {
        if st.window_loaded {
            return Ok(());
        }
        let window = self.opts.idempotency_window;
        let end = st.open_position;
        let from = end.saturating_sub(window as u64);
        let mut older: Vec<([u8; 16], Arc<str>, u64, u64)> = Vec::new();
        if window > 0 && end > from {
            let view = self.view()?;
            let mut last: Option<Arc<str>> = None;
            for r in view.read_all(from).until(end) {
                let r = r?;
                // One allocation per run of events of one stream.
                let name = match &last {
                    Some(n) if **n == *r.stream() => n.clone(),
                    _ => {
                        let n: Arc<str> = r.stream().into();
                        last = Some(n.clone());
                        n
                    }
                };
                older.push((r.event_id().into_bytes(), name, r.stream_version(), r.position()));
            }
        }
        // Older than everything remembered since the open: in front, newest
        // of them nearest the back.
        for (id, stream, version, position) in older.into_iter().rev() {
            if st.recent_ids.contains_key(&id) {
                continue;
            }
            st.recent_ids.insert(
                id,
                RecentId {
                    stream,
                    version,
                    position,
                },
            );
            st.recent_order.push_front(id);
        }
        while st.recent_order.len() > window {
            if let Some(old) = st.recent_order.pop_front() {
                st.recent_ids.remove(&old);
            }
        }
        st.window_loaded = true;
        Ok(())
    }
}
