//! What a transport's tests provide (a factory), and helpers the checks share.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::codec::PROTOCOL_VERSION;
use concord_core::id::{ClusterId, NodeId, NodeInfo};
use concord_core::transport::{Incoming, Transport, TransportError};

/// The cluster secret the checks use for legitimate nodes.
pub const SECRET: &[u8] = b"conformance cluster secret, 32 b";

/// The limits a node is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame sent or accepted, in bytes.
    pub frame_bytes_max: usize,
    /// Per-peer send queue, in frames.
    pub send_queue_frames_max: usize,
    /// Receive queue, in frames.
    pub receive_queue_frames_max: usize,
}

impl Default for Limits {
    /// Small limits, so that the checks reach them quickly.
    fn default() -> Self {
        Limits { frame_bytes_max: 64 * 1024, send_queue_frames_max: 256, receive_queue_frames_max: 256 }
    }
}

impl Limits {
    /// Limits for running a Raft cluster (the runtime's defaults).
    pub fn for_cluster() -> Self {
        Limits {
            frame_bytes_max: 16 * 1024 * 1024,
            send_queue_frames_max: 4096,
            receive_queue_frames_max: 4096,
        }
    }
}

/// What node to make.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Its id.
    pub id: NodeId,
    /// Its cluster.
    pub cluster_id: ClusterId,
    /// Its cluster secret ([`SECRET`] unless a check plays an intruder).
    pub secret: Vec<u8>,
    /// Its limits.
    pub limits: Limits,
    /// Listen on this address (as a previous [`TestNode::info`] gave it) instead of an OS-chosen
    /// port: a restarted node comes back where its peers expect it. The factory retries for a
    /// while if the address is still held by the node's previous incarnation.
    pub listen_address: Option<String>,
}

impl NodeSpec {
    /// A legitimate node of cluster 1 with an OS-chosen port.
    pub fn new(id: &str, limits: Limits) -> Self {
        NodeSpec {
            id: NodeId::new(id),
            cluster_id: ClusterId(1),
            secret: SECRET.to_vec(),
            limits,
            listen_address: None,
        }
    }
}

/// A node a factory made.
pub struct TestNode {
    /// The transport.
    pub transport: Arc<dyn Transport>,
    /// Its id and the address peers reach it at.
    pub info: NodeInfo,
    /// How many connections it refused during authentication so far, where the transport counts.
    pub refused_handshakes: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

/// What a transport promises beyond delivery; checks skip what a transport does not claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Connections are authenticated with the cluster secret.
    pub authenticates: bool,
    /// The frame limit is enforced on send and on receive.
    pub enforces_frame_limit: bool,
    /// Frames that are not well-formed codec frames never reach `recv`.
    pub validates_frames: bool,
    /// Link changes are reported as `PeerConnected` / `PeerDisconnected`.
    pub reports_link_status: bool,
    /// `add_peer` / `remove_peer` decide whom it sends to (and, when it authenticates, accepts).
    pub tracks_membership: bool,
}

/// Makes nodes of the transport under test.
#[async_trait]
pub trait TransportFactory: Send + Sync {
    /// What the transport promises.
    fn capabilities(&self) -> Capabilities;
    /// Makes a node (no peers added yet).
    async fn create(&self, spec: NodeSpec) -> TestNode;
    /// Connects to `target` without the handshake (a peer that has no secret at all) and tries to
    /// send `frames`. Called only when the transport authenticates.
    async fn send_without_handshake(&self, target: &NodeInfo, frames: Vec<Bytes>);
}

/// A codec frame of `size` bytes in total (length prefix, version, flags, body), its body starting
/// with `sequence`. Transports only look at the length prefix; the body need not decode.
pub fn codec_frame(sequence: u64, size: usize) -> Bytes {
    assert!(size >= 14, "a test frame holds at least its header and sequence number");
    let mut frame = Vec::with_capacity(size);
    frame.extend_from_slice(&((size - 4) as u32).to_be_bytes());
    frame.push(PROTOCOL_VERSION);
    frame.push(0);
    frame.extend_from_slice(&sequence.to_be_bytes());
    frame.resize(size, (sequence % 251) as u8);
    Bytes::from(frame)
}

