//! The lesson's "Raft Consensus" block: events, leadership, proposals on the leader.
mod common;

use concord_core::prelude::*;
use concord_runtime::MemoryNetwork;

#[tokio::main]
async fn main() {
    let network = MemoryNetwork::new();
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    config.timeout = std::time::Duration::from_millis(3000);
    let config = common::fast(config);
    let nodes = common::start_cluster(&network, &["node-001", "node-002", "node-003"], &config).await;
    let raft = nodes[0].clone();

    let mut events = raft.events();
    let listener = {
        let raft = raft.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Event::LeaderElected { leader, .. } => {
                        println!("New leader: {leader}");
                        if &leader == raft.node_id() {
                            println!("I am the leader!");
                        }
                    }
                    Event::StateChanged { key, new_value, old_value, .. } => {
                        let show = |v: Option<bytes::Bytes>| {
                            v.and_then(|b| concord_core::typed::decode_value::<(String, u32)>(&b).ok())
                                .map_or("undefined".to_owned(), |(k, n)| format!("{{ {k}: {n} }}"))
                        };
                        println!("{key}: {} → {}", show(old_value), show(new_value));
                    }
                    _ => {}
                }
            }
        })
    };

    let leader = common::wait_for_leader(&nodes).await;
    // Only the leader proposes here, as in the lesson (followers would forward anyway).
    if leader.is_leader() {
        let result = leader.propose_with_result("config", &("maxPlayers".to_owned(), 10u32)).await;
        println!("Proposal {}", if result.accepted { "committed" } else { "failed" });
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    listener.abort();
    for node in &nodes {
        node.stop().await;
    }
}
