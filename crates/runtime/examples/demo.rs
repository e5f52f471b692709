//! `cargo xtask demo`: a 5-node Raft cluster plays the lesson's game (players join, scores update),
//! survives the loss of its leader and a partition, and a 3-node simple-majority group votes. Ends
//! by checking that every node holds the same state; exits non-zero if not.
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork, SharedMemoryStorage};

fn log(section: &str, message: impl AsRef<str>) {
    println!("[{section:>8}] {}", message.as_ref());
}

/// Prints the interesting events of a node as they happen.
fn narrate(node: &Consensus, section: &'static str) -> tokio::task::JoinHandle<()> {
    let mut events = node.events();
    let me = node.node_id().clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::LeaderElected { leader, term } if leader == me => {
                    log(section, format!("leader:elected    {leader} is leader for term {term}"))
                }
                Event::PartitionDetected { side, reachable } => log(
                    section,
                    format!("partition:detected on {me}: {side:?} side, reaches {}", names(&reachable)),
                ),
                Event::PartitionHealed => log(section, format!("partition:healed   on {me}")),
                Event::ConsensusAccepted(result) if section == "majority" => log(
                    section,
                    format!(
                        "consensus:accepted {} = {} ({} of {} votes, {} needed)",
                        result.key,
                        result
                            .value
                            .and_then(|v| concord_core::typed::decode_value::<String>(&v).ok())
                            .unwrap_or_default(),
                        result.votes.in_favor,
                        result.votes.total,
                        result.quorum_required
                    ),
                ),
                _ => {}
            }
        }
    })
}

fn names(ids: &[NodeId]) -> String {
    ids.iter().map(|id| id.as_str()).collect::<Vec<_>>().join(", ")
}

