//! Loopback benchmarks of the WebSocket transport: one-way rate of 16-byte-body frames and
//! round-trip latency. `cargo bench -p concord-transport-ws` (or `cargo xtask bench`).

use std::sync::Arc;
use std::time::Duration;

use concord_core::id::{ClusterId, NodeInfo};
use concord_core::transport::Transport;
use concord_transport_conformance::measure;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const FRAMES_PER_ITERATION: u64 = 100_000;

async fn pair() -> (Arc<dyn Transport>, Arc<dyn Transport>, NodeInfo, NodeInfo) {
    use concord_transport_ws::{WsOptions, WsTransport};
    let secret = b"benchmark cluster secret, 32 by";
    let a = WsTransport::bind(WsOptions::new("a", ClusterId(1), secret)).await.unwrap();
    let b = WsTransport::bind(WsOptions::new("b", ClusterId(1), secret)).await.unwrap();
    let a_info = NodeInfo::new("a", format!("ws://{}", a.local_addr()));
    let b_info = NodeInfo::new("b", format!("ws://{}", b.local_addr()));
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
    group.finish();
    echo.abort();
    runtime.block_on(async {
        a.close().await;
        b.close().await;
    });
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
