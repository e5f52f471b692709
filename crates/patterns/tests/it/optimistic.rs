//! Optimistic updates: shown at once, decided by consensus, always ending at the consensus value.

use std::time::Duration;

use concord_core::prelude::Config;
use concord_patterns::{Optimistic, RollbackReason, UpdateOutcome};

use crate::support::{majority_config, raft_config, wait_converged, Cluster};

/// Two handles on different nodes race several updates on one key. While an update is pending
/// the view shows it; once all are decided, each handle's view is exactly the consensus value,
/// every rolled-back update was announced, and a rolled-back update takes its successors with it.
async fn racing_updates_end_at_the_consensus_value(config: Config) {
    let cluster = Cluster::start(3, config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = Optimistic::new(cluster.nodes[0].clone());
    let right = Optimistic::new(cluster.nodes[1].clone());
    let mut left_rollbacks = left.rollbacks();
    // Hold every message for a while (virtual time stands still while this task keeps yielding),
    // so all eight updates are pending together however fast the cluster decides.
    cluster.network.set_delay(Duration::from_millis(20));
    let mut tasks = Vec::new();
    for (name, handle) in [("left", &left), ("right", &right)] {
        for step in 0..4u32 {
            let handle = handle.clone();
            let value = format!("{name}-{step}");
            tasks.push(tokio::spawn(async move { (value.clone(), handle.update("title", &value).await) }));
        }
    }
    // Every update is shown at once: the view is the newest pending value of each handle.
    for _ in 0..100 {
        if left.pending("title") + right.pending("title") == 8 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(left.view::<String>("title").expect("view").as_deref(), Some("left-3"));
    assert_eq!(right.view::<String>("title").expect("view").as_deref(), Some("right-3"));
    cluster.network.set_delay(Duration::ZERO);
    let mut applied = Vec::new();
    let mut left_rolled_back = 0;
    for task in tasks {
        let (value, outcome) = task.await.expect("task");
        match outcome.expect("update") {
            UpdateOutcome::Applied { version } => applied.push((version, value)),
            UpdateOutcome::RolledBack(_) if value.starts_with("left") => left_rolled_back += 1,
            UpdateOutcome::RolledBack(_) => {}
        }
    }
    assert_eq!(left.pending("title") + right.pending("title"), 0);
    applied.sort();
    wait_converged(&cluster.nodes, "title").await;
    let consensus: String = cluster.nodes[2].get("title").expect("decodes").expect("set");
    // The last applied version holds the consensus value; versions are consecutive (1, 2, …).
    let (last_version, last_value) = applied.last().cloned().expect("something applied");
    assert_eq!(consensus, last_value);
    assert_eq!(cluster.nodes[2].version("title"), last_version);
    assert!(applied.iter().enumerate().all(|(i, (version, _))| *version == i as u64 + 1), "{applied:?}");
    assert_eq!(left.view::<String>("title").expect("view"), Some(consensus.clone()));
    assert_eq!(right.view::<String>("title").expect("view"), Some(consensus));
    let mut announced = 0;
    while let Ok(rollback) = left_rollbacks.try_recv() {
        assert!(matches!(
            rollback.reason,
            RollbackReason::Conflict { .. }
                | RollbackReason::PredecessorRolledBack
                | RollbackReason::Failed(_)
        ));
        announced += 1;
    }
    assert_eq!(announced, left_rolled_back, "every rollback is announced");
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn raft_optimistic_updates_end_at_the_consensus_value() {
    racing_updates_end_at_the_consensus_value(raft_config()).await;
}

#[tokio::test(start_paused = true)]
async fn simple_majority_optimistic_updates_end_at_the_consensus_value() {
    racing_updates_end_at_the_consensus_value(majority_config()).await;
}

/// A chain of pending updates built on a view that lost: the first is refused (another writer
/// came first) and every later one is rolled back with it, deterministically.
#[tokio::test(start_paused = true)]
async fn a_conflict_rolls_back_the_whole_chain() {
    let cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let node = &cluster.nodes[leader];
    let optimistic = Optimistic::new(node.clone());
    assert!(matches!(
        optimistic.update("mode", "a").await.expect("update"),
        UpdateOutcome::Applied { version: 1 }
    ));
    // Pause the handle's view: a foreign write lands before its next updates are decided.
    let first = tokio::spawn({
        let optimistic = optimistic.clone();
        async move { optimistic.update("mode", "b").await }
    });
    let second = tokio::spawn({
        let optimistic = optimistic.clone();
        async move { optimistic.update("mode", "c").await }
    });
    // Not yet polled: the foreign write is proposed first and wins the version both build on.
    assert!(node.propose("mode", "foreign").await);
    tokio::task::yield_now().await;
    let (first, second) = (first.await.expect("task"), second.await.expect("task"));
    let outcomes = (first.expect("update"), second.expect("update"));
    assert!(
        matches!(
            outcomes,
            (
                UpdateOutcome::RolledBack(RollbackReason::Conflict { .. }),
                UpdateOutcome::RolledBack(RollbackReason::PredecessorRolledBack)
            )
        ),
        "{outcomes:?}"
    );
    assert_eq!(optimistic.view::<String>("mode").expect("view").as_deref(), Some("foreign"));
    cluster.stop().await;
}
