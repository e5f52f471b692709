//! The conformance suite against the runtime's in-memory transport.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::id::NodeInfo;
use concord_runtime::MemoryNetwork;
use concord_transport_conformance::{
    self as conformance, Capabilities, NodeSpec, TestNode, TransportFactory,
};
use parking_lot::Mutex;

/// Nodes on one in-memory network, made when the first node is (its inbox limit comes from that
/// node's limits: the memory network has one limit for all).
#[derive(Default)]
struct MemoryFactory {
    network: Mutex<Option<MemoryNetwork>>,
}

#[async_trait]
impl TransportFactory for MemoryFactory {
    fn capabilities(&self) -> Capabilities {
        // The memory transport is trusted, in-process and unlimited: no authentication, no frame
        // limit, no validation (the runtime's codec checks every frame), no link reports on restart.
        Capabilities {
            authenticates: false,
            enforces_frame_limit: false,
            validates_frames: false,
            reports_link_status: false,
            // MemoryTransport ignores add_peer/remove_peer: any node of the network is reachable.
            tracks_membership: false,
        }
    }

    async fn create(&self, spec: NodeSpec) -> TestNode {
        let network = self
            .network
            .lock()
            .get_or_insert_with(|| MemoryNetwork::with_inbox_limit(spec.limits.receive_queue_frames_max))
            .clone();
        let transport = network.transport(spec.id.clone());
        TestNode {
            transport,
            info: NodeInfo::new(spec.id.clone(), format!("mem://{}", spec.id)),
            refused_handshakes: None,
        }
    }

    async fn send_without_handshake(&self, _target: &NodeInfo, _frames: Vec<Bytes>) {
        unreachable!("the memory transport does not authenticate")
    }
}

fn factory() -> Arc<MemoryFactory> {
    Arc::new(MemoryFactory::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() {
    conformance::delivery(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering() {
    conformance::ordering(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_size_limit() {
    // The memory transport has no frame limit: the check returns at once (the codec enforces it).
    conformance::frame_size_limit(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames() {
    conformance::garbage_frames(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_peers_refused() {
    // Not applicable: the memory transport is in-process and has no peers to refuse; the check
    // returns at once.
    conformance::unauthenticated_peers_refused(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart() {
    conformance::peer_restart(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver() {
    conformance::slow_receiver(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster() {
    conformance::raft_cluster(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes() {
    // Not applicable: the memory transport ignores add_peer/remove_peer; the check returns at once.
    conformance::membership_changes(&*factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaddressed_peer() {
    // Not applicable: memory addresses are node ids; the check returns at once.
    conformance::misaddressed_peer(&*factory()).await;
}
