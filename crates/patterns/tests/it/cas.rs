//! Compare-and-swap: decided at apply time, never on a stale expectation.

use std::sync::Arc;
use std::time::Duration;

use concord_core::prelude::Config;
use concord_patterns::cas;
use parking_lot::Mutex;

use crate::support::{majority_config, raft_config, wait_converged, Cluster};

/// Workers on every node increment one key by read-modify-write over version CAS, with message
/// loss. Each successful swap moved the key from the version it expected to the next one, so the
/// final value equals the number of successful swaps, and no two swaps expected the same version.
async fn concurrent_swaps_never_lose_an_update(config: Config) {
    let cluster = Cluster::start(3, config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.network.set_drop_probability(0.03);
    let versions: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for node in &cluster.nodes {
        for _ in 0..2 {
            let node = node.clone();
            let versions = versions.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..8 {
                    let result = cas::update::<u64, _>(&node, "seats", 50, |current| {
                        Some(current.copied().unwrap_or(0) + 1)
                    })
                    .await;
                    match result {
                        Ok(swap) if swap.swapped => versions.lock().push(swap.version),
                        Ok(_) => {}
                        // Timeouts under message loss: the outcome is unknown, checked below.
                        Err(error) => assert!(error.outcome_unknown(), "update failed: {error}"),
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("worker");
    }
    cluster.network.set_drop_probability(0.0);
    let mut versions = versions.lock().clone();
    versions.sort_unstable();
    let count = versions.len();
    versions.dedup();
    assert_eq!(versions.len(), count, "two swaps produced the same version");
    assert!(count >= 8, "too little progress: {count}");
    wait_converged(&cluster.nodes, "seats").await;
    let value: u64 = cluster.nodes[0].get("seats").expect("decodes").expect("set");
    // Swaps whose answer was lost (timeouts) may have applied too: each adds one and one version.
    let version = cluster.nodes[0].version("seats");
    assert_eq!(value, version, "every applied swap added exactly one");
    assert!(value >= count as u64);
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn raft_swaps_never_lose_an_update() {
    concurrent_swaps_never_lose_an_update(raft_config()).await;
}

#[tokio::test(start_paused = true)]
async fn simple_majority_swaps_never_lose_an_update() {
    concurrent_swaps_never_lose_an_update(majority_config()).await;
}

/// A swap on an expectation that was true when read but stale when applied does not swap, and
/// reports the current value and version.
#[tokio::test(start_paused = true)]
async fn a_stale_expectation_never_swaps() {
    for config in [raft_config(), majority_config()] {
        let cluster = Cluster::start(3, config).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
        let first = cas::compare_and_swap(a, "owner", None, Some(&"alice".to_owned())).await.expect("cas");
        assert!(first.swapped);
        assert_eq!((first.value.as_deref(), first.version), (Some("alice"), 1));
        wait_converged(&cluster.nodes, "owner").await;
        let seen_version = b.version("owner");
        // Someone else changes it in between.
        let second = cas::compare_and_swap(a, "owner", Some(&"alice".to_owned()), Some(&"carol".to_owned()))
            .await
            .expect("cas");
        assert!(second.swapped);
        let stale = cas::compare_and_swap(b, "owner", Some(&"alice".to_owned()), Some(&"bob".to_owned()))
            .await
            .expect("cas");
        assert!(!stale.swapped);
        assert_eq!((stale.value.as_deref(), stale.version), (Some("carol"), 2));
        let stale = cas::compare_and_swap_version(b, "owner", seen_version, Some(&"bob".to_owned()))
            .await
            .expect("cas");
        assert!(!stale.swapped && stale.version == 2);
        // Delete by version, then a create expecting absence.
        assert!(cas::compare_and_swap_version::<String>(a, "owner", 2, None).await.expect("cas").swapped);
        let created = cas::compare_and_swap(b, "owner", None, Some(&"dave".to_owned())).await.expect("cas");
        assert!(created.swapped && created.version == 4, "a delete keeps the version: {created:?}");
        cluster.stop().await;
    }
}
