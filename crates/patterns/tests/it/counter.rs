//! The distributed counter (the lesson's exercise): exact under leader crashes, loss and retries.

use std::time::Duration;

use concord_core::error::ProposalError;
use concord_patterns::{Counter, PatternError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::{majority_config, raft_config, wait_converged, Cluster};

/// Clients on the two followers increment and decrement while 5 % of messages are lost and the
/// leader crashes and restarts. Every operation is acknowledged (they retry through the crash),
/// and the final value on every node equals the acknowledged sum: nothing lost, nothing twice.
#[tokio::test(start_paused = true)]
async fn the_counter_is_exact_across_a_leader_crash_and_message_loss() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    cluster.network.set_drop_probability(0.05);
    let mut tasks = Vec::new();
    for node in (0..3).filter(|index| *index != leader) {
        for client in 0..2 {
            let counter = Counter::new(cluster.nodes[node].clone(), format!("client-{node}-{client}"))
                .with_retry_for(Duration::from_secs(20));
            tasks.push(tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64((node * 10 + client) as u64);
                let mut acknowledged = 0i64;
                let mut failures = Vec::new();
                for _ in 0..25 {
                    let delta = if rng.gen_bool(0.7) { 1 } else { -1 };
                    match counter.add("score", delta).await {
                        Ok(_) => acknowledged += delta,
                        Err(error) => failures.push(error),
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
                }
                (acknowledged, failures)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.restart(leader, Duration::from_millis(700)).await;
    let mut expected = 0;
    for task in tasks {
        let (acknowledged, failures) = task.await.expect("client");
        assert!(failures.is_empty(), "operations failed: {failures:?}");
        expected += acknowledged;
    }
    cluster.network.set_drop_probability(0.0);
    let reader = Counter::new(cluster.nodes[(leader + 1) % 3].clone(), "reader");
    assert_eq!(reader.read("score").await.expect("read"), expected);
    wait_converged(&cluster.nodes, "score").await;
    for node in &cluster.nodes {
        assert_eq!(local_value(node, "score"), expected, "{} shows another value", node.node_id());
    }
    cluster.stop().await;
}

fn local_value(node: &concord_runtime::Consensus, key: &str) -> i64 {
    Counter::new(node.clone(), "local").value(key).expect("counter")
}

/// A handle restarted with the same client id continues its session; an operation is applied
/// exactly once even when the same client retries after the answer was lost (the leader crashed
/// right after committing).
#[tokio::test(start_paused = true)]
async fn a_restarted_client_continues_its_session() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let counter = Counter::new(cluster.nodes[follower].clone(), "alice");
    for _ in 0..3 {
        counter.increment("visits").await.expect("increment");
    }
    drop(counter);
    // A new handle with the same id (a restarted process) picks the session up.
    let counter = Counter::new(cluster.nodes[follower].clone(), "alice");
    assert_eq!(counter.increment("visits").await.expect("increment"), 4);
    // The leader crashes while an increment is in flight: the client retries under its session.
    let pending = tokio::spawn(async move { (counter.increment("visits").await, counter) });
    tokio::time::sleep(Duration::from_millis(2)).await;
    cluster.restart(leader, Duration::from_millis(500)).await;
    let (result, counter) = pending.await.expect("task");
    result.expect("acknowledged after the crash");
    assert_eq!(counter.read("visits").await.expect("read"), 5);
    cluster.stop().await;
}

/// The follower that proposed an increment stops hearing from the leader right after forwarding
/// it: the leader commits it with the third node, but the follower's attempt times out and the
/// client retries (a new proposal, so the runtime's own session cannot help). The retry finds the
/// client's session already at the operation's sequence: the increment counts once.
#[tokio::test(start_paused = true)]
async fn an_operation_whose_answer_was_lost_is_not_applied_twice() {
    let cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let (leader_id, follower_id) =
        (cluster.nodes[leader].node_id().to_string(), cluster.nodes[follower].node_id().to_string());
    let counter =
        Counter::new(cluster.nodes[follower].clone(), "bob").with_retry_for(Duration::from_secs(30));
    counter.increment("clicks").await.expect("first increment");
    cluster.network.cut(&leader_id, &follower_id);
    let pending = tokio::spawn(async move { (counter.increment("clicks").await, counter) });
    // Long enough for the first attempt to time out and a retry to be made.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        cluster.nodes[leader].get::<i64>("clicks").expect("decodes"),
        Some(2),
        "the leader applied it"
    );
    cluster.network.heal();
    let (result, counter) = pending.await.expect("task");
    result.expect("acknowledged once the follower hears again");
    assert_eq!(counter.read("clicks").await.expect("read"), 2, "applied exactly once");
    assert_eq!(counter.increment("clicks").await.expect("next increment"), 3);
    cluster.stop().await;
}

/// A minority refuses writes rather than diverging; the majority carries on; after healing every
/// node shows the majority's value. Batches over several counters are all or nothing.
#[tokio::test(start_paused = true)]
async fn a_minority_refuses_writes_and_batches_are_atomic() {
    let cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let isolated = (leader + 1) % 3;
    let majority_node = (leader + 2) % 3;
    let on_majority = Counter::new(cluster.nodes[majority_node].clone(), "majority");
    let on_minority =
        Counter::new(cluster.nodes[isolated].clone(), "minority").with_retry_for(Duration::from_secs(2));
    on_minority.increment("hits").await.expect("before the partition");
    cluster.network.isolate(cluster.nodes[isolated].node_id().as_str());
    let refused = on_minority.increment("hits").await;
    assert!(refused.is_err(), "the minority accepted a write: {refused:?}");
    for _ in 0..3 {
        on_majority.increment("hits").await.expect("the majority carries on");
    }
    cluster.network.heal();
    assert_eq!(on_majority.read("hits").await.expect("read"), 4 + i64::from(refused.is_ok()));
    wait_converged(&cluster.nodes, "hits").await;

    // All or nothing across counters.
    assert_eq!(on_majority.add_all(&[("a", 5), ("b", -5)]).await.expect("batch"), vec![5, -5]);
    on_majority.add("big", i64::MAX).await.expect("near the limit");
    let overflow = on_majority.add_all(&[("a", 1), ("big", 1)]).await;
    assert!(
        matches!(overflow, Err(PatternError::Consensus(ProposalError::Command(_)))),
        "overflow refused: {overflow:?}"
    );
    assert_eq!(on_majority.read("a").await.expect("read"), 5, "the refused batch changed nothing");
    // The refused batch did not consume the session: the next operation works.
    assert_eq!(on_majority.add_all(&[("a", 1), ("b", 1)]).await.expect("batch"), vec![6, -4]);
    cluster.stop().await;
}

/// Simple majority: single counters work from any node; multi-counter batches are refused.
#[tokio::test(start_paused = true)]
async fn simple_majority_counts_single_keys_and_refuses_batches() {
    let cluster = Cluster::start(3, majority_config()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut tasks = Vec::new();
    for node in &cluster.nodes {
        let counter = Counter::new(node.clone(), format!("c-{}", node.node_id()));
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = 0;
            for _ in 0..10 {
                match counter.increment("votes").await {
                    Ok(_) => acknowledged += 1,
                    Err(error) => panic!("increment failed: {error}"),
                }
            }
            acknowledged
        }));
    }
    let mut expected = 0;
    for task in tasks {
        expected += task.await.expect("task");
    }
    assert!(expected > 0);
    wait_converged(&cluster.nodes, "votes").await;
    assert_eq!(local_value(&cluster.nodes[0], "votes"), expected);
    let counter = Counter::new(cluster.nodes[0].clone(), "batcher");
    assert!(matches!(counter.add_all(&[("a", 1), ("b", 1)]).await, Err(PatternError::Unsupported { .. })));
    cluster.stop().await;
}
