//! The transport's configuration, with a named limit on everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use concord_core::id::{ClusterId, NodeId};

use crate::limits::CommonOptions;
use crate::ZmqError;

/// Default bound of each peer's send queue, in frames.
pub const SEND_QUEUE_FRAMES_MAX: usize = 4096;
/// Default bound of the receive queue shared by all peers, in frames.
pub const RECEIVE_QUEUE_FRAMES_MAX: usize = 4096;
/// Default largest frame, in bytes: the core config's default `max_message_bytes`.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Default frames sent but not yet acknowledged, per peer.
pub const IN_FLIGHT_FRAMES_MAX: usize = 2048;
/// Default bytes sent but not yet acknowledged, per peer.
pub const IN_FLIGHT_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Default frames in one ZeroMQ multipart message.
pub const WRITE_BATCH_FRAMES_MAX: usize = 512;
/// Default connections allowed to be unauthenticated at once.
pub const HANDSHAKES_IN_PROGRESS_MAX: usize = 64;

/// How a [`crate::ZmqTransport`] listens, whom it lets in, and its limits.
#[derive(Clone, Debug)]
pub struct ZmqOptions {
    /// Where the ROUTER socket listens; port 0 lets the OS choose.
    pub listen_address: SocketAddr,
    /// This node's id, proven to peers in the handshake.
    pub node_id: NodeId,
    /// The cluster; peers of another cluster are refused.
    pub cluster_id: ClusterId,
    /// The shared cluster secret (at least 16 bytes); peers that cannot prove it are refused.
    pub cluster_secret: Arc<[u8]>,
    /// Frames queued per peer before `send` fails with `QueueFull`.
    pub send_queue_frames_max: usize,
    /// Received frames held until the application calls `recv`; when full, the ROUTER stops
    /// reading (and stops acknowledging, so senders stop sending).
    pub receive_queue_frames_max: usize,
    /// The largest frame sent or accepted, in bytes, header included.
    pub frame_bytes_max: usize,
    /// Frames a link sends before the peer acknowledges them. This, not ZeroMQ's own (much larger)
    /// queue, bounds what a slow or dead peer holds.
    pub in_flight_frames_max: usize,
    /// Bytes a link sends before the peer acknowledges them.
    pub in_flight_bytes_max: usize,
    /// Frames in one multipart message.
    pub write_batch_frames_max: usize,
    /// Unauthenticated connections at once; beyond this the oldest is dropped.
    pub handshakes_in_progress_max: usize,
    /// A link must dial and authenticate within this; an inbound connection must authenticate
    /// within this or is dropped.
    pub handshake_timeout: Duration,
    /// How often a link sends a heartbeat (answered with an acknowledgement).
    pub heartbeat_interval: Duration,
    /// A link that hears nothing from its peer for this long is torn down and dialled again: this
    /// is how a DEALER whose peer restarted (and which silently loses what it sends) is detected.
    pub liveness_timeout: Duration,
    /// First delay before re-dialling a broken link.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between attempts.
    pub reconnect_backoff_max: Duration,
}

impl ZmqOptions {
    /// Options with the defaults, listening on 127.0.0.1 with an OS-chosen port.
    pub fn new(node_id: impl Into<NodeId>, cluster_id: ClusterId, cluster_secret: impl AsRef<[u8]>) -> Self {
        ZmqOptions {
            listen_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_id: node_id.into(),
            cluster_id,
            cluster_secret: Arc::from(cluster_secret.as_ref()),
            send_queue_frames_max: SEND_QUEUE_FRAMES_MAX,
            receive_queue_frames_max: RECEIVE_QUEUE_FRAMES_MAX,
            frame_bytes_max: FRAME_BYTES_MAX,
            in_flight_frames_max: IN_FLIGHT_FRAMES_MAX,
            in_flight_bytes_max: IN_FLIGHT_BYTES_MAX,
            write_batch_frames_max: WRITE_BATCH_FRAMES_MAX,
            handshakes_in_progress_max: HANDSHAKES_IN_PROGRESS_MAX,
            handshake_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(500),
            liveness_timeout: Duration::from_secs(3),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
        }
    }

    /// Checks every field; the error names the one that is wrong (caller's fault).
    pub fn validate(&self) -> Result<(), ZmqError> {
        let invalid = |reason: String| Err(ZmqError::InvalidOptions(reason));
        CommonOptions {
            cluster_secret: &self.cluster_secret,
            node_id: &self.node_id,
            counts: &[
                ("send_queue_frames_max", self.send_queue_frames_max),
                ("receive_queue_frames_max", self.receive_queue_frames_max),
                ("in_flight_frames_max", self.in_flight_frames_max),
                ("write_batch_frames_max", self.write_batch_frames_max),
                ("handshakes_in_progress_max", self.handshakes_in_progress_max),
            ],
            frame_bytes_max: self.frame_bytes_max,
            reconnect_backoff_min: self.reconnect_backoff_min,
            reconnect_backoff_max: self.reconnect_backoff_max,
        }
        .validate()
        .map_err(ZmqError::InvalidOptions)?;
        if self.in_flight_bytes_max < self.frame_bytes_max {
            return invalid("in_flight_bytes_max must be at least frame_bytes_max".into());
        }
        if self.handshake_timeout.is_zero() || self.heartbeat_interval.is_zero() {
            return invalid("handshake_timeout and heartbeat_interval must be above zero".into());
        }
        if self.liveness_timeout < self.heartbeat_interval * 2 {
            return invalid("liveness_timeout must be at least two heartbeat intervals".into());
        }
        Ok(())
    }
}
