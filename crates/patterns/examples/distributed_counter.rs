//! The lesson's exercise: a fault-tolerant distributed counter, all five points.
//!
//! Run with `cargo run -p concord-patterns --example distributed_counter`.

mod common;

use std::time::Duration;

use concord_core::prelude::*;
use concord_patterns::Counter;
use concord_runtime::MemoryNetwork;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let network = MemoryNetwork::new();
    let nodes = common::start_cluster(&network, &common::fast(MechanismKind::Raft)).await;
    let leader = common::wait_ready(&nodes).await.expect("raft has a leader");
    let counters: Vec<Counter> =
        nodes.iter().map(|node| Counter::new(node.clone(), format!("client-{}", node.node_id()))).collect();

    // 1. Increment and decrement from any node.
    for counter in &counters {
        counter.increment("score").await.expect("increment");
        counter.increment("score").await.expect("increment");
    }
    counters[1].decrement("score").await.expect("decrement");
    // 2. Every node shows the same value.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let values: Vec<i64> = counters.iter().map(|c| c.value("score").expect("value")).collect();
    println!("1+2. five increments and one decrement from three nodes: every node shows {values:?}");

    // 4. A minority partition refuses writes rather than diverging.
    let isolated = (leader + 1) % 3;
    network.isolate(nodes[isolated].node_id().as_str());
    let short =
        Counter::new(nodes[isolated].clone(), "minority-client").with_retry_for(Duration::from_millis(500));
    match short.increment("score").await {
        Err(error) => println!("4. {} cut off: increment refused ({error})", nodes[isolated].node_id()),
        Ok(_) => unreachable!("a minority cannot commit"),
    }
    network.heal();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. Survives the loss of a node (the leader, even).
    nodes[leader].stop().await;
    let survivor = (leader + 2) % 3;
    let value = counters[survivor].increment("score").await.expect("increment without the old leader");
    println!(
        "3. leader {} stopped; increment on {} still works: score = {value}",
        nodes[leader].node_id(),
        nodes[survivor].node_id()
    );

    // 5. Atomic batch operations across several keys.
    let values = counters[survivor].add_all(&[("score", 10), ("bonus", -10)]).await.expect("batch");
    println!("5. atomic batch score+10, bonus-10: {values:?}");
    let refused = counters[survivor].add_all(&[("score", 1), ("bonus", i64::MIN)]).await;
    println!("   a batch with an overflowing part is refused as a whole: {}", refused.is_err());
    println!("   linearizable read: score = {}", counters[survivor].read("score").await.expect("read"));
    common::stop_all(&nodes).await;
}
