//! The lesson's "Distributed Game State" block, done without races: players join with an atomic
//! compare-and-swap loop (not read-then-propose), scores are atomic counters.
mod common;

use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork};

/// Adds a player atomically: read, then compare-and-swap against what was read; retry on conflict.
pub async fn add_player(consensus: &Consensus, player: &str) -> Result<Vec<String>, ProposalError> {
    for _ in 0..16 {
        let players: Option<Vec<String>> = consensus.read("players").await.ok().flatten();
        let mut next = players.clone().unwrap_or_default();
        next.push(player.to_owned());
        let outcome = consensus.compare_and_swap("players", players.as_ref(), &next).await?;
        if outcome.swapped {
            return Ok(next);
        }
    }
    Err(ProposalError::Rejected { reason: "too much contention on players".into() })
}

#[tokio::main]
async fn main() {
    let network = MemoryNetwork::new();
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    config.nodes = Some(5);
    config.quorum = Quorum::Count(3);
    let config = common::fast(config);
    let ids = ["game-1", "game-2", "game-3", "game-4", "game-5"];
    let nodes = common::start_cluster(&network, &ids, &config).await;
    let game = common::wait_for_leader(&nodes).await;

    for (i, player) in ["alice", "bob", "carol"].iter().enumerate() {
        let players = add_player(&nodes[i], player).await.expect("join");
        println!("{player} joined: {players:?}");
    }
    if !game.is_leader() {
        panic!("Only leader can start game");
    }
    game.propose("game_state", "playing").await;
    game.propose("current_round", &1u32).await;
    for (player, points) in [("alice", 10), ("bob", 7), ("alice", 5)] {
        let score = nodes[4].add(&format!("scores:{player}"), points).await.expect("score");
        println!("{player} scores {points} → {score}");
    }
    let state: Option<String> = nodes[2].read("game_state").await.expect("read");
    println!("game_state on game-3: {}", state.unwrap_or_default());
    for node in &nodes {
        node.stop().await;
    }
}
