//! Optimistic updates: the view changes at once, consensus confirms or rolls back.
//!
//! Run with `cargo run -p concord-patterns --example optimistic_update`.

mod common;

use concord_core::prelude::*;
use concord_patterns::{Optimistic, UpdateOutcome};
use concord_runtime::MemoryNetwork;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let network = MemoryNetwork::new();
    let nodes = common::start_cluster(&network, &common::fast(MechanismKind::Raft)).await;
    let leader = common::wait_ready(&nodes).await.expect("raft has a leader");
    let ui = Optimistic::new(nodes[leader].clone());
    let mut rollbacks = ui.rollbacks();

    // 1. Applied: the view shows the value before consensus decides it.
    let pending = tokio::spawn({
        let ui = ui.clone();
        async move { ui.update("player_score", &100u32).await }
    });
    tokio::task::yield_now().await;
    println!(
        "view while pending: {:?} (consensus: {:?})",
        ui.view::<u32>("player_score").unwrap(),
        nodes[leader].get::<u32>("player_score").unwrap()
    );
    println!("outcome: {:?}", pending.await.unwrap().unwrap());

    // 2. Rolled back: another writer changes the key while two updates are pending; both are
    //    withdrawn, in order, and the view returns to the consensus value.
    let first = tokio::spawn({
        let ui = ui.clone();
        async move { ui.update("player_score", &150u32).await }
    });
    let second = tokio::spawn({
        let ui = ui.clone();
        async move { ui.update("player_score", &175u32).await }
    });
    assert!(nodes[leader].propose("player_score", &120u32).await);
    for (value, outcome) in [(150, first.await.unwrap().unwrap()), (175, second.await.unwrap().unwrap())] {
        match outcome {
            UpdateOutcome::Applied { version } => println!("{value}: applied at version {version}"),
            UpdateOutcome::RolledBack(reason) => println!("{value}: rolled back ({reason:?})"),
        }
    }
    while let Ok(rollback) = rollbacks.try_recv() {
        println!("notified: rollback on {:?} ({:?})", rollback.key, rollback.reason);
    }
    println!(
        "view after: {:?} = consensus {:?}",
        ui.view::<u32>("player_score").unwrap(),
        nodes[leader].get::<u32>("player_score").unwrap()
    );
    common::stop_all(&nodes).await;
}
