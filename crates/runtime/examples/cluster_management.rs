//! The lesson's "Cluster Management" block: add, remove, list, leader.
mod common;

use concord_core::prelude::*;
use concord_runtime::{MemoryNetwork, SharedMemoryStorage};

#[tokio::main]
async fn main() {
    let network = MemoryNetwork::new();
    let config = common::fast(Config::for_mechanism(MechanismKind::Raft));
    let ids = ["node-001", "node-002", "node-003"];
    let nodes = common::start_cluster(&network, &ids, &config).await;
    let consensus = common::wait_for_leader(&nodes).await;

    // Add a new node: it starts knowing the cluster, and the cluster adds it through the log.
    let node4 = NodeInfo::new("node-004", "host4:5000").with_metadata("region", "us-west");
    let mut members = common::members(&ids);
    members.push(node4.clone());
    let fourth =
        common::start_node(&network, "node-004", &config, &members, SharedMemoryStorage::new()).await;
    if let Err(error) = consensus.add_node(node4).await {
        eprintln!("add_node failed: {error}");
    }

    // Remove a node.
    if let Err(error) = consensus.remove_node("node-002").await {
        eprintln!("remove_node failed: {error}");
    }

    for node in consensus.nodes() {
        println!("{} at {}", node.id, node.address);
    }
    if let Some(leader) = consensus.leader() {
        println!("Leader: {}", leader.id);
    }
    if consensus.is_leader() {
        println!("performing leader duties");
    }
    for node in nodes.iter().chain(std::iter::once(&fourth)) {
        node.stop().await;
    }
}
