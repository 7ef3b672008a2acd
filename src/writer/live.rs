//! The writer as a live source of subscriptions: [`Log::subscribe_all`] and
//! its siblings, woken by the writer when it publishes a new visible end.

use std::time::Duration;

use crate::Result;
use crate::read::subscription::{Live, Subscription, SubscriptionFilter};
use crate::read::view::LogView;
use crate::writer::Log;

impl Live for Log {
    fn published_epoch(&self) -> u64 {
        Log::published_epoch(self)
    }

    fn live_view(&self) -> Result<LogView> {
        self.view()
    }

    fn wait_published(&self, seen: u64, timeout: Duration) -> u64 {
        Log::wait_published(self, seen, timeout)
    }

    #[cfg(feature = "tokio")]
    fn wake_on_publish(&self, seen: u64, waker: &std::task::Waker) -> bool {
        Log::wake_on_publish(self, seen, waker)
    }

    fn ended(&self) -> Option<crate::Error> {
        Log::ended(self)
    }
}

impl Log {
    /// Subscribe to every event from position `from` on (pass the last
    /// handled position + 1 to resume from a checkpoint). Woken by this
    /// writer when new events become visible. The subscription holds a clone
    /// of this `Log` (it keeps the log open until it is dropped).
    pub fn subscribe_all(&self, from: u64) -> Subscription {
        Subscription::live(Box::new(self.clone()), SubscriptionFilter::All, from, 0)
    }

    /// Subscribe to the events of `stream` from version `from_version` on
    /// (pass the last handled version + 1 to resume).
    pub fn subscribe_stream(&self, stream: &str, from_version: u64) -> Subscription {
        Subscription::live(
            Box::new(self.clone()),
            SubscriptionFilter::Stream(stream.to_owned()),
            0,
            from_version,
        )
    }

    /// Subscribe to the events of every stream of `category` from position
    /// `from` on (pass the last handled position + 1 to resume).
    pub fn subscribe_category(&self, category: &str, from: u64) -> Subscription {
        Subscription::live(
            Box::new(self.clone()),
            SubscriptionFilter::Category(category.to_owned()),
            from,
            0,
        )
    }
}
