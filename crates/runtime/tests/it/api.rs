use std::future::Future;
use std::time::Duration;

use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork};

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn raft_cluster_elects_a_leader_and_replicates() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    let leader_info = nodes[0].leader();
    wait_until(Duration::from_secs(5), "everyone knows the leader", || {
        nodes.iter().all(|n| n.leader().map(|l| l.id) == Some(nodes[leader].node_id().clone()))
    })
    .await;
    assert!(leader_info.is_some());
    let result = nodes[leader].propose_with_result("config", &("maxPlayers", 10u32)).await;
    assert!(result.accepted, "{result:?}");
    assert_eq!(result.key, "config");
    assert!(result.votes.in_favor >= 2 && result.quorum_required == 2, "{result:?}");
    wait_until(Duration::from_secs(5), "replication", || {
        nodes
            .iter()
            .all(|n| n.get::<(String, u32)>("config").ok().flatten() == Some(("maxPlayers".into(), 10)))
    })
    .await;
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn follower_forwards_proposals_and_reads_to_the_leader() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    let follower = (leader + 1) % 3;
    assert!(!nodes[follower].is_leader());
    assert!(nodes[follower].propose("player_score", &100i64).await);
    // A linearizable read on another follower sees the write at once.
    let other = (leader + 2) % 3;
    assert_eq!(nodes[other].read::<i64>("player_score").await.unwrap(), Some(100));
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn not_leader_error_names_the_leader_when_forwarding_is_off() {
    let network = MemoryNetwork::new();
    let mut config = raft_config();
    config.forward_to_leader = false;
    let nodes = cluster(&network, 3, config).await;
    let leader = wait_for_leader(&nodes).await;
    let follower = (leader + 1) % 3;
    wait_until(Duration::from_secs(5), "follower knows leader", || nodes[follower].leader().is_some()).await;
    let result = nodes[follower].propose_with_result("k", &1u8).await;
    match result.error {
        Some(ProposalError::NotLeader { leader: Some(info) }) => {
            assert_eq!(&info.id, nodes[leader].node_id());
            assert_eq!(info.address, format!("mem://{}", nodes[leader].node_id()));
        }
        other => panic!("expected NotLeader with the leader, got {other:?}"),
    }
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn events_follow_the_lesson() {
    let network = MemoryNetwork::new();
    let config = raft_config();
    // Subscribe before anything happens: start nodes one by one and subscribe to the first.
    let nodes = cluster(&network, 3, config).await;
    let mut events = nodes[0].events();
    let leader = wait_for_leader(&nodes).await;
    let mut updates = nodes[0].subscribe("player_score");
    assert!(nodes[leader].propose("player_score", &7i64).await);
    let update = tokio::time::timeout(Duration::from_secs(5), updates.next()).await.unwrap().unwrap();
    assert_eq!(update.value::<i64>().unwrap(), Some(7));
    assert_eq!(update.old::<i64>().unwrap(), None);
    let mut seen = std::collections::BTreeSet::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
        seen.insert(event.name());
    }
    for name in ["leader:elected", "state:changed", "log:appended"] {
        assert!(seen.contains(name), "missing {name} in {seen:?}");
    }
    if leader == 0 {
        assert!(seen.contains("consensus:accepted"), "{seen:?}");
    }
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn compare_and_swap_counter_and_batch() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    let node = &nodes[(leader + 1) % 3];
    let swapped = node.compare_and_swap::<String, String>("owner", None, &"alice".into()).await.unwrap();
    assert!(swapped.swapped);
    let refused = node.compare_and_swap::<String, String>("owner", None, &"bob".into()).await.unwrap();
    assert!(!refused.swapped);
    assert_eq!(refused.version, 1);
    assert_eq!(node.add("visits", 5).await.unwrap(), 5);
    assert_eq!(node.add("visits", -2).await.unwrap(), 3);
    let failed = node
        .batch(vec![
            Command::Add { key: "visits".into(), delta: 10 },
            Command::CompareAndSwap { key: "owner".into(), expected: Expectation::Version(99), new: None },
        ])
        .await;
    assert!(!failed.accepted);
    assert_eq!(node.read::<i64>("visits").await.unwrap(), Some(3), "a failed batch applies nothing");
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn minority_side_is_read_only_and_heals() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    assert!(nodes[leader].propose("k", &1u32).await);
    let lonely = (leader + 1) % 3;
    wait_until(Duration::from_secs(5), "replicated", || {
        nodes[lonely].get::<u32>("k").ok().flatten() == Some(1)
    })
    .await;
    let mut events = nodes[lonely].events();
    network.isolate(nodes[lonely].node_id().as_str());
    let mut detected = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while detected.is_none() && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Event::PartitionDetected { side, reachable })) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            detected = Some((side, reachable));
        }
    }
    let (side, reachable) = detected.expect("partition:detected on the isolated node");
    assert_eq!(side, PartitionSide::Minority);
    assert_eq!(reachable, vec![nodes[lonely].node_id().clone()]);
    assert!(nodes[lonely].is_read_only());
    let result = nodes[lonely].propose_with_result("k", &2u32).await;
    assert!(
        matches!(result.error, Some(ProposalError::NoQuorum { reachable: 1, members: 3, required: 2 })),
        "{result:?}"
    );
    assert_eq!(nodes[lonely].get::<u32>("k").unwrap(), Some(1), "local reads still work");
    network.heal();
    let mut healed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !healed && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Event::PartitionHealed)) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            healed = true;
        }
    }
    assert!(healed, "partition:healed after heal");
    wait_until(Duration::from_secs(5), "writable again", || !nodes[lonely].is_read_only()).await;
    assert!(nodes[lonely].propose("k", &3u32).await);
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn full_proposal_queue_is_busy_not_unbounded() {
    let network = MemoryNetwork::new();
    let mut config = raft_config();
    config.max_pending_proposals = 1;
    let nodes = cluster(&network, 3, config).await;
    let leader = wait_for_leader(&nodes).await;
    // Cut the leader's outgoing links so nothing commits, without it noticing at once.
    for other in 0..3 {
        if other != leader {
            network.cut(nodes[leader].node_id().as_str(), nodes[other].node_id().as_str());
        }
    }
    let first = {
        let node = nodes[leader].clone();
        tokio::spawn(async move { node.propose_with_result("a", &1u8).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let second = nodes[leader].propose_with_result("b", &2u8).await;
    assert!(matches!(second.error, Some(ProposalError::Busy { limit: 1, .. })), "{second:?}");
    let first = first.await.unwrap();
    assert!(!first.accepted);
    network.heal();
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn stop_with_proposals_in_flight_answers_every_one() {
    let network = MemoryNetwork::new();
    let mut config = raft_config();
    // Long enough that waiting for the proposals' own timeouts would show in the stop time.
    config.timeout = Duration::from_secs(60);
    // Keep the isolated leader a leader, so its proposals stay pending until stop answers them.
    config.check_quorum = false;
    let nodes = cluster(&network, 3, config).await;
    let leader = wait_for_leader(&nodes).await;
    network.isolate(nodes[leader].node_id().as_str());
    let mut waiting = Vec::new();
    for i in 0..5u32 {
        let node = nodes[leader].clone();
        waiting.push(tokio::spawn(async move { node.propose_with_result(&format!("k{i}"), &i).await }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stopping = tokio::time::Instant::now();
    nodes[leader].stop().await;
    // Virtual time: stop drains for one heartbeat interval, then answers what is left.
    assert!(stopping.elapsed() < Duration::from_secs(1), "stop took {:?}", stopping.elapsed());
    for handle in waiting {
        let result =
            tokio::time::timeout(Duration::from_secs(10), handle).await.expect("no proposal hangs").unwrap();
        assert!(!result.accepted);
        assert!(result.error.is_some());
    }
    let after = nodes[leader].propose_with_result("late", &0u8).await;
    assert_eq!(after.error, Some(ProposalError::Stopped));
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn nodes_leader_and_debug_state() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    assert!(nodes[leader].propose("x", &1u8).await);
    wait_until(Duration::from_secs(5), "all connected", || nodes[leader].nodes().iter().all(|n| n.connected))
        .await;
    let listed = nodes[leader].nodes();
    assert_eq!(listed.len(), 3);
    let debug = nodes[leader].debug_state();
    assert_eq!(debug.role, Role::Leader);
    assert!(debug.commit_index >= LogIndex(2), "{debug:?}");
    assert_eq!(debug.followers.len(), 2);
    assert_eq!(debug.leader_id.as_ref(), Some(nodes[leader].node_id()));
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn add_and_remove_nodes() {
    let network = MemoryNetwork::new();
    let config = raft_config();
    let nodes = cluster(&network, 3, config.clone()).await;
    let leader = wait_for_leader(&nodes).await;
    assert!(nodes[leader].propose("before", &1u8).await);
    // A fourth node joins: it knows the cluster, the cluster adds it through the log.
    let mut members: Vec<NodeInfo> =
        ids(3).iter().map(|id| NodeInfo::new(id.as_str(), format!("mem://{id}"))).collect();
    let newcomer = NodeInfo::new("n4", "mem://n4").with_metadata("region", "us-west");
    members.push(newcomer.clone());
    let fourth = Consensus::builder("n4")
        .config(config)
        .members(members)
        .transport(network.transport("n4"))
        .seed(4)
        .start()
        .await
        .unwrap();
    nodes[leader].add_node(newcomer).await.expect("add_node");
    let listed = nodes[leader].nodes();
    assert_eq!(listed.len(), 4);
    assert_eq!(
        listed.iter().find(|n| n.id.as_str() == "n4").unwrap().metadata.get("region").unwrap(),
        "us-west"
    );
    wait_until(Duration::from_secs(5), "n4 catches up", || {
        fourth.get::<u8>("before").ok().flatten() == Some(1)
    })
    .await;
    let victim = nodes[(leader + 1) % 3].node_id().to_string();
    nodes[leader].remove_node(&victim).await.expect("remove_node");
    assert_eq!(nodes[leader].nodes().len(), 3);
    assert!(nodes[leader].remove_node("nobody").await.is_err());
    stop_all(&nodes).await;
    fourth.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bring_your_own_network_with_message_sender() {
    // The lesson's setMessageSender + handleMessage: frames travel through a user channel.
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(String, String, bytes::Bytes)>();
    let members: Vec<NodeInfo> = ids(3).iter().map(|id| NodeInfo::new(id.as_str(), "")).collect();
    let mut nodes = Vec::new();
    for (index, id) in ids(3).into_iter().enumerate() {
        let sender = sender.clone();
        let from = id.clone();
        let node = Consensus::builder(id.as_str())
            .config(raft_config())
            .members(members.clone())
            .seed(index as u64)
            .set_message_sender(move |to: &NodeId, frame| {
                let _ = sender.send((from.clone(), to.to_string(), frame));
            })
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    let router_nodes = nodes.clone();
    let router = tokio::spawn(async move {
        while let Some((from, to, frame)) = receiver.recv().await {
            if let Some(node) = router_nodes.iter().find(|n| n.node_id().as_str() == to) {
                node.handle_message(&from, &frame).expect("valid frame");
            }
        }
    });
    let leader = wait_for_leader(&nodes).await;
    assert!(nodes[leader].propose("via-callback", &42u64).await);
    // A forged frame is refused with a typed error.
    assert!(nodes[0].handle_message("n2", b"garbage").is_err());
    stop_all(&nodes).await;
    router.abort();
}

#[tokio::test(start_paused = true)]
async fn bad_config_and_bad_ids_are_refused_at_start() {
    let network = MemoryNetwork::new();
    let mut config = raft_config();
    config.election_timeout.min = Duration::from_millis(10);
    let error =
        Consensus::builder("n1").config(config).transport(network.transport("n1")).start().await.unwrap_err();
    assert!(error.to_string().contains("electionTimeout"), "{error}");
    let error = Consensus::builder("has space")
        .config(raft_config())
        .transport(network.transport("x"))
        .start()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid node id"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn restarted_cluster_resumes_from_its_data_directories() {
    let directories: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members: Vec<NodeInfo> = ids(3).iter().map(|id| NodeInfo::new(id.as_str(), "")).collect();
    let start = |network: MemoryNetwork| {
        let members = members.clone();
        let paths: Vec<std::path::PathBuf> = directories.iter().map(|d| d.path().to_path_buf()).collect();
        async move {
            let mut nodes = Vec::new();
            for (index, id) in ids(3).into_iter().enumerate() {
                nodes.push(
                    Consensus::builder(id.as_str())
                        .config(raft_config())
                        .members(members.clone())
                        .transport(network.transport(id.as_str()))
                        .data_dir(&paths[index])
                        .seed(index as u64)
                        .start()
                        .await
                        .unwrap(),
                );
            }
            nodes
        }
    };
    let nodes = start(MemoryNetwork::new()).await;
    let leader = wait_for_leader(&nodes).await;
    for i in 0..20u32 {
        assert!(nodes[leader].propose(&format!("k{i}"), &i).await);
    }
    let term_before = nodes[leader].debug_state().current_term;
    stop_all(&nodes).await;
    drop(nodes);

    let nodes = start(MemoryNetwork::new()).await;
    for node in &nodes {
        assert!(node.debug_state().current_term >= term_before, "the term survives a restart");
    }
    let leader = wait_for_leader(&nodes).await;
    for i in 0..20u32 {
        assert_eq!(nodes[leader].read::<u32>(&format!("k{i}")).await.unwrap(), Some(i));
    }
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn corrupt_data_directory_is_a_typed_start_error() {
    let directory = tempfile::tempdir().unwrap();
    {
        let network = MemoryNetwork::new();
        let node = Consensus::builder("n1")
            .config(raft_config())
            .transport(network.transport("n1"))
            .data_dir(directory.path())
            .start()
            .await
            .unwrap();
        wait_until(Duration::from_secs(5), "leader", || node.is_leader()).await;
        assert!(node.propose("k", &1u8).await);
        node.stop().await;
    }
    // Flip bytes in the middle of every file the store wrote.
    for entry in std::fs::read_dir(directory.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let mut bytes = std::fs::read(&path).unwrap();
            if bytes.len() > 64 {
                for byte in &mut bytes[20..40] {
                    *byte ^= 0xA5;
                }
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
    let network = MemoryNetwork::new();
    let result = Consensus::builder("n1")
        .config(raft_config())
        .transport(network.transport("n1"))
        .data_dir(directory.path())
        .start()
        .await;
    match result {
        Err(concord_runtime::StartError::Storage(error)) => {
            assert!(error.to_string().contains("corrupt"), "{error}")
        }
        Err(other) => panic!("expected a storage error, got {other}"),
        Ok(_) => panic!("a corrupt data directory must not start"),
    }
}

/// Storage whose `recover` waits (at most `WAIT_MAX` of real time) until the test lets it go on.
struct GatedStorage {
    inner: concord_core::storage::MemoryStorage,
    go: std::sync::mpsc::Receiver<()>,
}

impl concord_core::storage::Storage for GatedStorage {
    fn recover(&mut self) -> Result<concord_core::storage::Recovered, concord_core::storage::StorageError> {
        const WAIT_MAX: Duration = Duration::from_secs(10);
        match self.go.recv_timeout(WAIT_MAX) {
            Ok(()) => self.inner.recover(),
            Err(_) => Err(concord_core::storage::StorageError::Failed(
                "recover was never let go on: the runtime's thread was blocked".into(),
            )),
        }
    }

    fn persist(
        &mut self,
        persist: &concord_core::storage::Persist,
    ) -> Result<(), concord_core::storage::StorageError> {
        self.inner.persist(persist)
    }
}

// Reading a long log back is blocking work: `start` does it off the async workers, so a node
// recovering does not stall the other tasks of the runtime (other nodes in the same process). Here
// the runtime has one thread; the task that lets recovery finish runs on it, so if `start`
// recovered on that thread it could never run, and recovery would give up.
#[tokio::test(flavor = "current_thread")]
async fn start_recovers_storage_off_the_async_thread() {
    let (go, gate) = std::sync::mpsc::channel();
    let opener = tokio::spawn(async move {
        tokio::task::yield_now().await;
        go.send(()).unwrap();
    });
    let network = MemoryNetwork::new();
    let node = Consensus::builder("n1")
        .config(raft_config())
        .transport(network.transport("n1"))
        .storage(Box::new(GatedStorage { inner: concord_core::storage::MemoryStorage::new(), go: gate }))
        .start()
        .await
        .expect("recovery finished while the runtime's thread ran the other task");
    opener.await.unwrap();
    node.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_retried_proposal_applies_once_across_a_leader_change() {
    let network = MemoryNetwork::new();
    let mut config = raft_config();
    config.timeout = Duration::from_secs(5);
    let nodes = cluster(&network, 3, config).await;
    // The leader can still send (followers store its entry) but never hears back, so it cannot
    // commit; check-quorum makes it step down and its proposal ends with an unknown outcome.
    let (leader, others) = deafen_leader_after_counter(&network, &nodes).await;
    let adding = {
        let node = nodes[leader].clone();
        tokio::spawn(async move { node.add("counter", 1).await })
    };
    wait_for_entry_on(&nodes, &others).await;
    wait_until(Duration::from_secs(10), "the old leader steps down", || !nodes[leader].is_leader()).await;
    network.heal();
    let result = tokio::time::timeout(Duration::from_secs(10), adding).await.expect("answered").unwrap();
    assert_eq!(result, Ok(11), "the retry returns the first application's result");
    let read_on = others[0];
    assert_eq!(nodes[read_on].read::<i64>("counter").await.unwrap(), Some(11), "applied exactly once");
    stop_all(&nodes).await;
}

/// Sets `counter` to 10 through the leader, then cuts every follower-to-leader link: the leader's
/// next entries still reach the followers, but it never hears back. Returns the leader and the others.
async fn deafen_leader_after_counter(network: &MemoryNetwork, nodes: &[Consensus]) -> (usize, Vec<usize>) {
    let leader = wait_for_leader(nodes).await;
    assert_eq!(nodes[leader].add("counter", 10).await.unwrap(), 10);
    let others: Vec<usize> = (0..nodes.len()).filter(|i| *i != leader).collect();
    for other in &others {
        network.cut(nodes[*other].node_id().as_str(), nodes[leader].node_id().as_str());
    }
    (leader, others)
}

/// Waits until each of `others` stored one more entry than it holds now.
async fn wait_for_entry_on(nodes: &[Consensus], others: &[usize]) {
    let before: Vec<LogIndex> = others.iter().map(|i| nodes[*i].debug_state().last_log_index).collect();
    wait_until(Duration::from_secs(5), "followers store the entry", || {
        others.iter().zip(&before).all(|(i, before)| nodes[*i].debug_state().last_log_index > *before)
    })
    .await;
}

/// Found by `cargo xtask chaos`: a proposal whose first attempt reached the log, then lost its
/// leader, must not end in a definite refusal (not leader, no quorum) from a later attempt — the
/// first attempt's entry may commit under the next leader, and here it does.
#[tokio::test(start_paused = true)]
async fn a_refused_retry_after_an_unknown_outcome_is_not_a_definite_failure() {
    let network = MemoryNetwork::new();
    let mut config = raft_config();
    config.timeout = Duration::from_secs(5);
    let nodes = cluster(&network, 3, config).await;
    // The leader's entry reaches the followers, but it never hears from them again: it steps down,
    // and the followers elect a leader that commits the entry. Nothing heals during the proposal.
    let (leader, others) = deafen_leader_after_counter(&network, &nodes).await;
    let adding = {
        let node = nodes[leader].clone();
        tokio::spawn(
            async move { node.propose_command(Command::Add { key: "counter".into(), delta: 1 }).await },
        )
    };
    wait_for_entry_on(&nodes, &others).await;
    let result = tokio::time::timeout(Duration::from_secs(20), adding).await.expect("answered").unwrap();
    wait_until(Duration::from_secs(20), "a follower takes over", || {
        others.iter().any(|i| nodes[*i].is_leader())
    })
    .await;
    let read_on = others.iter().copied().find(|i| nodes[*i].is_leader()).unwrap();
    assert_eq!(nodes[read_on].read::<i64>("counter").await.unwrap(), Some(11), "the entry committed");
    assert!(!result.accepted);
    assert!(
        matches!(result.error, Some(ProposalError::LeadershipLost | ProposalError::Timeout)),
        "an entry that committed was reported as refused: {result:?}"
    );
    network.heal();
    stop_all(&nodes).await;
}

/// Records the peers a node's transport is told about, delivering through a memory transport.
struct RecordingTransport {
    inner: std::sync::Arc<concord_runtime::MemoryTransport>,
    peers: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[async_trait::async_trait]
impl Transport for RecordingTransport {
    async fn send(&self, to: &NodeId, frames: Vec<bytes::Bytes>) -> Result<(), TransportError> {
        self.inner.send(to, frames).await
    }
    async fn recv(&self) -> Result<Incoming, TransportError> {
        self.inner.recv().await
    }
    fn add_peer(&self, peer: &NodeInfo) -> Result<(), TransportError> {
        self.peers.lock().unwrap().insert(peer.id.to_string());
        Ok(())
    }
    fn remove_peer(&self, peer: &NodeId) {
        self.peers.lock().unwrap().remove(peer.as_str());
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

#[tokio::test(start_paused = true)]
async fn every_member_tells_its_transport_about_membership_changes() {
    let network = MemoryNetwork::new();
    let mut members: Vec<NodeInfo> =
        ids(3).iter().map(|id| NodeInfo::new(id.as_str(), format!("mem://{id}"))).collect();
    let mut transports = Vec::new();
    let mut nodes = Vec::new();
    for (index, id) in ids(3).into_iter().enumerate() {
        let transport = std::sync::Arc::new(RecordingTransport {
            inner: network.transport(id.as_str()),
            peers: Default::default(),
        });
        transports.push(transport.clone());
        nodes.push(
            Consensus::builder(id.as_str())
                .config(raft_config())
                .members(members.clone())
                .transport(transport)
                .seed(index as u64)
                .start()
                .await
                .unwrap(),
        );
    }
    let leader = wait_for_leader(&nodes).await;
    let newcomer = NodeInfo::new("n4", "mem://n4");
    members.push(newcomer.clone());
    let fourth = Consensus::builder("n4")
        .config(raft_config())
        .members(members)
        .transport(network.transport("n4"))
        .start()
        .await
        .unwrap();
    nodes[leader].add_node(newcomer).await.unwrap();
    wait_until(Duration::from_secs(5), "every transport knows n4", || {
        transports.iter().all(|t| t.peers.lock().unwrap().contains("n4"))
    })
    .await;
    nodes[leader].remove_node("n4").await.unwrap();
    wait_until(Duration::from_secs(5), "every transport forgets n4", || {
        transports.iter().all(|t| !t.peers.lock().unwrap().contains("n4"))
    })
    .await;
    fourth.stop().await;
    stop_all(&nodes).await;
}

/// Concurrent proposers share replication rounds even on a single worker thread, where the node
/// task woken by a proposer used to run before the other proposers and commit every write alone.
/// Real time (a paused clock needs the current-thread runtime, which schedules differently); the
/// wait is one election, and the check counts messages, not time.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn concurrent_proposals_share_rounds_on_one_worker_thread() {
    const PROPOSERS: u64 = 64;
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    // Settle: the first write commits the leader's term.
    assert!(nodes[leader].propose("warm-up", &0u64).await);
    let before = network.messages_sent();
    let proposals: Vec<_> = (0..PROPOSERS)
        .map(|i| {
            let node = nodes[leader].clone();
            tokio::spawn(async move { node.propose(&format!("key-{i}"), &i).await })
        })
        .collect();
    for proposal in proposals {
        assert!(proposal.await.expect("proposer task"), "every proposal is accepted");
    }
    let messages = network.messages_sent() - before;
    // One round per proposal costs at least an append and its answer per follower (4 each).
    assert!(messages < 2 * PROPOSERS, "{messages} messages for {PROPOSERS} concurrent proposals");
    stop_all(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn acknowledged_results_leave_every_replicas_session_table() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    let follower = (leader + 1) % 3;
    // Sequential writes from the leader and (forwarded) from a follower: each carries its node's
    // acknowledgement of every earlier answer.
    for i in 0..200u32 {
        assert!(nodes[leader].propose(&format!("l{i}"), &i).await);
        assert!(nodes[follower].propose(&format!("f{i}"), &i).await);
    }
    wait_until(Duration::from_secs(5), "every replica applied every write", || {
        nodes.iter().all(|node| node.version("f199") == 1)
    })
    .await;
    for node in &nodes {
        let debug = node.debug_state();
        // Without acknowledgements the table would hold all 400 results (the bound is 100,000).
        assert!(debug.session_results <= 2, "{}: {} results kept", node.node_id(), debug.session_results);
        // Two clients wrote (one per writing node), and none has been idle long enough to expire.
        assert_eq!(debug.session_clients, 2, "{}", node.node_id());
    }
    // A retry still gets its first result while the call is in flight: covered by
    // `a_retried_proposal_applies_once_across_a_leader_change`.
    stop_all(&nodes).await;
}

/// A lone caller writing sequentially on the in-process transport proposes in its own task: the
/// whole round trip (followers storing and answering, commit, apply) runs there, and the result is
/// ready at the first poll, without a wake-up of the node task.
#[tokio::test(start_paused = true)]
async fn a_lone_caller_is_answered_without_waking_the_node_task() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 3, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    let follower = (leader + 1) % 3;
    for (name, node) in [("leader", &nodes[leader]), ("follower", &nodes[follower])] {
        // The node proposes inline only after it has seen a run of single-proposal batches.
        for i in 0..16u32 {
            assert!(node.propose(&format!("{name}-warm-{i}"), &i).await);
        }
        let mut answered_at_first_poll = 0;
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        for i in 0..32u32 {
            let key = format!("{name}-{i}");
            let mut write = std::pin::pin!(node.propose(&key, &i));
            match write.as_mut().poll(&mut context) {
                std::task::Poll::Ready(accepted) => {
                    assert!(accepted, "{key}");
                    answered_at_first_poll += 1;
                }
                std::task::Poll::Pending => assert!(write.await, "{key}"),
            }
        }
        // One write in 64 goes through the node task on purpose (to notice other callers).
        assert!(
            answered_at_first_poll >= 30,
            "{name}: {answered_at_first_poll} of 32 answered at the first poll"
        );
    }
    stop_all(&nodes).await;
}

/// A lone caller's round trip runs wholly in its own task: every follower stores the entry inline
/// (under load, only a majority's worth do, and the others work in their own tasks — see the
/// runtime's unit test `under_load_followers_beyond_a_majority_work_in_their_own_tasks`). Seen on a
/// write answered at its first poll: at that moment, before any other task has run, every
/// follower holds the entry.
#[tokio::test(start_paused = true)]
async fn a_lone_callers_round_trip_reaches_every_follower_inline() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 5, raft_config()).await;
    let leader = wait_for_leader(&nodes).await;
    for i in 0..16u32 {
        assert!(nodes[leader].propose(&format!("warm-{i}"), &i).await);
    }
    wait_until(Duration::from_secs(5), "every follower caught up", || {
        let last = nodes[leader].debug_state().last_log_index;
        nodes.iter().all(|node| node.debug_state().last_log_index == last)
    })
    .await;
    let mut checked = 0;
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    for i in 0..8u32 {
        let key = format!("lone-{i}");
        let mut write = std::pin::pin!(nodes[leader].propose(&key, &i));
        let std::task::Poll::Ready(accepted) = write.as_mut().poll(&mut context) else {
            // Went through the node task (one write in 64 does): nothing to see at this moment.
            assert!(write.await, "{key}");
            continue;
        };
        assert!(accepted, "{key}");
        let last = nodes[leader].debug_state().last_log_index;
        let holding = nodes.iter().filter(|node| node.debug_state().last_log_index == last).count();
        assert_eq!(holding, nodes.len(), "{key}: nodes holding the entry at the first poll");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} of 8 writes were answered at their first poll");
    stop_all(&nodes).await;
}

/// A key-value machine that panics when it applies `Custom(b"panic")` while armed.
struct PanicsOnCue {
    machine: KvStateMachine,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StateMachine for PanicsOnCue {
    fn apply(&mut self, context: &ApplyContext, command: &Command) -> CommandResult {
        let cue = matches!(command, Command::Custom(bytes) if bytes.as_ref() == b"panic");
        if cue && self.armed.load(std::sync::atomic::Ordering::Relaxed) {
            panic!("the state machine panics on cue");
        }
        self.machine.apply(context, command)
    }

    fn version(&self, key: &str) -> Version {
        self.machine.version(key)
    }

    fn get(&self, key: &str) -> Option<bytes::Bytes> {
        self.machine.get(key)
    }

    fn snapshot(&self) -> bytes::Bytes {
        self.machine.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), concord_core::state_machine::StateMachineError> {
        self.machine.restore(snapshot)
    }
}

/// A panic while a caller processes its node's Ready (here: the leader's state machine, applying
/// the caller's own write inline) must not leave the node wedged with its processing right taken:
/// the node stops acknowledging, and later callers are answered at once instead of waiting.
#[test]
fn a_panic_in_a_callers_task_stops_the_node_instead_of_wedging_it() {
    // A wedged node spins (its task waits for the processing right by yielding), so tokio's paused
    // clock never advances and an in-test timeout would never fire: the test runs on its own
    // thread, and a real-time bound here turns a wedge into a failure instead of a hang.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(panic_in_a_callers_task());
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the node is wedged after the panic"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the test body failed (see above)"),
    }
}

async fn panic_in_a_callers_task() {
    let network = MemoryNetwork::new();
    let members: Vec<NodeInfo> =
        (1..=3).map(|i| NodeInfo::new(format!("n{i}"), format!("mem://n{i}"))).collect();
    let mut nodes = Vec::new();
    let mut switches = Vec::new();
    for (index, member) in members.iter().enumerate() {
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        switches.push(armed.clone());
        let node = Consensus::builder(member.id.as_str())
            .config(raft_config())
            .members(members.clone())
            .transport(network.transport(member.id.as_str()))
            .seed(2000 + index as u64)
            .state_machine(Box::new(PanicsOnCue { machine: KvStateMachine::new(), armed }))
            .start()
            .await
            .expect("starts");
        nodes.push(node);
    }
    let leader = wait_for_leader(&nodes).await;
    // Warm up so that the next write runs inline, in the calling task.
    for i in 0..16u32 {
        assert!(nodes[leader].propose(&format!("warm-{i}"), &i).await);
    }
    switches[leader].store(true, std::sync::atomic::Ordering::Relaxed);
    let node = nodes[leader].clone();
    let panicked = tokio::spawn(async move {
        node.propose_command(Command::Custom(bytes::Bytes::from_static(b"panic"))).await
    })
    .await;
    assert!(panicked.is_err_and(|error| error.is_panic()), "the write panicked in its caller's task");
    let after =
        tokio::time::timeout(Duration::from_secs(10), nodes[leader].propose_with_result("after", &1u32))
            .await
            .expect("answered, not left waiting");
    assert!(
        matches!(after.error, Some(ProposalError::Storage(_))),
        "the node stopped acknowledging: {after:?}"
    );
    stop_all(&nodes).await;
}

/// A key-value machine whose `restore` says it has started, then waits (at most `WAIT_MAX` of real
/// time) until the test lets it go on.
struct GatedMachine {
    inner: KvStateMachine,
    started: Option<tokio::sync::oneshot::Sender<()>>,
    go: std::sync::mpsc::Receiver<()>,
}

impl StateMachine for GatedMachine {
    fn apply(&mut self, context: &ApplyContext, command: &Command) -> CommandResult {
        self.inner.apply(context, command)
    }

    fn version(&self, key: &str) -> Version {
        self.inner.version(key)
    }

    fn get(&self, key: &str) -> Option<bytes::Bytes> {
        self.inner.get(key)
    }

    fn snapshot(&self) -> bytes::Bytes {
        self.inner.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), concord_core::state_machine::StateMachineError> {
        const WAIT_MAX: Duration = Duration::from_secs(10);
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
        match self.go.recv_timeout(WAIT_MAX) {
            Ok(()) => self.inner.restore(snapshot),
            Err(_) => Err(concord_core::state_machine::StateMachineError::CorruptSnapshot(
                "restore was never let go on: the runtime's thread was blocked".into(),
            )),
        }
    }
}

// Building the mechanism replays what storage recovered (here: restores its snapshot into the
// state machine), which for a long log is blocking work too: `start` does it in the blocking pool
// with the recovery. On this one-thread runtime the task that lets the restore finish (once it has
// started) could not run if `start` built the mechanism on the runtime's thread.
#[tokio::test(flavor = "current_thread")]
async fn start_builds_the_mechanism_off_the_async_thread() {
    let mut storage = concord_core::storage::MemoryStorage::new();
    let mut replica = Replica::new(Box::new(KvStateMachine::new()), 16);
    replica.skip(LogIndex(1), Term(1));
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(1),
            last_term: Term(1),
            membership: Membership::with_voters([NodeInfo::new("n1", "")]),
        },
        data: replica.snapshot(),
    };
    storage
        .persist(&concord_core::storage::Persist { snapshot: Some(snapshot), ..Default::default() })
        .unwrap();
    let (go, gate) = std::sync::mpsc::channel();
    let (started, restore_started) = tokio::sync::oneshot::channel();
    let opener = tokio::spawn(async move {
        restore_started.await.unwrap();
        go.send(()).unwrap();
    });
    let network = MemoryNetwork::new();
    let machine = GatedMachine { inner: KvStateMachine::new(), started: Some(started), go: gate };
    let node = Consensus::builder("n1")
        .config(raft_config())
        .transport(network.transport("n1"))
        .storage(Box::new(storage))
        .state_machine(Box::new(machine))
        .start()
        .await
        .expect("the snapshot was restored while the runtime's thread ran the other task");
    opener.await.unwrap();
    node.stop().await;
}

/// Every in-flight proposal holds one of these futures: one that kept a result (about 300 bytes)
/// across the retry's await would double it.
#[tokio::test(start_paused = true)]
async fn a_proposal_future_holds_no_result_across_its_retry() {
    let network = MemoryNetwork::new();
    let nodes = cluster(&network, 1, raft_config()).await;
    let future = nodes[0].propose_command(Command::Delete { key: "k".into() });
    let size = std::mem::size_of_val(&future);
    assert!(
        size < 2 * std::mem::size_of::<ProposalResult>(),
        "a proposal future takes {size} bytes; a result takes {}",
        std::mem::size_of::<ProposalResult>()
    );
    drop(future);
    stop_all(&nodes).await;
}
