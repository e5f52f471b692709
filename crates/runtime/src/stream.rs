//! Event and key-update streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use concord_core::event::Event;
use concord_core::typed::{decode_value, ValueError};
use futures_core::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Every event of a node, in order (`events()`). A subscriber that falls more than
/// `maxEventBacklog` events behind skips the oldest; [`EventStream::missed`] counts them.
pub struct EventStream {
    inner: BroadcastStream<Event>,
    missed: u64,
}

impl EventStream {
    pub(crate) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        EventStream { inner: BroadcastStream::new(receiver), missed: 0 }
    }

    /// Events skipped because this subscriber lagged.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The next event; `None` once the node is gone.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => return Poll::Ready(Some(event)),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(count)))) => self.missed += count,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A new value of a subscribed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUpdate {
    /// The key.
    pub key: String,
    /// The new value (`None`: deleted).
    pub new_value: Option<Bytes>,
    /// The old value.
    pub old_value: Option<Bytes>,
    /// The key's version after the change.
    pub version: u64,
}

impl KeyUpdate {
    /// The new value decoded as `T` (`Ok(None)` if deleted).
    pub fn value<T: DeserializeOwned>(&self) -> Result<Option<T>, ValueError> {
        self.new_value.as_deref().map(decode_value).transpose()
    }

    /// The old value decoded as `T`.
    pub fn old<T: DeserializeOwned>(&self) -> Result<Option<T>, ValueError> {
        self.old_value.as_deref().map(decode_value).transpose()
    }
}

/// New values of one key (`subscribe(key)`), as this node applies them.
pub struct KeySubscription {
    key: String,
    events: EventStream,
}

impl KeySubscription {
    pub(crate) fn new(key: String, receiver: broadcast::Receiver<Event>) -> Self {
        KeySubscription { key, events: EventStream::new(receiver) }
    }

    /// The next update; `None` once the node is gone.
    pub async fn next(&mut self) -> Option<KeyUpdate> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for KeySubscription {
    type Item = KeyUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<KeyUpdate>> {
        loop {
            match Pin::new(&mut self.events).poll_next(cx) {
                Poll::Ready(Some(Event::StateChanged { key, new_value, old_value, version }))
                    if key == self.key =>
                {
                    return Poll::Ready(Some(KeyUpdate { key, new_value, old_value, version }))
                }
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
