//! The lesson's "Handling Network Partitions" block: unreachable, read-only mode, healed.
mod common;

use std::time::Duration;

use concord_core::prelude::*;
use concord_runtime::MemoryNetwork;

#[tokio::main]
async fn main() {
    let network = MemoryNetwork::new();
    let config = common::fast(Config::for_mechanism(MechanismKind::Raft));
    let nodes = common::start_cluster(&network, &["node-001", "node-002", "node-003"], &config).await;
    common::wait_for_leader(&nodes).await;
    let consensus = nodes[0].clone();
    let mut events = consensus.events();
    let watcher = {
        let consensus = consensus.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Event::NodeUnreachable { node } => {
                        println!("Lost connection to {node}");
                        let nodes = consensus.nodes();
                        let active = nodes.iter().filter(|n| n.connected).count();
                        if active < nodes.len().div_ceil(2) {
                            println!("Lost quorum - entering read-only mode");
                        }
                    }
                    Event::NodeReconnected { node } => println!("{node} reconnected"),
                    Event::PartitionDetected { side, .. } => println!("Partition detected: {side:?}"),
                    Event::PartitionHealed => println!("Partition healed - resuming normal operation"),
                    _ => {}
                }
            }
        })
    };
    network.isolate("node-001");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let result = consensus.propose_with_result("k", &1u8).await;
    println!("write while isolated: {}", result.error.map_or("accepted".into(), |e| e.to_string()));
    network.heal();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    watcher.abort();
    for node in &nodes {
        node.stop().await;
    }
}