/// The sequence number of a frame made by [`codec_frame`].
pub fn frame_sequence(frame: &[u8]) -> u64 {
    assert!(frame.len() >= 14, "frame of {} bytes is not a test frame", frame.len());
    let mut sequence = [0; 8];
    sequence.copy_from_slice(&frame[6..14]);
    u64::from_be_bytes(sequence)
}

/// Connects two nodes both ways.
pub(crate) fn connect(a: &TestNode, b: &TestNode) {
    a.transport.add_peer(&b.info).expect("add peer");
    b.transport.add_peer(&a.info).expect("add peer");
}

/// The next frame, skipping link events; `None` after `limit`.
pub(crate) async fn next_frame(node: &TestNode, limit: Duration) -> Option<(NodeId, Bytes)> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, node.transport.recv()).await {
            Ok(Ok(Incoming::Frame { from, frame })) => return Some((from, frame)),
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => panic!("recv failed: {error}"),
            Err(_) => return None,
        }
    }
}

/// Sends, waiting (bounded) while the queue is full.
pub(crate) async fn send_patiently(from: &TestNode, to: &NodeId, frames: Vec<Bytes>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match from.transport.send(to, frames.clone()).await {
            Ok(()) => return,
            Err(TransportError::QueueFull { .. }) => {
                assert!(tokio::time::Instant::now() < deadline, "queue to {to} stayed full for 20 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => panic!("send to {to} failed: {error}"),
        }
    }
}

/// Sends `marker` to `to` every `interval` until `receiver` gets a frame equal to it (frames
/// before it are passed to `seen`), within `limit`. Returns how long it took.
pub(crate) async fn deliver_marker(
    from: &TestNode,
    receiver: &TestNode,
    marker: Bytes,
    limit: Duration,
    mut seen: impl FnMut(&NodeId, &Bytes),
) -> Duration {
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    let to = receiver.info.id.clone();
    loop {
        assert!(tokio::time::Instant::now() < deadline, "{to} did not receive a marker within {limit:?}");
        match from.transport.send(&to, vec![marker.clone()]).await {
            Ok(()) | Err(TransportError::QueueFull { .. }) => {}
            Err(error) => panic!("send to {to} failed: {error}"),
        }
        let round = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Some((sender, frame)) = next_frame(receiver, round - tokio::time::Instant::now()).await {
            if frame == marker {
                return started.elapsed();
            }
            seen(&sender, &frame);
            if tokio::time::Instant::now() >= round {
                break;
            }
        }
    }
}

/// Waits for a link event about `peer` on `node`, within `limit`; frames are discarded.
pub(crate) async fn wait_for_link(node: &TestNode, peer: &NodeId, connected: bool, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, node.transport.recv()).await;
        match event {
            Ok(Ok(Incoming::PeerConnected(id))) if id == *peer && connected => return,
            Ok(Ok(Incoming::PeerDisconnected(id))) if id == *peer && !connected => return,
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => panic!("recv failed: {error}"),
            Err(_) => panic!(
                "{} saw no {} event for {peer} within {limit:?}",
                node.info.id,
                if connected { "PeerConnected" } else { "PeerDisconnected" }
            ),
        }
    }
}

/// Closes every node.
pub(crate) async fn close_all(nodes: &[&TestNode]) {
    for node in nodes {
        node.transport.close().await;
    }
}

/// Runs a check under an overall time limit.
pub(crate) async fn bounded<F: std::future::Future<Output = ()>>(name: &str, limit: Duration, check: F) {
    if tokio::time::timeout(limit, check).await.is_err() {
        panic!("check {name} did not finish within {limit:?}");
    }
}
