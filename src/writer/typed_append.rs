//! [`Log::append_typed`]: appends of typed events (see [`crate::typed`]).
//! Kept apart because it depends on the typed-events layer above the writer:
//! an inherent `impl Log` block, it can move to that layer as it is.

use crate::error::Result;

use super::Log;
use super::types::{AppendResult, ExpectedVersion};

impl Log {
    /// Append typed events (encoded with postcard, see [`crate::typed`]) as
    /// one atomic batch.
    pub fn append_typed<E: crate::typed::Event>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<AppendResult> {
        let data = events.iter().map(crate::typed::encode).collect::<Result<Vec<_>>>()?;
        self.append(stream, expected, &data)
    }
}