async fn leader_of(nodes: &[Option<Consensus>]) -> Consensus {
    for _ in 0..500 {
        if let Some(node) = nodes.iter().flatten().find(|n| n.is_leader()) {
            return node.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader within 5 s");
}

async fn join(node: &Consensus, player: &str) -> Result<Vec<String>, ProposalError> {
    for _ in 0..16 {
        let players: Option<Vec<String>> = node.read("players").await.ok().flatten();
        let mut next = players.clone().unwrap_or_default();
        next.push(player.to_owned());
        if node.compare_and_swap("players", players.as_ref(), &next).await?.swapped {
            return Ok(next);
        }
    }
    Err(ProposalError::Rejected { reason: "contention".into() })
}

/// Waits until every node has applied the same index, then compares the keys the demo wrote.
async fn converged(nodes: &[Consensus], keys: &[&str]) -> bool {
    for _ in 0..500 {
        let applied: Vec<LogIndex> = nodes.iter().map(|n| n.debug_state().last_applied).collect();
        if applied.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    keys.iter().all(|key| {
        let first = nodes[0].get_bytes(key);
        nodes.iter().all(|n| n.get_bytes(key) == first)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    let network = MemoryNetwork::new();
    let config = common::fast(Config::for_mechanism(MechanismKind::Raft));
    let ids = ["game-1", "game-2", "game-3", "game-4", "game-5"];
    let members = common::members(&ids);
    let storages: Vec<SharedMemoryStorage> = ids.iter().map(|_| SharedMemoryStorage::new()).collect();
    log("raft", format!("starting {} nodes: {}", ids.len(), ids.join(", ")));
    let mut nodes: Vec<Option<Consensus>> = Vec::new();
    let mut narrators = Vec::new();
    for (id, storage) in ids.iter().zip(&storages) {
        let node = common::start_node(&network, id, &config, &members, storage.clone()).await;
        narrators.push(narrate(&node, "raft"));
        nodes.push(Some(node));
    }
    let leader = leader_of(&nodes).await;

    for (i, player) in ["alice", "bob", "carol"].iter().enumerate() {
        let node = nodes[i + 1].as_ref().expect("up");
        match join(node, player).await {
            Ok(players) => {
                log("raft", format!("{player} joins through {} → players = {players:?}", node.node_id()))
            }
            Err(error) => log("raft", format!("{player} could not join: {error}")),
        }
    }
    leader.propose("game_state", "playing").await;
    for (player, points) in [("alice", 10), ("bob", 7), ("carol", 3), ("alice", 5)] {
        let node = nodes[3].as_ref().expect("up");
        match node.add(&format!("scores:{player}"), points).await {
            Ok(score) => log("raft", format!("{player} scores {points:>2} → {score}")),
            Err(error) => log("raft", format!("score update failed: {error}")),
        }
    }

    let killed = nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.is_leader())).expect("a leader");
    log("raft", format!("killing the leader {}", ids[killed]));
    if let Some(node) = nodes[killed].take() {
        node.stop().await;
    }
    let new_leader = leader_of(&nodes).await;
    log("raft", format!("{} took over; the game goes on", new_leader.node_id()));
    let round_node = nodes.iter().flatten().next().expect("a node").clone();
    round_node.propose("current_round", &2u32).await;
    if let Ok(score) = round_node.add("scores:bob", 8).await {
        log("raft", format!("bob scores  8 → {score}"));
    }

    let lonely = nodes.iter().flatten().find(|n| !n.is_leader()).expect("a follower").clone();
    log("raft", format!("partition: cutting {} off from the rest", lonely.node_id()));
    network.isolate(lonely.node_id().as_str());
    for _ in 0..300 {
        if lonely.is_read_only() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = lonely.propose_with_result("game_state", "hacked").await;
    match &refused.error {
        Some(error) => {
            log("raft", format!("write on the minority side {} rejected: {error}", lonely.node_id()))
        }
        None => log("raft", "UNEXPECTED: the minority side accepted a write"),
    }
    let majority_side =
        nodes.iter().flatten().find(|n| n.node_id() != lonely.node_id()).expect("node").clone();
    if let Ok(score) = majority_side.add("scores:carol", 4).await {
        log("raft", format!("meanwhile the majority plays on: carol scores 4 → {score}"));
    }
    network.heal();
    for _ in 0..300 {
        if !lonely.is_read_only() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log("raft", format!("restarting {} from its storage", ids[killed]));
    let restarted =
        common::start_node(&network, ids[killed], &config, &members, storages[killed].clone()).await;
    narrators.push(narrate(&restarted, "raft"));
    nodes[killed] = Some(restarted);

    let all: Vec<Consensus> = nodes.iter().flatten().cloned().collect();
    let keys = ["players", "game_state", "current_round", "scores:alice", "scores:bob", "scores:carol"];
    let raft_ok = converged(&all, &keys).await && refused.error.is_some();
    let scores: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|p| format!("{p}={}", all[0].get::<i64>(&format!("scores:{p}")).ok().flatten().unwrap_or(0)))
        .collect();
    log(
        "raft",
        format!(
            "check: {} nodes hold the same state ({}) → {}",
            all.len(),
            scores.join(", "),
            if raft_ok { "OK" } else { "MISMATCH" }
        ),
    );

    // Simple majority: quick voting, no leader.
    let majority_config = common::fast(Config::for_mechanism(MechanismKind::SimpleMajority));
    let voter_ids = ["voter-1", "voter-2", "voter-3"];
    let voters = common::start_cluster(&network, &voter_ids, &majority_config).await;
    for voter in &voters[..1] {
        narrators.push(narrate(voter, "majority"));
    }
    log(
        "majority",
        format!(
            "3 voters, quorum {:?} → {} votes needed",
            majority_config.quorum,
            majority_config.quorum.required(3)
        ),
    );
    let result = voters[0].propose_with_result("map", "desert").await;
    log("majority", format!("voter-1 proposes map = desert → accepted: {}", result.accepted));
    // Two voters try to set `mode` from the same version (0: never set) at the same time: at most
    // one value can be accepted for a key and version.
    let version_zero = || Expectation::Version(0);
    let encode = |text: &str| concord_core::typed::encode_value(text).ok();
    let (a, b) = tokio::join!(
        voters[1].compare_and_swap_bytes("mode", version_zero(), encode("ctf")),
        voters[2].compare_and_swap_bytes("mode", version_zero(), encode("deathmatch"))
    );
    let swapped = |outcome: &Result<concord_runtime::CasOutcome, ProposalError>| {
        outcome.as_ref().is_ok_and(|o| o.swapped)
    };
    log(
        "majority",
        format!(
            "voter-2 and voter-3 race to set mode at version 0: ctf won={}, deathmatch won={} (never both)",
            swapped(&a),
            swapped(&b)
        ),
    );
    let majority_ok =
        !(swapped(&a) && swapped(&b)) && result.accepted && converged(&voters, &["map", "mode"]).await;
    if !majority_ok {
        for voter in &voters {
            log(
                "majority",
                format!(
                    "{}: map={:?} mode={:?} applied={}",
                    voter.node_id(),
                    voter.get::<String>("map").ok().flatten(),
                    voter.get::<String>("mode").ok().flatten(),
                    voter.debug_state().last_applied
                ),
            );
        }
    }
    log(
        "majority",
        format!("check: 3 voters hold the same state → {}", if majority_ok { "OK" } else { "MISMATCH" }),
    );

    for narrator in narrators {
        narrator.abort();
    }
    for node in all.iter().chain(&voters) {
        node.stop().await;
    }
    log("demo", format!("finished in {:.1} s", started.elapsed().as_secs_f64()));
    if raft_ok && majority_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
