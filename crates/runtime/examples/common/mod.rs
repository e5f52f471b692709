//! Shared set-up for the examples: an in-process cluster on the in-memory transport.
#![allow(dead_code)]

use std::time::Duration;

use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork, SharedMemoryStorage};

/// Timeouts scaled down from the lesson's seconds so the examples run in moments.
pub fn fast(mut config: Config) -> Config {
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
    config.timeout = Duration::from_millis(1500);
    config
}

pub fn members(ids: &[&str]) -> Vec<NodeInfo> {
    ids.iter().enumerate().map(|(i, id)| NodeInfo::new(*id, format!("localhost:{}", 5001 + i))).collect()
}

pub async fn start_node(
    network: &MemoryNetwork,
    id: &str,
    config: &Config,
    members: &[NodeInfo],
    storage: SharedMemoryStorage,
) -> Consensus {
    Consensus::builder(id)
        .config(config.clone())
        .members(members.to_vec())
        .transport(network.transport(id))
        .storage(Box::new(storage))
        .start()
        .await
        .unwrap_or_else(|error| panic!("{id} cannot start: {error}"))
}

pub async fn start_cluster(network: &MemoryNetwork, ids: &[&str], config: &Config) -> Vec<Consensus> {
    let members = members(ids);
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(start_node(network, id, config, &members, SharedMemoryStorage::new()).await);
    }
    nodes
}

pub async fn wait_for_leader(nodes: &[Consensus]) -> Consensus {
    for _ in 0..400 {
        if let Some(node) = nodes.iter().find(|n| n.is_leader()) {
            return node.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader elected within 4 s");
}
