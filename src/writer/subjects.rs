//! Subjects on the writer's side (spec 3.8, 22): the events of an append
//! that name a subject are sealed before the append's atomic step, and
//! subjects are erased through the log's key ring. Removing what snapshots
//! hold of an erased subject is the event-sourcing layer's part of
//! [`Log::erase_subject`](crate::Log::erase_subject).
//!
//! Invariant: an event that names a subject never reaches the encoder in
//! plain: [`Inner::sealed_events`] returns the batch to encode, sealed, and
//! the append encodes nothing else.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::format::record::EventData;
use crate::format::sealed::KeyId;

use super::state::Inner;

/// The first format version whose records can be sealed.
const SEALED_FORMAT_VERSION: u16 = 4;

impl Inner {
    /// The batch to encode for `events`: themselves when none names a
    /// subject, else with those that do sealed (their keys made durable
    /// first). `events` were checked (`check_batch`).
    pub(super) fn sealed_events<'e, 'b>(
        &self,
        stream: &str,
        events: &'b [EventData<'e>],
    ) -> Result<Cow<'b, [EventData<'e>]>> {
        if events.iter().all(|e| e.subject.is_none()) {
            return Ok(Cow::Borrowed(events));
        }
        if self.format.version < SEALED_FORMAT_VERSION {
            return Err(Error::InvalidArgument(format!(
                "events that name a subject need format version {SEALED_FORMAT_VERSION}; this log is version {}",
                self.format.version
            )));
        }
        Ok(Cow::Owned(self.keys.seal_events(stream, events)?))
    }

    /// Erase `subjects` (one replace of `annal.keys`): each one's erased
    /// key id, `None` for a subject that had no live key.
    pub(crate) fn erase_keys(&self, subjects: &[&str]) -> Result<Vec<Option<KeyId>>> {
        self.keys.erase(subjects)
    }
}
