//! The transport's configuration, with a named limit on everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use concord_core::id::{ClusterId, NodeId};

use crate::limits::CommonOptions;
use crate::WsError;

/// Default bound of each peer's send queue, in frames.
pub const SEND_QUEUE_FRAMES_MAX: usize = 4096;
/// Default bound of the receive queue shared by all peers, in frames.
pub const RECEIVE_QUEUE_FRAMES_MAX: usize = 4096;
/// Default largest frame, in bytes: the core config's default `max_message_bytes`.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Default number of frames written between two flushes.
pub const WRITE_BATCH_FRAMES_MAX: usize = 512;
/// Default number of inbound connections allowed to be in their handshake at once. Small on
/// purpose: before it authenticates, a connection may still send one WebSocket message of up to
/// `frame_bytes_max`, so this times that bounds what strangers can make a node hold.
pub const HANDSHAKES_IN_PROGRESS_MAX: usize = 16;

/// TLS for every link: the server side for inbound connections, the client side for outbound ones.
/// The peer's host in its address is the name its certificate is checked against.
#[derive(Clone, Debug)]
pub struct WsTls {
    /// Presented to peers that dial this node.
    pub server: Arc<rustls::ServerConfig>,
    /// Used to dial peers (its root store decides which certificates are trusted).
    pub client: Arc<rustls::ClientConfig>,
}

/// How a [`crate::WsTransport`] listens, whom it lets in, and its limits.
#[derive(Clone, Debug)]
pub struct WsOptions {
    /// Where to listen; port 0 lets the OS choose (see [`crate::WsTransport::local_addr`]).
    pub listen_address: SocketAddr,
    /// This node's id, proven to peers in the handshake.
    pub node_id: NodeId,
    /// The cluster; peers of another cluster are refused.
    pub cluster_id: ClusterId,
    /// The shared cluster secret (at least 16 bytes); peers that cannot prove it are refused.
    pub cluster_secret: Arc<[u8]>,
    /// Frames queued per peer before [`concord_core::transport::Transport::send`] fails with
    /// `QueueFull`.
    pub send_queue_frames_max: usize,
    /// Received frames held until the application calls `recv`; when full, reading from peers
    /// pauses (TCP pushes back, their send queues fill).
    pub receive_queue_frames_max: usize,
    /// The largest frame sent or accepted, in bytes, header included.
    pub frame_bytes_max: usize,
    /// Frames written before one flush.
    pub write_batch_frames_max: usize,
    /// Inbound connections in their handshake at once; more are closed at once. Memory held by
    /// connections not yet authenticated stays below this times `frame_bytes_max`.
    pub handshakes_in_progress_max: usize,
    /// A connection must finish its handshake (TCP, TLS, WebSocket, authentication) within this.
    pub handshake_timeout: Duration,
    /// First delay before reconnecting a broken link.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between reconnect attempts.
    pub reconnect_backoff_max: Duration,
    /// How often an outbound link pings its peer; after three intervals without an answer the link
    /// is declared down (this catches peers that vanish without closing TCP). A peer whose
    /// application stops calling `recv` for that long stops answering too; its link is rebuilt and
    /// the frames in flight are lost (bounded by the queues), as with any broken link.
    pub keepalive_interval: Duration,
    /// TLS for every link; `None` runs plain WebSocket (authentication still applies).
    pub tls: Option<WsTls>,
}

impl WsOptions {
    /// Options with the defaults, listening on 127.0.0.1 with an OS-chosen port.
    pub fn new(node_id: impl Into<NodeId>, cluster_id: ClusterId, cluster_secret: impl AsRef<[u8]>) -> Self {
        WsOptions {
            listen_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_id: node_id.into(),
            cluster_id,
            cluster_secret: Arc::from(cluster_secret.as_ref()),
            send_queue_frames_max: SEND_QUEUE_FRAMES_MAX,
            receive_queue_frames_max: RECEIVE_QUEUE_FRAMES_MAX,
            frame_bytes_max: FRAME_BYTES_MAX,
            write_batch_frames_max: WRITE_BATCH_FRAMES_MAX,
            handshakes_in_progress_max: HANDSHAKES_IN_PROGRESS_MAX,
            handshake_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
            tls: None,
        }
    }

    /// Checks every field; the error names the one that is wrong (caller's fault).
    pub fn validate(&self) -> Result<(), WsError> {
        let invalid = |reason: String| Err(WsError::InvalidOptions(reason));
        CommonOptions {
            cluster_secret: &self.cluster_secret,
            node_id: &self.node_id,
            counts: &[
                ("send_queue_frames_max", self.send_queue_frames_max),
                ("receive_queue_frames_max", self.receive_queue_frames_max),
                ("write_batch_frames_max", self.write_batch_frames_max),
                ("handshakes_in_progress_max", self.handshakes_in_progress_max),
            ],
            frame_bytes_max: self.frame_bytes_max,
            reconnect_backoff_min: self.reconnect_backoff_min,
            reconnect_backoff_max: self.reconnect_backoff_max,
        }
        .validate()
        .map_err(WsError::InvalidOptions)?;
        if self.handshake_timeout.is_zero() || self.keepalive_interval.is_zero() {
            return invalid("handshake_timeout and keepalive_interval must be above zero".into());
        }
        Ok(())
    }
}
