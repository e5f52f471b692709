//! The lesson's "Simple Majority Consensus" block: propose, get, subscribe.
mod common;

use concord_core::prelude::*;
use concord_runtime::MemoryNetwork;

#[tokio::main]
async fn main() {
    let network = MemoryNetwork::new();
    let config = common::fast(Config::for_mechanism(MechanismKind::SimpleMajority));
    let nodes = common::start_cluster(&network, &["agent-001", "agent-002", "agent-003"], &config).await;
    let consensus = &nodes[0];

    let mut updates = consensus.subscribe("player_score");
    let accepted = consensus.propose("player_score", &100i64).await;
    if accepted {
        println!("Proposal accepted by majority");
    } else {
        println!("Proposal rejected");
    }
    let score: Option<i64> = consensus.get("player_score").expect("an i64");
    println!("Current score: {}", score.map_or("none".into(), |s| s.to_string()));
    if let Some(update) = updates.next().await {
        println!("Score updated to: {}", update.value::<i64>().ok().flatten().unwrap_or_default());
    }
    for node in &nodes {
        node.stop().await;
    }
}
