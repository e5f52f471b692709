//! Leases with fencing tokens: expiry by log time, renew, release by the holder only, waiting
//! acquire, and a stale holder fenced off.
//!
//! Run with `cargo run -p concord-patterns --example distributed_lock`.

mod common;

use std::time::Duration;

use concord_core::prelude::*;
use concord_patterns::{Fence, LockClient};
use concord_runtime::MemoryNetwork;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let network = MemoryNetwork::new();
    let nodes = common::start_cluster(&network, &common::fast(MechanismKind::Raft)).await;
    common::wait_ready(&nodes).await;
    let worker_a = LockClient::with_owner(nodes[0].clone(), "worker-a");
    let worker_b = LockClient::with_owner(nodes[1].clone(), "worker-b");

    let lease = worker_a.try_acquire("report", Duration::from_millis(300)).await.expect("free lock");
    println!(
        "worker-a holds 'report' with fencing token {} until {} ms (log time)",
        lease.token(),
        lease.expires_at_ms()
    );
    lease.fenced_put("report/status", "written by worker-a").await.expect("fenced write");
    match worker_b.try_acquire("report", Duration::from_millis(300)).await {
        Err(error) => println!("worker-b try_acquire: {error}"),
        Ok(_) => unreachable!("the lease is valid"),
    }
    lease.renew().await.expect("renew");
    println!("worker-a renewed: now until {} ms", lease.expires_at_ms());

    // worker-a stalls (no renewals). worker-b waits; the state machine grants it once worker-a's
    // lease has expired by the leader's timestamps.
    let started = tokio::time::Instant::now();
    let next =
        worker_b.acquire("report", Duration::from_secs(5), Duration::from_secs(2)).await.expect("granted");
    println!("worker-b waited {:?} and got token {}", started.elapsed(), next.token());

    // worker-a wakes up and tries to write: fenced off.
    match lease.fenced_put("report/status", "late write by worker-a").await {
        Err(error) => println!("worker-a's stale write: {error}"),
        Ok(_) => unreachable!("a stale token is refused"),
    }
    match lease.clone().release().await {
        Err(error) => println!("worker-a's release: {error}"),
        Ok(_) => unreachable!("only the holder releases"),
    }
    next.fenced_put("report/status", "written by worker-b").await.expect("fenced write");
    println!("report/status = {:?}", nodes[2].read::<String>("report/status").await.expect("read"));

    // The same rule for a resource outside concord.
    let mut fence = Fence::default();
    fence.admit("report", next.token()).expect("current token");
    println!("external fence with token {}: {:?}", lease.token(), fence.admit("report", lease.token()));

    let keep_alive = next.keep_alive();
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("keep-alive running, lease lost: {}", keep_alive.is_lost());
    keep_alive.stop();
    let ended_at = next.release().await.expect("release");
    println!("worker-b released at {ended_at} ms");
    common::stop_all(&nodes).await;
}
