//! The lesson's "Debugging Consensus" block: debug state and verbose events.
mod common;

use concord_core::prelude::*;
use concord_runtime::MemoryNetwork;

#[tokio::main]
async fn main() {
    let network = MemoryNetwork::new();
    let config = common::fast(Config::for_mechanism(MechanismKind::Raft));
    let nodes = common::start_cluster(&network, &["node-001", "node-002", "node-003"], &config).await;
    let mut events = nodes[0].events();
    let verbose = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::VoteRequested { from, term } => println!("Vote requested by {from} for term {term}"),
                Event::VoteGranted { to, term } => println!("Vote granted to {to} for term {term}"),
                Event::LogAppended { index, term, key } => {
                    println!("Log entry: {term}/{index} - {}", key.unwrap_or_else(|| "(no key)".into()))
                }
                _ => {}
            }
        }
    });
    let leader = common::wait_for_leader(&nodes).await;
    leader.propose("player_score", &100i64).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let debug = nodes[0].debug_state();
    println!(
        "\n  Term: {}\n  State: {:?}\n  Leader: {}\n  Commit Index: {}\n  Log Length: {}\n",
        debug.current_term,
        debug.role,
        debug.leader_id.map_or("none".into(), |l| l.to_string()),
        debug.commit_index,
        debug.log_length
    );
    verbose.abort();
    for node in &nodes {
        node.stop().await;
    }
}
