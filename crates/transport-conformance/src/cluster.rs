//! The whole-system check: a three-node Raft cluster from `concord-runtime` over the transport.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_core::config::{Config, ElectionTimeout, MechanismKind};
use concord_core::event::Event;
use concord_core::id::{ClusterId, NodeInfo};
use concord_runtime::{Consensus, SharedMemoryStorage};

use crate::support::*;

const TASKS: usize = 100;
const PROPOSALS_PER_TASK: usize = 100;
const PROPOSALS_AFTER_RESTART: usize = 100;
/// Attempts per proposal: a proposal made during a leader change may fail and is retried.
const ATTEMPTS_MAX: usize = 50;

pub(crate) fn config() -> Config {
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    // Real time on a loaded two-core machine: generous timeouts keep elections rare.
    config.heartbeat_interval = Duration::from_millis(100);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(600), max: Duration::from_millis(1200) };
    config.timeout = Duration::from_secs(10);
    config
}

async fn start(
    index: usize,
    node: &TestNode,
    members: &[NodeInfo],
    storage: &SharedMemoryStorage,
) -> Consensus {
    Consensus::builder(node.info.id.as_str())
        .config(config())
        .cluster_id(ClusterId(1))
        .members(members.to_vec())
        .transport(node.transport.clone())
        .storage(Box::new(storage.clone()))
        .seed(7_000 + index as u64)
        .start()
        .await
        .unwrap_or_else(|error| panic!("node {} does not start: {error}", node.info.id))
}

async fn poll_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn wait_for_leader(nodes: &[Consensus]) -> usize {
    poll_until(Duration::from_secs(30), "one leader that every node knows", || {
        let leaders: Vec<_> = nodes.iter().filter(|node| node.is_leader()).collect();
        leaders.len() == 1
            && nodes
                .iter()
                .all(|node| node.leader().map(|info| info.id) == Some(leaders[0].node_id().clone()))
    })
    .await;
    nodes.iter().position(|node| node.is_leader()).expect("a leader")
}

async fn propose_until_accepted(node: &Consensus, key: &str, value: Bytes) -> usize {
    for attempt in 1..=ATTEMPTS_MAX {
        let result = node.propose_bytes(key, value.clone()).await;
        if result.accepted {
            return attempt;
        }
        tracing::debug!(key, error = ?result.error, "proposal not accepted; retrying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proposal {key} not accepted after {ATTEMPTS_MAX} attempts");
}

fn value_of(key: &str) -> Bytes {
    Bytes::from(format!("value of {key}"))
}

/// Three Raft nodes over the transport elect a leader, commit 10,000 proposals made concurrently
/// (100 tasks × 100, spread over all nodes; followers forward), survive the restart of a follower
/// (which resumes from its storage at the same address), commit more, and converge: every node
/// ends with every key.
pub async fn raft_cluster(factory: &dyn TransportFactory) {
    bounded("raft_cluster", Duration::from_secs(300), async {
        let mut test_nodes = Vec::new();
        for id in ["n1", "n2", "n3"] {
            test_nodes.push(factory.create(NodeSpec::new(id, Limits::for_cluster())).await);
        }
        let members: Vec<NodeInfo> = test_nodes.iter().map(|node| node.info.clone()).collect();
        let storages: Vec<SharedMemoryStorage> = (0..3).map(|_| SharedMemoryStorage::new()).collect();
        let mut nodes = Vec::new();
        for (index, node) in test_nodes.iter().enumerate() {
            nodes.push(start(index, node, &members, &storages[index]).await);
        }
        let leader = wait_for_leader(&nodes).await;

        let started = tokio::time::Instant::now();
        let shared_nodes = Arc::new(nodes.clone());
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let nodes = shared_nodes.clone();
                tokio::spawn(async move {
                    let node = &nodes[task % nodes.len()];
                    let mut attempts = 0;
                    for proposal in 0..PROPOSALS_PER_TASK {
                        let key = format!("k{task:03}-{proposal:03}");
                        attempts += propose_until_accepted(node, &key, value_of(&key)).await;
                    }
                    attempts
                })
            })
            .collect();
        let mut attempts = 0;
        for task in tasks {
            attempts += task.await.expect("proposal task");
        }
        let elapsed = started.elapsed();
        tracing::info!(?elapsed, attempts, "10,000 proposals committed");
        println!(
            "raft_cluster: {} proposals committed in {elapsed:?} ({:.0}/s, {attempts} attempts)",
            TASKS * PROPOSALS_PER_TASK,
            (TASKS * PROPOSALS_PER_TASK) as f64 / elapsed.as_secs_f64()
        );

        // Restart a follower: stop it (which closes its transport), bring it back at the same
        // address with the same storage.
        let follower = (leader + 1) % 3;
        // The leader stays up and should see the follower go and come back (`node:unreachable`,
        // then `node:reconnected`), fed by the transport's link reports.
        let mut events = nodes[leader].events();
        let watched = test_nodes[follower].info.id.clone();
        let watcher = tokio::spawn(async move {
            let mut unreachable = false;
            while let Some(event) = events.next().await {
                match event {
                    Event::NodeUnreachable { node } if node == watched => unreachable = true,
                    Event::NodeReconnected { node } if node == watched && unreachable => return true,
                    _ => {}
                }
            }
            false
        });
        nodes[follower].stop().await;
        let address = test_nodes[follower].info.address.clone();
        let id = test_nodes[follower].info.id.clone();
        test_nodes[follower] = factory
            .create(NodeSpec {
                listen_address: Some(address),
                ..NodeSpec::new(id.as_str(), Limits::for_cluster())
            })
            .await;
        nodes[follower] = start(follower, &test_nodes[follower], &members, &storages[follower]).await;

        let writer = wait_for_leader(&nodes).await;
        for proposal in 0..PROPOSALS_AFTER_RESTART {
            let key = format!("after-restart-{proposal:03}");
            let node = &nodes[(writer + proposal) % 3];
            propose_until_accepted(node, &key, value_of(&key)).await;
        }

        if factory.capabilities().reports_link_status {
            let seen = tokio::time::timeout(Duration::from_secs(30), watcher)
                .await
                .expect("the leader reports the follower unreachable, then reconnected, within 30 s")
                .expect("event watcher");
            assert!(seen, "the leader's event stream ended before node:reconnected");
        } else {
            watcher.abort();
        }

        let mut keys: Vec<String> = (0..TASKS)
            .flat_map(|task| (0..PROPOSALS_PER_TASK).map(move |proposal| format!("k{task:03}-{proposal:03}")))
            .collect();
        keys.extend((0..PROPOSALS_AFTER_RESTART).map(|proposal| format!("after-restart-{proposal:03}")));
        poll_until(Duration::from_secs(60), "every node to hold every key", || {
            nodes.iter().all(|node| keys.iter().all(|key| node.get_bytes(key) == Some(value_of(key))))
        })
        .await;
        for node in &nodes {
            node.stop().await;
        }
    })
    .await;
}
