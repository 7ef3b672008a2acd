//! Async forms of the event-sourcing layer's writes (feature `tokio`):
//! [`Log::append_typed_async`] and [`Repository::execute_async`]. Like
//! [`Log::append_async`], they never block the task's thread: appends wait
//! for their group commit as futures, and the one piece of file work that
//! has no async form (writing a snapshot file, with its fsync) runs on
//! tokio's blocking pool.

use crate::error::{Error, Result};
use crate::es::aggregate::{Aggregate, Decided, ExecuteError, Executed, Repository};
use crate::es::typed::{Event, encode};
use crate::types::ExpectedVersion;
use crate::writer::{AppendResult, Log};

impl Log {
    /// [`Log::append_typed`] as a future (see [`Log::append_async`]).
    pub async fn append_typed_async<E: Event>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<AppendResult> {
        let data = events.iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.append_async(stream, expected, &data).await
    }
}

impl<A> Repository<A>
where
    A: Aggregate + Send + 'static,
    A::Event: Send,
{
    /// [`Repository::execute`] as a future: the load and the command run
    /// inline (reads of the memory-mapped log), the append waits for its
    /// group commit without blocking the thread, and a snapshot due after
    /// it is written on tokio's blocking pool (so this needs a tokio
    /// runtime when snapshots are on).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use annal::{Aggregate, Event, Log, Repository};
    /// use serde::{Deserialize, Serialize};
    /// #[derive(Default, Serialize, Deserialize)]
    /// struct Counter { value: i64 }
    /// #[derive(Serialize, Deserialize)]
    /// struct Added(i64);
    /// impl Event for Added { fn event_type(&self) -> &'static str { "Added" } }
    /// impl Aggregate for Counter {
    ///     type Event = Added;
    ///     type Command = i64;
    ///     type Error = String;
    ///     fn handle(&self, n: &i64) -> Result<Vec<Added>, String> { Ok(vec![Added(*n)]) }
    ///     fn apply(&mut self, Added(n): &Added) { self.value += n }
    /// }
    /// let dir = tempfile::tempdir()?;
    /// let repo = Repository::<Counter>::new(&Log::open(dir.path())?);
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// rt.block_on(async {
    ///     repo.execute_async("counter-1", &5).await?;
    ///     repo.execute_async("counter-1", &-2).await
    /// })?;
    /// assert_eq!(repo.load("counter-1")?.state.value, 3);
    /// # Ok(()) }
    /// ```
    pub async fn execute_async(
        &self,
        stream: &str,
        command: &A::Command,
    ) -> std::result::Result<Executed, ExecuteError<A::Error>> {
        for attempt in 1..=self.attempts() {
            let pending = match self.decide(stream, command, attempt)? {
                Decided::Nothing(done) => return Ok(done),
                Decided::Append(p) => p,
            };
            let appended = self
                .log()
                .append_typed_async(stream, pending.expected, &pending.events)
                .await;
            match appended {
                // The snapshot's file work (a sync of the log, then the
                // file and its fsync) on the blocking pool.
                Ok(r) if self.snapshot_due(&pending, &r) => {
                    let (repo, owned) = (self.clone(), stream.to_owned());
                    let done = tokio::task::spawn_blocking(move || repo.after_append(&owned, pending, r)).await;
                    return done.map_err(|e| {
                        let dir = self.log().dir().to_owned();
                        ExecuteError::Log(Error::io(
                            "write a snapshot (the task failed) in",
                            dir,
                            std::io::Error::other(e),
                        ))
                    });
                }
                Ok(r) => return Ok(self.after_append(stream, pending, r)),
                // As `execute`: the next attempt decides on a view that
                // shows the append that won (woken by its publish).
                Err(Error::WrongExpectedVersion { .. }) => {
                    self.log().visible_async(self.log().next_position()).await;
                }
                Err(e) => return Err(ExecuteError::Log(e)),
            }
        }
        Err(self.gave_up(stream))
    }
}
