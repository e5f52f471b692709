use std::time::Duration;

use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork};

pub fn raft_config() -> Config {
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
    config.timeout = Duration::from_millis(2000);
    config
}

pub fn majority_config() -> Config {
    let mut config = Config::for_mechanism(MechanismKind::SimpleMajority);
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
    config.timeout = Duration::from_millis(1000);
    config
}

pub fn ids(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("n{i}")).collect()
}

pub async fn cluster(network: &MemoryNetwork, count: usize, config: Config) -> Vec<Consensus> {
    let ids = ids(count);
    let members: Vec<NodeInfo> =
        ids.iter().map(|id| NodeInfo::new(id.as_str(), format!("mem://{id}"))).collect();
    let mut nodes = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let node = Consensus::builder(id.as_str())
            .config(config.clone())
            .members(members.clone())
            .transport(network.transport(id.as_str()))
            .seed(1000 + index as u64)
            .clock_epoch_unix_ms(1_700_000_000_000)
            .start()
            .await
            .expect("node starts");
        nodes.push(node);
    }
    nodes
}

/// Waits (in virtual time) until `condition` holds; panics after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn wait_for_leader(nodes: &[Consensus]) -> usize {
    wait_until(Duration::from_secs(10), "a leader", || nodes.iter().filter(|n| n.is_leader()).count() == 1)
        .await;
    nodes.iter().position(|n| n.is_leader()).expect("a leader")
}

pub async fn stop_all(nodes: &[Consensus]) {
    for node in nodes {
        node.stop().await;
    }
}
