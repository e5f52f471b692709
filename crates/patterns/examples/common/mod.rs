//! Shared set-up for the examples: a three-node cluster on the in-memory transport.
#![allow(dead_code)]

use std::time::Duration;

use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork};

/// Timeouts scaled down so the examples run in moments.
pub fn fast(mechanism: MechanismKind) -> Config {
    let mut config = Config::for_mechanism(mechanism);
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
    config.timeout = Duration::from_millis(1000);
    config
}

pub const IDS: [&str; 3] = ["agent-001", "agent-002", "agent-003"];

pub async fn start_cluster(network: &MemoryNetwork, config: &Config) -> Vec<Consensus> {
    let members: Vec<NodeInfo> =
        IDS.iter().enumerate().map(|(i, id)| NodeInfo::new(*id, format!("localhost:{}", 5001 + i))).collect();
    let mut nodes = Vec::new();
    for id in IDS {
        let node = Consensus::builder(id)
            .config(config.clone())
            .members(members.clone())
            .transport(network.transport(id))
            .start()
            .await
            .unwrap_or_else(|error| panic!("{id} cannot start: {error}"));
        nodes.push(node);
    }
    nodes
}

/// Waits for a leader (Raft) or for the peers to connect (simple majority).
pub async fn wait_ready(nodes: &[Consensus]) -> Option<usize> {
    for _ in 0..400 {
        if nodes[0].config().mechanism == MechanismKind::SimpleMajority {
            if nodes.iter().all(|node| node.nodes().iter().all(|member| member.connected)) {
                return None;
            }
        } else if let Some(index) = nodes.iter().position(|node| node.is_leader()) {
            return Some(index);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cluster did not become ready within 4 s");
}

pub async fn stop_all(nodes: &[Consensus]) {
    for node in nodes {
        node.stop().await;
    }
}
