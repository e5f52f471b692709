//! The shared conformance suite over ZeroMQ.

use concord_transport_conformance as conformance;

use crate::support::ZmqFactory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() {
    conformance::delivery(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering() {
    conformance::ordering(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_size_limit() {
    conformance::frame_size_limit(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames() {
    conformance::garbage_frames(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_peers_refused() {
    conformance::unauthenticated_peers_refused(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart() {
    conformance::peer_restart(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver() {
    conformance::slow_receiver(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster() {
    conformance::raft_cluster(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes() {
    conformance::membership_changes(&ZmqFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaddressed_peer() {
    conformance::misaddressed_peer(&ZmqFactory).await;
}
