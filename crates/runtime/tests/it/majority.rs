use std::time::Duration;

use concord_core::prelude::*;
use concord_runtime::MemoryNetwork;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn simple_majority_accepts_with_vote_counts() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, majority_config()).await;
    let result = nodes[0].propose_with_result("player_score", &100u32).await;
    assert!(result.accepted, "{result:?}");
    assert_eq!(result.quorum_required, 2);
    assert!(result.votes.in_favor >= 2);
    assert_eq!(result.votes.total, 3);
    assert!(nodes[0].leader().is_none(), "simple majority has no leader");
    wait_until(Duration::from_secs(5), "all apply", || {
        nodes.iter().all(|n| n.get::<u32>("player_score").ok().flatten() == Some(100))
    })
    .await;
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn manual_voting_through_events() {
    let network = MemoryNetwork::new();
    let mut config = majority_config();
    config.voting = VotingMode::Manual;
    let nodes = cluster(&network, 3, config).await;
    // Every node votes against: the proposal is rejected.
    let mut voters = Vec::new();
    for node in &nodes {
        let node = node.clone();
        let mut events = node.events();
        voters.push(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Event::ProposalReceived { proposal_id, .. } = event {
                    let _ = node.vote(&proposal_id, false);
                }
            }
        }));
    }
    let result = nodes[0].propose_with_result("setting", &"newValue").await;
    assert!(!result.accepted, "{result:?}");
    assert!(result.votes.against >= 2, "{result:?}");
    assert!(result.error.is_some());
    for voter in voters {
        voter.abort();
    }
    stop_all(&nodes).await;
}

/// Simple majority applies decisions of different keys in different orders on each replica, so the
/// session table's client limit (and expiry) would make replicas disagree: it does not apply there.
#[tokio::test(start_paused = true)]
async fn simple_majority_is_not_bound_by_the_raft_client_limit() {
    let network = MemoryNetwork::new();
    let mut config = majority_config();
    config.max_client_records = 1;
    let nodes = cluster(&network, 3, config).await;
    // Three clients (one per node), each on its own key.
    for (index, node) in nodes.iter().enumerate() {
        let result = node.propose_with_result(&format!("key-{index}"), &index).await;
        assert!(result.accepted, "client of {}: {result:?}", node.node_id());
    }
    wait_until(Duration::from_secs(5), "every replica applied every write", || {
        nodes.iter().all(|node| {
            (0..3).all(|index| node.get::<usize>(&format!("key-{index}")).ok().flatten() == Some(index))
        })
    })
    .await;
    for node in &nodes {
        assert_eq!(node.debug_state().session_clients, 3, "{}", node.node_id());
    }
    stop_all(&nodes).await;
}
