//! Loopback measurements the transports' benchmarks share: one-way message rate and round-trip
//! latency. Each returns the time a fixed amount of work took, for criterion's `iter_custom`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_core::id::NodeId;
use concord_core::transport::{Incoming, Transport, TransportError};

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
