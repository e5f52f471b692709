//! Loopback benchmarks of the WebSocket transport: one-way rate of 16-byte-body frames, round-trip
//! latency and Raft over three nodes (see `concord_transport_conformance::measure::benchmarks`).
//! `cargo bench -p concord-transport-ws` (or `cargo xtask bench`).

use std::sync::Arc;

use concord_core::id::{ClusterId, NodeInfo};
use concord_core::transport::Transport;
use concord_transport_conformance::measure;
use concord_transport_ws::{WsOptions, WsTransport};
use criterion::{criterion_group, criterion_main, Criterion};

async fn node(id: &'static str) -> (Arc<dyn Transport>, NodeInfo) {
    let secret = b"benchmark cluster secret, 32 by";
    let transport = WsTransport::bind(WsOptions::new(id, ClusterId(1), secret)).await.unwrap();
    let info = NodeInfo::new(id, format!("ws://{}", transport.local_addr()));
    (transport, info)
}

fn benchmarks(criterion: &mut Criterion) {
    measure::benchmarks(criterion, "WebSocket", node);
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
