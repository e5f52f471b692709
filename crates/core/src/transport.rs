//! The transport trait: how encoded frames travel between nodes.
//!
//! A transport moves opaque frames (produced by [`crate::codec::Codec`]); it knows nothing of
//! mechanisms. Implementations: the runtime's in-memory transport, `concord-transport-ws`,
//! `concord-transport-zmq`, or your own.

use async_trait::async_trait;
use bytes::Bytes;

use crate::id::{NodeId, NodeInfo};

/// Something that happened on the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A frame from an authenticated peer.
    Frame {
        /// The sender.
        from: NodeId,
        /// The encoded frame.
        frame: Bytes,
    },
    /// A link to a peer came up.
    PeerConnected(NodeId),
    /// A link to a peer went down.
    PeerDisconnected(NodeId),
}

/// Why a transport operation failed, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer is not known to the transport (caller's fault: add it first).
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The per-peer send queue is full: the frame was not queued (backpressure).
    #[error("send queue to {peer} is full ({limit} frames)")]
    QueueFull {
        /// The peer.
        peer: NodeId,
        /// The queue's limit.
        limit: usize,
    },
    /// A frame larger than the transport's limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
    /// An I/O or protocol error on a link.
    #[error("transport error: {0}")]
    Link(String),
}

/// Moves frames between nodes. Delivery is best effort: frames may be lost, and the mechanisms
/// tolerate that; implementations should keep per-link order.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Queues frames for `to`. Returns once queued (not delivered); a full queue is an error, never
    /// unbounded growth.
    async fn send(&self, to: &NodeId, frames: Vec<Bytes>) -> Result<(), TransportError>;
    /// Waits for the next frame or link event.
    async fn recv(&self) -> Result<Incoming, TransportError>;

    /// Waits for the next item, then also takes up to `max - 1` more that are already waiting, so
    /// the driver handles a burst under one lock. The default takes one.
    async fn recv_batch(&self, max: usize) -> Result<Vec<Incoming>, TransportError> {
        let _ = max;
        Ok(vec![self.recv().await?])
    }
    /// Adds or updates a peer (its address may have changed).
    fn add_peer(&self, peer: &NodeInfo) -> Result<(), TransportError>;
    /// Forgets a peer and closes its links.
    fn remove_peer(&self, peer: &NodeId);
    /// Closes every link; later calls fail with `Closed`.
    async fn close(&self);

    /// The transport as `Any`, for an in-process transport whose driver (in the same crate)
    /// recognises it behind an `Arc<dyn Transport>` and hands it messages without the codec.
    /// Others keep the default: `None`.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}
