//! Loopback benchmarks of the WebSocket transport: one-way rate of 16-byte-body frames and
//! round-trip latency. `cargo bench -p concord-transport-ws` (or `cargo xtask bench`).

use std::sync::Arc;
use std::time::Duration;

use concord_core::id::{ClusterId, NodeInfo};
use concord_core::transport::Transport;
use concord_transport_conformance::measure;
use concord_transport_ws::{WsOptions, WsTransport};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const FRAMES_PER_ITERATION: u64 = 100_000;
const RAFT_PROPOSALS_PER_ITERATION: u64 = 1_000;

/// A node of this transport on 127.0.0.1 with an OS-chosen port.
async fn node(id: &str) -> (Arc<dyn Transport>, NodeInfo) {
    let secret = b"benchmark cluster secret, 32 by";
    let transport = WsTransport::bind(WsOptions::new(id, ClusterId(1), secret)).await.unwrap();
    let info = NodeInfo::new(id, format!("ws://{}", transport.local_addr()));
    (transport, info)
}

async fn pair() -> (Arc<dyn Transport>, Arc<dyn Transport>, NodeInfo, NodeInfo) {
    let (a, a_info) = node("a").await;
    let (b, b_info) = node("b").await;
    a.add_peer(&b_info).unwrap();
    b.add_peer(&a_info).unwrap();
    (a, b, a_info, b_info)
}

fn benchmarks(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (a, b, a_info, b_info) = runtime.block_on(pair());
    let _ = &a_info;
    let mut group = criterion.benchmark_group("WebSocket");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(FRAMES_PER_ITERATION));
    group.bench_function("one_way_16_byte_frames", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    total += measure::one_way(&a, &b, &b_info.id, FRAMES_PER_ITERATION).await;
                }
                total
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    let echo = {
        let _inside_runtime = runtime.enter();
        measure::echo(b.clone())
    };
    group.bench_function("round_trip", |bencher| {
        bencher.iter_custom(|iterations| runtime.block_on(measure::round_trips(&a, &b_info.id, iterations)))
    });
    echo.abort();
    // Raft over three nodes of this transport: 1,000 proposals per iteration, 100 at a time.
    let cluster = runtime.block_on(async {
        let mut transports = Vec::new();
        for id in ["r1", "r2", "r3"] {
            transports.push(node(id).await);
        }
        for (transport, _) in &transports {
            for (_, info) in &transports {
                transport.add_peer(info).unwrap();
            }
        }
        measure::raft_cluster(transports).await
    });
    group.throughput(Throughput::Elements(RAFT_PROPOSALS_PER_ITERATION));
    let mut round = 0;
    group.bench_function("raft_three_nodes_proposals", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    round += 1;
                    total +=
                        measure::raft_proposals(&cluster, round, RAFT_PROPOSALS_PER_ITERATION, 100).await;
                }
                total
            })
        })
    });
    group.finish();
    runtime.block_on(async {
        for node in &cluster {
            node.stop().await;
        }
    });
    runtime.block_on(async {
        a.close().await;
        b.close().await;
    });
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
