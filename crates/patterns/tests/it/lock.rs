//! Leases on real clusters, in virtual time, with leader crashes and message loss.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use concord_core::command::{lock_key, LockState};
use concord_patterns::{Fence, FenceError, LockClient, PatternError};
use parking_lot::Mutex;

use crate::support::{majority_config, raft_config, Cluster};

/// Several clients on every node compete for one lock while the leader crashes and restarts and
/// messages are lost. An observer on a node that stays up records every state the lock goes
/// through (the state machine's own timestamps): each lease's validity window runs from its grant
/// to its last expiry (a release sets it to the release time). Windows never overlap, tokens
/// strictly increase with no gaps, every client's grant is in that history, and the holder's
/// fenced writes are the only ones accepted.
#[tokio::test(start_paused = true)]
async fn leases_never_overlap_and_tokens_increase_across_a_leader_crash() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let observer_node = cluster.nodes[(leader + 1) % 3].clone();
    let mut changes = observer_node.subscribe(&lock_key("db"));
    let history: Arc<Mutex<Vec<LockState>>> = Arc::default();
    let observer = tokio::spawn({
        let history = history.clone();
        async move {
            while let Some(update) = changes.next().await {
                let state = update.new_value.as_deref().and_then(LockState::decode).expect("lock state");
                history.lock().push(state);
            }
        }
    });
    cluster.network.set_drop_probability(0.02);
    // Grants as clients saw them: (token, holder, granted_at_ms).
    let grants: Arc<Mutex<Vec<(u64, String, u64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (index, node) in cluster.nodes.iter().enumerate() {
        for worker in 0..2 {
            let locks = LockClient::with_owner(node.clone(), format!("client-{index}-{worker}"));
            let grants = grants.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..6u64 {
                    let lease =
                        match locks.acquire("db", Duration::from_millis(400), Duration::from_secs(6)).await {
                            Ok(lease) => lease,
                            Err(_) => continue,
                        };
                    grants.lock().push((lease.token(), lease.holder().to_owned(), lease.granted_at_ms()));
                    // Work: a fenced write, a renewal, another write.
                    let _ = lease.fenced_put("db/owner", &lease.token()).await;
                    tokio::time::sleep(Duration::from_millis(50 + 30 * round)).await;
                    let _ = lease.renew().await;
                    let _ = lease.fenced_put("db/owner", &lease.token()).await;
                    let _ = lease.release().await;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.restart(leader, Duration::from_millis(800)).await;
    for task in tasks {
        task.await.expect("worker");
    }
    cluster.network.set_drop_probability(0.0);
    // Let the observer see everything.
    let final_state = cluster.nodes[(leader + 2) % 3].read_bytes(&lock_key("db")).await.expect("read");
    crate::support::wait_converged(&cluster.nodes, &lock_key("db")).await;
    crate::support::wait_until(Duration::from_secs(5), "the observer", || {
        history.lock().last().map(LockState::encode) == final_state
    })
    .await;
    observer.abort();
    let history = history.lock().clone();

    // token → (holder, granted_at_ms, last expires_at_ms)
    let mut windows: BTreeMap<u64, (String, u64, u64)> = BTreeMap::new();
    let mut last_token = 0;
    for state in &history {
        assert!(state.token >= last_token, "token went back: {} after {last_token}", state.token);
        assert!(state.token <= last_token + 1, "token skipped: {} after {last_token}", state.token);
        last_token = state.token;
        let holder = state.holder.clone().unwrap_or_default();
        let window = windows.entry(state.token).or_insert((holder, state.granted_at_ms, state.expires_at_ms));
        window.2 = state.expires_at_ms;
    }
    assert!(windows.len() >= 6, "too little progress: {} leases", windows.len());
    let mut previous: Option<(u64, u64)> = None;
    for (token, (holder, granted_at_ms, expires_at_ms)) in &windows {
        if let Some((previous_token, previous_end)) = previous {
            assert!(
                *granted_at_ms >= previous_end,
                "lease {token} of {holder} granted at {granted_at_ms}, before lease {previous_token} ended at {previous_end}"
            );
        }
        previous = Some((*token, *expires_at_ms));
    }
    for (token, holder, granted_at_ms) in grants.lock().iter() {
        let (recorded_holder, recorded_grant, _) = windows.get(token).expect("granted lease in the history");
        assert_eq!((recorded_holder, recorded_grant), (holder, granted_at_ms), "lease {token}");
    }
    // The last fenced write carries a token that was granted.
    let owner: u64 = cluster.nodes[(leader + 1) % 3].get("db/owner").expect("decodes").expect("written");
    assert!(windows.contains_key(&owner));
    cluster.stop().await;
}

/// A holder that stops renewing loses its lease by log time; its later writes, renewals and its
/// release are refused, while the new holder's are accepted.
#[tokio::test(start_paused = true)]
async fn a_stale_holder_is_fenced_off() {
    let cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let first = LockClient::with_owner(cluster.nodes[follower].clone(), "first");
    let second = LockClient::with_owner(cluster.nodes[leader].clone(), "second");

    let stale = first.try_acquire("db", Duration::from_millis(300)).await.expect("free lock");
    assert!(stale.is_valid());
    stale.fenced_put("db/data", "from first").await.expect("holder writes");
    assert!(matches!(
        second.try_acquire("db", Duration::from_millis(300)).await,
        Err(PatternError::LockHeld { token, .. }) if token == stale.token()
    ));
    // The first holder pauses past its lease (a GC pause, a partition): it no longer believes it
    // holds the lock, and the state machine agrees.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!stale.is_valid());
    assert!(matches!(stale.fenced_put("db/data", "late write").await, Err(PatternError::LeaseLost { .. })));

    let current = second.try_acquire("db", Duration::from_millis(5_000)).await.expect("expired lock is free");
    assert!(current.token() > stale.token(), "tokens strictly increase");
    assert!(matches!(stale.fenced_put("db/data", "stale write").await, Err(PatternError::LeaseLost { .. })));
    assert!(matches!(stale.renew().await, Err(PatternError::LeaseLost { .. })));
    current.fenced_put("db/data", "from second").await.expect("current holder writes");
    assert!(matches!(stale.clone().release().await, Err(PatternError::LeaseLost { .. })));
    assert_eq!(
        cluster.nodes[leader].read::<String>("db/data").await.expect("read"),
        Some("from second".into())
    );

    // The same check for a resource outside concord.
    let mut fence = Fence::default();
    fence.admit("db", current.token()).expect("current token");
    assert!(matches!(fence.admit("db", stale.token()), Err(FenceError::Stale { .. })));
    fence.admit("db", current.token()).expect("the same holder again");
    current.release().await.expect("holder releases");
    cluster.stop().await;
}

/// A waiting acquire wakes when the holder releases, gives up at its timeout otherwise, and a
/// keep-alive keeps a short lease past many TTLs.
#[tokio::test(start_paused = true)]
async fn waiting_acquire_and_keep_alive() {
    let cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let holder = LockClient::with_owner(cluster.nodes[leader].clone(), "holder");
    let waiter = LockClient::with_owner(cluster.nodes[(leader + 1) % 3].clone(), "waiter");

    let lease = holder.try_acquire("job", Duration::from_millis(300)).await.expect("free");
    let keep_alive = lease.keep_alive();
    let timed_out = waiter.acquire("job", Duration::from_millis(300), Duration::from_millis(1_500)).await;
    assert!(matches!(timed_out, Err(PatternError::AcquireTimeout { .. })), "got {timed_out:?}");
    assert!(!keep_alive.is_lost() && lease.is_valid(), "keep-alive held the lease for 5 TTLs");

    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            let started = tokio::time::Instant::now();
            let lease = waiter.acquire("job", Duration::from_millis(300), Duration::from_secs(5)).await;
            (lease, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    keep_alive.stop();
    lease.clone().release().await.expect("release");
    let (next, waited) = waiting.await.expect("task");
    let next = next.expect("waiter gets the lock after the release");
    assert!(next.token() > lease.token());
    assert!(next.is_valid(), "a lease granted after waiting is valid for its TTL from the grant");
    assert!(waited < Duration::from_millis(600), "woke on the release, not by polling: {waited:?}");

    // Without keep-alive and without release, the waiter gets it once the lease expires.
    let waiting = tokio::spawn({
        let holder = holder.clone();
        async move { holder.acquire("job", Duration::from_millis(300), Duration::from_secs(5)).await }
    });
    let after_expiry = waiting.await.expect("task").expect("granted after expiry");
    assert!(after_expiry.token() > next.token());
    assert!(after_expiry.granted_at_ms() >= next.expires_at_ms());
    assert!(after_expiry.is_valid() && after_expiry.remaining() > Duration::from_millis(200));
    cluster.stop().await;
}

/// Simple majority: lease operations touch one key and work; fenced writes are refused with a
/// typed error.
#[tokio::test(start_paused = true)]
async fn simple_majority_supports_leases_but_refuses_fenced_writes() {
    let cluster = Cluster::start(3, majority_config()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let first = LockClient::with_owner(cluster.nodes[0].clone(), "first");
    let second = LockClient::with_owner(cluster.nodes[1].clone(), "second");
    let lease = first.try_acquire("db", Duration::from_millis(300)).await.expect("granted");
    assert!(matches!(
        second.try_acquire("db", Duration::from_millis(300)).await,
        Err(PatternError::LockHeld { .. })
    ));
    assert!(matches!(
        lease.fenced_put("db/data", "x").await,
        Err(PatternError::Unsupported { mechanism: "simple_majority", .. })
    ));
    lease.renew().await.expect("renew");
    let token = lease.token();
    lease.release().await.expect("release");
    let next =
        second.acquire("db", Duration::from_millis(300), Duration::from_secs(3)).await.expect("granted");
    assert!(next.token() > token);
    cluster.stop().await;
}
