//! The shared conformance suite over plain WebSocket.

use concord_transport_conformance as conformance;

use crate::support::WsFactory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() {
    conformance::delivery(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering() {
    conformance::ordering(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_size_limit() {
    conformance::frame_size_limit(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames() {
    conformance::garbage_frames(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_peers_refused() {
    conformance::unauthenticated_peers_refused(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart() {
    conformance::peer_restart(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver() {
    conformance::slow_receiver(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster() {
    conformance::raft_cluster(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes() {
    conformance::membership_changes(&WsFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaddressed_peer() {
    conformance::misaddressed_peer(&WsFactory::default()).await;
}
