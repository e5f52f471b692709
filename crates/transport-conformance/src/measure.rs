//! Loopback measurements the transports' benchmarks share: one-way message rate, round-trip
//! latency and Raft proposals over three nodes. Each returns the time a fixed amount of work took,
//! for criterion's `iter_custom`; [`benchmarks`] runs them all as one transport's bench file.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_core::id::{NodeId, NodeInfo};
use concord_core::transport::{Incoming, Transport, TransportError};
use criterion::{Criterion, Throughput};

/// Frames one iteration of the one-way benchmark sends.
pub const FRAMES_PER_ITERATION: u64 = 100_000;
/// Proposals one iteration of the Raft benchmark commits.
pub const RAFT_PROPOSALS_PER_ITERATION: u64 = 1_000;
/// Proposals in flight at once in the Raft benchmark.
pub const RAFT_PROPOSALS_IN_FLIGHT: u64 = 100;

/// Frames per `send` call in [`one_way`], as the runtime groups a round's frames per peer.
pub const SEND_BATCH_FRAMES: usize = 256;

/// A codec frame with a 16-byte body (22 bytes in all), the benchmarks' message.
pub fn small_frame() -> Bytes {
    crate::codec_frame(0, concord_core::codec::HEADER_BYTES + 16)
}

/// Sends `frames` small frames from `sender` to `to` (whose transport is `receiver`) in batches,
/// yielding while the queue is full, and returns the time until the last one arrived.
pub async fn one_way(
    sender: &Arc<dyn Transport>,
    receiver: &Arc<dyn Transport>,
    to: &NodeId,
    frames: u64,
) -> Duration {
    let started = tokio::time::Instant::now();
    let receiver = receiver.clone();
    let receiving = tokio::spawn(async move {
        let mut received = 0;
        while received < frames {
            match receiver.recv().await {
                Ok(Incoming::Frame { .. }) => received += 1,
                Ok(_) => {}
                Err(error) => panic!("recv failed: {error}"),
            }
        }
    });
    let frame = small_frame();
    let mut sent = 0;
    while sent < frames {
        let batch = (frames - sent).min(SEND_BATCH_FRAMES as u64) as usize;
        match sender.send(to, vec![frame.clone(); batch]).await {
            Ok(()) => sent += batch as u64,
            Err(TransportError::QueueFull { .. }) => tokio::task::yield_now().await,
            Err(error) => panic!("send failed: {error}"),
        }
    }
    receiving.await.expect("receiver task");
    started.elapsed()
}

/// Starts echoing every frame `node` receives back to its sender; abort the task to stop.
pub fn echo(node: Arc<dyn Transport>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(incoming) = node.recv().await {
            if let Incoming::Frame { from, frame } = incoming {
                let _ = node.send(&from, vec![frame]).await;
            }
        }
    })
}

/// `round_trips` sequential round trips from `sender` to an [`echo`]ing peer `to`; returns the
/// total time.
pub async fn round_trips(sender: &Arc<dyn Transport>, to: &NodeId, round_trips: u64) -> Duration {
    let frame = small_frame();
    let started = tokio::time::Instant::now();
    for _ in 0..round_trips {
        sender.send(to, vec![frame.clone()]).await.expect("send");
        loop {
            match sender.recv().await {
                Ok(Incoming::Frame { .. }) => break,
                Ok(_) => {}
                Err(error) => panic!("recv failed: {error}"),
            }
        }
    }
    started.elapsed()
}

/// Starts a three-node (or any size) Raft cluster over `transports` (each with its node's info),
/// in memory storage, and waits (up to 30 s) for a leader every node knows.
pub async fn raft_cluster(
    transports: Vec<(Arc<dyn Transport>, concord_core::id::NodeInfo)>,
) -> Vec<concord_runtime::Consensus> {
    let members: Vec<_> = transports.iter().map(|(_, info)| info.clone()).collect();
    let mut nodes = Vec::new();
    for (index, (transport, info)) in transports.into_iter().enumerate() {
        let node = concord_runtime::Consensus::builder(info.id.as_str())
            .config(crate::cluster::config())
            .cluster_id(concord_core::id::ClusterId(1))
            .members(members.clone())
            .transport(transport)
            .seed(9_000 + index as u64)
            .start()
            .await
            .expect("node starts");
        nodes.push(node);
    }
    crate::cluster::wait_for_leader(&nodes).await;
    nodes
}

/// Commits `proposals` distinct keys through the cluster from `concurrency` tasks spread over all
/// nodes, and returns the time it took. `round` keeps keys distinct across calls.
pub async fn raft_proposals(
    nodes: &[concord_runtime::Consensus],
    round: u64,
    proposals: u64,
    concurrency: u64,
) -> Duration {
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let node = nodes[task as usize % nodes.len()].clone();
            tokio::spawn(async move {
                let mut proposal = task;
                while proposal < proposals {
                    let key = format!("bench-{round}-{proposal}");
                    let result = node.propose_bytes(&key, Bytes::from_static(b"value")).await;
                    assert!(result.accepted, "proposal {key} failed: {:?}", result.error);
                    proposal += concurrency;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("proposal task");
    }
    started.elapsed()
}

/// The whole benchmark of one transport, as criterion group `group_name`: one-way rate, round
/// trips, and Raft over three nodes. `node(id)` binds a node of the transport on 127.0.0.1 with an
/// OS-chosen port and returns it with the address peers dial.
pub fn benchmarks<Node, Bound>(criterion: &mut Criterion, group_name: &str, node: Node)
where
    Node: Fn(&'static str) -> Bound,
    Bound: Future<Output = (Arc<dyn Transport>, NodeInfo)>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("benchmark runtime");
    let (a, b, b_info) = runtime.block_on(async {
        let (a, a_info) = node("a").await;
        let (b, b_info) = node("b").await;
        a.add_peer(&b_info).expect("add b");
        b.add_peer(&a_info).expect("add a");
        (a, b, b_info)
    });
    let mut group = criterion.benchmark_group(group_name);
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(FRAMES_PER_ITERATION));
    group.bench_function("one_way_16_byte_frames", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    total += one_way(&a, &b, &b_info.id, FRAMES_PER_ITERATION).await;
                }
                total
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    let echoing = {
        let _inside_runtime = runtime.enter();
        echo(b.clone())
    };
    group.bench_function("round_trip", |bencher| {
        bencher.iter_custom(|iterations| runtime.block_on(round_trips(&a, &b_info.id, iterations)))
    });
    echoing.abort();
    let cluster = runtime.block_on(async {
        let mut transports = Vec::new();
        for id in ["r1", "r2", "r3"] {
            transports.push(node(id).await);
        }
        for (transport, _) in &transports {
            for (_, info) in &transports {
                transport.add_peer(info).expect("add a Raft peer");
            }
        }
        raft_cluster(transports).await
    });
    group.throughput(Throughput::Elements(RAFT_PROPOSALS_PER_ITERATION));
    let mut round = 0;
    group.bench_function("raft_three_nodes_proposals", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    round += 1;
                    total += raft_proposals(
                        &cluster,
                        round,
                        RAFT_PROPOSALS_PER_ITERATION,
                        RAFT_PROPOSALS_IN_FLIGHT,
                    )
                    .await;
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
        a.close().await;
        b.close().await;
    });
}
