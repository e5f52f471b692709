use std::time::Duration;

use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork, SharedMemoryStorage};

/// Log time of the first entry: the nodes' clocks are anchored here.
pub const EPOCH_UNIX_MS: u64 = 1_700_000_000_000;

pub fn raft_config() -> Config {
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
    config.timeout = Duration::from_millis(1000);
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

/// A cluster whose nodes keep their state in `storages` (one per node), so a stopped node can be
/// started again with [`start_node`].
pub struct Cluster {
    pub network: MemoryNetwork,
    pub config: Config,
    pub nodes: Vec<Consensus>,
    pub storages: Vec<SharedMemoryStorage>,
    pub restarts: u64,
    started: tokio::time::Instant,
}

impl Cluster {
    pub async fn start(count: usize, config: Config) -> Cluster {
        let network = MemoryNetwork::new();
        let storages: Vec<SharedMemoryStorage> = (0..count).map(|_| SharedMemoryStorage::new()).collect();
        let mut cluster = Cluster {
            network,
            config,
            nodes: Vec::new(),
            storages,
            restarts: 0,
            started: tokio::time::Instant::now(),
        };
        for index in 0..count {
            let node = cluster.start_node(index).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    async fn start_node(&mut self, index: usize) -> Consensus {
        let ids = ids(self.storages.len());
        let members: Vec<NodeInfo> =
            ids.iter().map(|id| NodeInfo::new(id.as_str(), format!("mem://{id}"))).collect();
        let id = ids[index].as_str();
        // The clock keeps counting from the shared epoch across restarts (virtual time goes on).
        let elapsed_ms = tokio::time::Instant::now().duration_since(self.started).as_millis() as u64;
        Consensus::builder(id)
            .config(self.config.clone())
            .members(members)
            .transport(self.network.transport(id))
            .storage(Box::new(self.storages[index].clone()))
            .seed(1000 + index as u64 + 17 * self.restarts)
            .clock_epoch_unix_ms(EPOCH_UNIX_MS + elapsed_ms)
            .start()
            .await
            .expect("node starts")
    }

    /// Stops node `index` and starts it again from its storage after `down_for`.
    pub async fn restart(&mut self, index: usize, down_for: Duration) {
        self.nodes[index].stop().await;
        tokio::time::sleep(down_for).await;
        self.restarts += 1;
        let node = self.start_node(index).await;
        self.nodes[index] = node;
    }

    pub async fn leader(&self) -> usize {
        wait_until(Duration::from_secs(10), "a leader", || {
            self.nodes.iter().filter(|n| n.is_leader()).count() == 1
        })
        .await;
        self.nodes.iter().position(|n| n.is_leader()).expect("a leader")
    }

    pub async fn stop(&self) {
        for node in &self.nodes {
            node.stop().await;
        }
    }
}

/// Waits (in virtual time) until `condition` holds; panics after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every node in `nodes` has the same value and version of `key`.
pub async fn wait_converged(nodes: &[Consensus], key: &str) {
    wait_until(Duration::from_secs(10), "nodes to converge", || {
        let first = (nodes[0].get_bytes(key), nodes[0].version(key));
        nodes.iter().all(|node| (node.get_bytes(key), node.version(key)) == first)
    })
    .await;
}
