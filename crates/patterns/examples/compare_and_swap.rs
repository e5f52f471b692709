//! Compare-and-swap decided at apply time, on Raft and on simple majority.
//!
//! Run with `cargo run -p concord-patterns --example compare_and_swap`.

mod common;

use concord_core::prelude::*;
use concord_patterns::cas;
use concord_runtime::MemoryNetwork;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    for mechanism in [MechanismKind::Raft, MechanismKind::SimpleMajority] {
        println!("== {} ==", mechanism.as_str());
        let network = MemoryNetwork::new();
        let nodes = common::start_cluster(&network, &common::fast(mechanism)).await;
        common::wait_ready(&nodes).await;
        let (a, b) = (&nodes[0], &nodes[1]);

        let created = cas::compare_and_swap(a, "owner", None, Some(&"alice".to_owned())).await.expect("cas");
        println!(
            "create if absent: swapped={} value={:?} version={}",
            created.swapped, created.value, created.version
        );

        // Both read "alice" and both try to replace it: the log decides, exactly one wins.
        let (expected, bob, carol) = ("alice".to_owned(), "bob".to_owned(), "carol".to_owned());
        let (first, second) = tokio::join!(
            cas::compare_and_swap(a, "owner", Some(&expected), Some(&bob)),
            cas::compare_and_swap(b, "owner", Some(&expected), Some(&carol)),
        );
        for (who, swap) in [("bob", first), ("carol", second)] {
            let swap = swap.expect("cas");
            println!(
                "{who:>5} expected alice: swapped={} now={:?} version={}",
                swap.swapped, swap.value, swap.version
            );
        }

        // Read-modify-write by version: no lost update even with concurrent writers.
        let updates = (0..5).map(|i| {
            let node = nodes[i % 3].clone();
            async move {
                cas::update::<u32, _>(&node, "seats", 20, |seats| Some(seats.copied().unwrap_or(0) + 1)).await
            }
        });
        let results = futures_join_all(updates).await;
        let swapped = results.iter().filter(|r| matches!(r, Ok(s) if s.swapped)).count();
        let seats: Option<u32> = a.get("seats").expect("decodes");
        println!(
            "5 concurrent read-modify-writes: {swapped} swapped, seats = {seats:?} (version {})",
            a.version("seats")
        );
        common::stop_all(&nodes).await;
    }
}

/// Awaits every future (a tiny join_all, to avoid a dependency for the example).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}
