//! The lesson's "Proposal Results" block.
mod common;

use concord_core::prelude::*;
use concord_runtime::MemoryNetwork;

#[tokio::main]
async fn main() {
    let network = MemoryNetwork::new();
    let config = common::fast(Config::for_mechanism(MechanismKind::SimpleMajority));
    let nodes = common::start_cluster(&network, &["agent-001", "agent-002", "agent-003"], &config).await;
    let consensus = &nodes[0];

    let result = consensus.propose_with_result("setting", "newValue").await;
    println!(
        "\n  Proposal ID: {}\n  Accepted: {}\n  Key: {}\n  Votes For: {}\n  Votes Against: {}\n  Total Votes: {}\n  Quorum Met: {}\n",
        result.proposal_id,
        result.accepted,
        result.key,
        result.votes.in_favor,
        result.votes.against,
        result.votes.total,
        result.votes.in_favor >= result.quorum_required
    );
    if !result.accepted {
        if let Some(error) = &result.error {
            eprintln!("Rejected: {error}");
        }
    }
    for node in &nodes {
        node.stop().await;
    }
}
