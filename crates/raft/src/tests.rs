//! Unit tests over a tiny in-process cluster: reliable delivery in rounds, virtual time, nodes that
//! can be isolated, restarted from their storage, or added.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use concord_core::prelude::*;

use crate::Raft;

struct Cluster {
    config: Config,
    members: Vec<NodeInfo>,
    nodes: BTreeMap<NodeId, Raft>,
    storage: BTreeMap<NodeId, MemoryStorage>,
    now: Instant,
    /// How far each node's clock runs ahead of `now` (none: in step).
    clock_ahead: BTreeMap<NodeId, Duration>,
    network: VecDeque<(NodeId, Outbound)>,
    isolated: BTreeSet<NodeId>,
    results: BTreeMap<NodeId, Vec<ProposalResult>>,
    reads: BTreeMap<NodeId, Vec<ReadResult>>,
    events: BTreeMap<NodeId, Vec<Event>>,
    delivered: usize,
    sequence: u64,
    /// The first message this matches is lost (then the filter is cleared).
    drop_first: Option<fn(&Message) -> bool>,
    dropped: usize,
}

fn id(name: &str) -> NodeId {
    NodeId::new(name)
}

/// Proposes `count` puts (`k0`, `k1`, …) at `node` without running the cluster.
fn write_keys(cluster: &mut Cluster, node: &NodeId, count: usize) {
    for n in 0..count {
        cluster.propose(node, put(&format!("k{n}"), "v")).unwrap();
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put { key: key.into(), value: Bytes::from(value.to_owned()) }
}

impl Cluster {
    fn new(size: usize, config: Config) -> Cluster {
        let members: Vec<NodeInfo> =
            (1..=size).map(|n| NodeInfo::new(format!("n{n}"), format!("host{n}:700{n}"))).collect();
        let mut cluster = Cluster {
            config,
            members: members.clone(),
            nodes: BTreeMap::new(),
            storage: BTreeMap::new(),
            now: Instant::from_millis(1_000),
            clock_ahead: BTreeMap::new(),
            network: VecDeque::new(),
            isolated: BTreeSet::new(),
            results: BTreeMap::new(),
            reads: BTreeMap::new(),
            events: BTreeMap::new(),
            delivered: 0,
            sequence: 0,
            drop_first: None,
            dropped: 0,
        };
        for member in &members {
            cluster.start(&member.id, members.clone());
        }
        cluster
    }

    fn start(&mut self, node: &NodeId, initial_members: Vec<NodeInfo>) {
        let storage = self.storage.entry(node.clone()).or_default();
        let recovered = storage.recover().unwrap();
        let seed = node.as_str().bytes().map(u64::from).sum::<u64>() * 7919 + self.sequence;
        let setup = Setup {
            node_id: node.clone(),
            config: self.config.clone(),
            initial_members,
            recovered,
            seed,
            replica: Replica::key_value(1024),
        };
        self.nodes.insert(node.clone(), Raft::new(setup).unwrap());
    }

    fn restart(&mut self, node: &NodeId) {
        self.nodes.remove(node);
        self.network.retain(|(from, outbound)| from != node && outbound.to != *node);
        let members = self.members.clone();
        self.start(node, members);
    }

    /// `node`'s own clock.
    fn clock(&self, node: &NodeId) -> Instant {
        self.clock_ahead.get(node).map_or(self.now, |ahead| self.now + *ahead)
    }

    /// A time on `node`'s clock, on the cluster's.
    fn cluster_time(&self, node: &NodeId, at: Instant) -> Instant {
        let ahead = self.clock_ahead.get(node).map_or(0, |ahead| ahead.as_nanos() as u64);
        Instant::from_nanos(at.as_nanos().saturating_sub(ahead))
    }

    fn node(&self, node: &str) -> &Raft {
        &self.nodes[&id(node)]
    }

    /// Drains every Ready and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
            for node in &ids {
                let clock = self.clock(node);
                let raft = self.nodes.get_mut(node).unwrap();
                while raft.has_ready() {
                    busy = true;
                    let ready = raft.ready();
                    self.storage.get_mut(node).unwrap().persist(&ready.persist).unwrap();
                    for outbound in ready.messages.into_iter().chain(ready.persisted_messages) {
                        if self.drop_first.is_some_and(|matches| matches(&outbound.message)) {
                            self.drop_first = None;
                            self.dropped += 1;
                            continue;
                        }
                        self.network.push_back((node.clone(), outbound));
                    }
                    self.results.entry(node.clone()).or_default().extend(ready.results);
                    self.reads.entry(node.clone()).or_default().extend(ready.reads);
                    self.events.entry(node.clone()).or_default().extend(ready.events);
                    raft.advance(clock, ready.number);
                }
            }
            while let Some((from, outbound)) = self.network.pop_front() {
                busy = true;
                if self.isolated.contains(&from) || self.isolated.contains(&outbound.to) {
                    continue;
                }
                let clock = self.clock(&outbound.to);
                if let Some(raft) = self.nodes.get_mut(&outbound.to) {
                    self.delivered += 1;
                    let _ = raft.handle_message(clock, from, outbound.message);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the cluster never went quiet");
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            self.settle();
            let next = self
                .nodes
                .iter()
                .filter_map(|(node, raft)| {
                    raft.poll_timeout().map(|deadline| self.cluster_time(node, deadline))
                })
                .min();
            match next {
                Some(next) if next <= end => {
                    self.now = self.now.max(next);
                    let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
                    for node in ids {
                        let clock = self.clock(&node);
                        let raft = self.nodes.get_mut(&node).unwrap();
                        if raft.poll_timeout().is_some_and(|deadline| deadline <= clock) {
                            raft.handle_timeout(clock);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        self.settle();
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(node, raft)| raft.role() == Role::Leader && !self.isolated.contains(*node))
            .map(|(node, _)| node.clone())
            .collect()
    }

    fn elect(&mut self) -> NodeId {
        self.run_for(Duration::from_secs(3));
        let leaders = self.leaders();
        assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
        leaders[0].clone()
    }

    fn proposal(&mut self, origin: &NodeId, command: Command) -> Proposal {
        self.sequence += 1;
        Proposal {
            id: ProposalId { origin: origin.clone(), sequence: self.sequence },
            session: None,
            command,
        }
    }

    fn propose(&mut self, on: &NodeId, command: Command) -> Result<ProposalId, ProposalError> {
        let proposal = self.proposal(on, command);
        let proposal_id = proposal.id.clone();
        let now = self.clock(on);
        self.nodes.get_mut(on).unwrap().propose(now, proposal)?;
        Ok(proposal_id)
    }

    fn result(&self, on: &NodeId, proposal: &ProposalId) -> Option<&ProposalResult> {
        self.results.get(on)?.iter().find(|result| result.proposal_id == *proposal)
    }

    fn value(&self, on: &str, key: &str) -> Option<Bytes> {
        self.node(on).replica().machine().get(key)
    }
}

fn config() -> Config {
    Config::default()
}

#[test]
fn three_nodes_elect_one_leader_and_replicate() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let term = cluster.nodes[&leader].term();
    for raft in cluster.nodes.values() {
        assert_eq!(raft.term(), term);
        assert_eq!(raft.leader(), Some(leader.clone()));
    }
    let proposal = cluster.propose(&leader, put("score", "100")).unwrap();
    cluster.run_for(Duration::from_millis(500));
    let result = cluster.result(&leader, &proposal).expect("a result");
    assert!(result.accepted);
    assert_eq!(result.quorum_required, 2);
    assert!(result.votes.in_favor >= 2);
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.value(node, "score"), Some(Bytes::from("100")), "{node}");
        assert_eq!(cluster.node(node).commit_index(), cluster.node(node).last_log_index());
    }
    let events = &cluster.events[&leader];
    assert!(events.iter().any(|event| event.name() == "leader:elected"));
    assert!(events.iter().any(|event| event.name() == "consensus:accepted"));
    assert!(events.iter().any(|event| event.name() == "state:changed"));
    assert!(events.iter().any(|event| event.name() == "log:appended"));
    let debug = cluster.nodes[&leader].debug_state();
    assert_eq!(debug.followers.len(), 2);
    assert!(debug.followers.values().all(|progress| progress.match_index == debug.last_log_index));
}

#[test]
fn proposals_on_a_follower_are_forwarded() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    let proposal = cluster.propose(&follower, Command::Add { key: "counter".into(), delta: 5 }).unwrap();
    cluster.run_for(Duration::from_millis(500));
    let result = cluster.result(&follower, &proposal).expect("the origin gets the result");
    assert!(result.accepted);
    assert_eq!(result.output.as_ref().unwrap().counter, Some(5));
    assert!(cluster.result(&leader, &proposal).is_none(), "only the origin reports");
}

#[test]
fn forwarding_off_names_the_leader_and_its_address() {
    let mut config = config();
    config.forward_to_leader = false;
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    let error = cluster.propose(&follower, put("k", "v")).unwrap_err();
    match error {
        ProposalError::NotLeader { leader: Some(info) } => {
            assert_eq!(info.id, leader);
            assert!(info.address.starts_with("host"));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[test]
fn failed_compare_and_swap_is_a_command_error() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let command = Command::CompareAndSwap {
        key: "lock".into(),
        expected: Expectation::Version(3),
        new: Some(Bytes::from("me")),
    };
    let proposal = cluster.propose(&leader, command).unwrap();
    cluster.run_for(Duration::from_millis(500));
    let result = cluster.result(&leader, &proposal).unwrap();
    assert!(!result.accepted);
    assert!(matches!(result.error, Some(ProposalError::Command(CommandFailure::CompareFailed { .. }))));
    assert!(result.output.is_none());
}

#[test]
fn isolated_leader_steps_down_and_logs_converge() {
    let mut cluster = Cluster::new(5, config());
    let old = cluster.elect();
    // Entries the isolated leader accepts but can never commit.
    cluster.isolated.insert(old.clone());
    let lost = cluster.propose(&old, put("lost", "x")).unwrap();
    cluster.run_for(Duration::from_secs(3));
    assert_ne!(cluster.nodes[&old].role(), Role::Leader, "check-quorum steps the old leader down");
    let result = cluster.result(&old, &lost).expect("a result for the lost proposal");
    assert!(matches!(result.error, Some(ProposalError::LeadershipLost) | Some(ProposalError::Timeout)));
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1);
    let new = leaders[0].clone();
    let kept = cluster.propose(&new, put("kept", "y")).unwrap();
    cluster.run_for(Duration::from_millis(500));
    assert!(cluster.result(&new, &kept).unwrap().accepted);
    cluster.isolated.clear();
    cluster.run_for(Duration::from_secs(2));
    let reference: Vec<(LogIndex, Term)> =
        cluster.nodes[&new].log_entries().map(|entry| (entry.index, entry.term)).collect();
    for (node, raft) in &cluster.nodes {
        let log: Vec<(LogIndex, Term)> = raft.log_entries().map(|entry| (entry.index, entry.term)).collect();
        assert_eq!(log, reference, "{node} converged");
        assert_eq!(cluster.value(node.as_str(), "kept"), Some(Bytes::from("y")));
        assert_eq!(cluster.value(node.as_str(), "lost"), None);
    }
}

#[test]
fn rejoining_follower_does_not_disrupt_the_leader() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let term = cluster.nodes[&leader].term();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    cluster.isolated.insert(follower.clone());
    cluster.run_for(Duration::from_secs(5));
    assert_eq!(cluster.nodes[&follower].term(), term, "pre-vote keeps the term of a partitioned node");
    cluster.isolated.clear();
    cluster.run_for(Duration::from_secs(1));
    assert_eq!(cluster.nodes[&leader].role(), Role::Leader);
    assert_eq!(cluster.nodes[&leader].term(), term);
}

#[test]
fn restart_recovers_log_and_state() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    write_keys(&mut cluster, &leader, 5);
    cluster.run_for(Duration::from_millis(500));
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    let last = cluster.nodes[&follower].last_log_index();
    cluster.restart(&follower);
    assert_eq!(cluster.nodes[&follower].last_log_index(), last);
    cluster.run_for(Duration::from_secs(1));
    assert_eq!(cluster.value(follower.as_str(), "k4"), Some(Bytes::from("v")));
    // Restart everyone: the cluster elects again and keeps its state.
    let ids: Vec<NodeId> = cluster.nodes.keys().cloned().collect();
    for node in &ids {
        cluster.restart(node);
    }
    cluster.elect();
    cluster.run_for(Duration::from_millis(500));
    for node in &ids {
        assert_eq!(cluster.value(node.as_str(), "k3"), Some(Bytes::from("v")));
    }
}

#[test]
fn snapshots_compact_and_catch_up_a_lagging_follower_in_chunks() {
    let mut config = config();
    config.snapshot_interval = 5;
    config.snapshot_chunk_bytes = 64;
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    cluster.isolated.insert(follower.clone());
    for n in 0..30 {
        cluster.propose(&leader, put(&format!("key{n}"), "some value")).unwrap();
        cluster.run_for(Duration::from_millis(10));
    }
    let meta = cluster.nodes[&leader].snapshot_meta().expect("the leader took a snapshot").clone();
    assert!(meta.last_index.0 >= 25);
    assert!(cluster.nodes[&leader].log_entries().count() < 10, "the log was compacted");
    cluster.isolated.clear();
    cluster.run_for(Duration::from_secs(2));
    assert_eq!(cluster.value(follower.as_str(), "key29"), Some(Bytes::from("some value")));
    assert!(cluster.nodes[&follower].snapshot_meta().is_some(), "the follower installed a snapshot");
    // The follower restarts from its snapshot plus log tail.
    cluster.restart(&follower);
    assert_eq!(cluster.value(follower.as_str(), "key0"), Some(Bytes::from("some value")));
}

#[test]
fn lost_snapshot_chunk_is_resumed() {
    let mut config = config();
    config.snapshot_interval = 3;
    config.snapshot_chunk_bytes = 32;
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    cluster.isolated.insert(follower.clone());
    for n in 0..12 {
        cluster.propose(&leader, put(&format!("key{n}"), "0123456789")).unwrap();
        cluster.run_for(Duration::from_millis(10));
    }
    cluster.drop_first = Some(
        |message| matches!(message, Message::Raft(RaftMessage::InstallSnapshot { offset, .. }) if *offset == 32),
    );
    cluster.isolated.clear();
    cluster.run_for(Duration::from_secs(2));
    assert_eq!(cluster.dropped, 1, "the second chunk was lost once");
    assert_eq!(cluster.value(follower.as_str(), "key11"), Some(Bytes::from("0123456789")));
    assert_eq!(cluster.node(follower.as_str()).commit_index(), cluster.node(leader.as_str()).commit_index());
}

#[test]
fn read_index_on_leader_and_follower() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    cluster.propose(&leader, put("k", "v")).unwrap();
    cluster.run_for(Duration::from_millis(300));
    let now = cluster.now;
    cluster.nodes.get_mut(&leader).unwrap().read(now, 1).unwrap();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    cluster.nodes.get_mut(&follower).unwrap().read(now, 2).unwrap();
    let before = cluster.delivered;
    cluster.settle();
    assert!(cluster.delivered > before, "ReadIndex needs a round trip");
    let leader_read = &cluster.reads[&leader];
    assert_eq!(leader_read.len(), 1);
    let index = leader_read[0].result.clone().unwrap();
    assert!(index >= LogIndex(2));
    let follower_read = &cluster.reads[&follower];
    assert_eq!(follower_read[0].result, Ok(index));
    assert!(cluster.nodes[&follower].applied_index() >= index);
}

#[test]
fn lease_read_needs_no_round_trip() {
    let mut config = config();
    config.lease_reads = true;
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    cluster.run_for(Duration::from_millis(150));
    let now = cluster.now;
    assert!(cluster.nodes[&leader].lease_valid(now));
    cluster.nodes.get_mut(&leader).unwrap().read(now, 9).unwrap();
    let ready = cluster.nodes.get_mut(&leader).unwrap().ready();
    assert_eq!(ready.reads.len(), 1, "answered from the lease");
    assert!(ready.messages.is_empty());
    // Isolated, the lease runs out and reads need a quorum again.
    cluster.isolated.insert(leader.clone());
    cluster.run_for(Duration::from_millis(400));
    assert!(!cluster.nodes[&leader].lease_valid(cluster.now));
}

#[test]
fn leadership_transfer_hands_over() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let target = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    let now = cluster.now;
    cluster.nodes.get_mut(&leader).unwrap().transfer_leadership(now, &target).unwrap();
    assert!(matches!(cluster.propose(&leader, put("k", "v")), Err(ProposalError::Busy { .. })));
    cluster.run_for(Duration::from_millis(100));
    assert_eq!(cluster.nodes[&target].role(), Role::Leader);
    assert_eq!(cluster.leaders(), vec![target]);
}

#[test]
fn add_voter_catches_up_as_learner_then_is_promoted() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    write_keys(&mut cluster, &leader, 10);
    cluster.run_for(Duration::from_millis(300));
    // The new node starts empty and waits to be added.
    let new = id("n4");
    cluster.start(&new, Vec::new());
    assert_eq!(cluster.nodes[&new].role(), Role::Learner);
    let now = cluster.now;
    let change_id = ProposalId { origin: leader.clone(), sequence: 1000 };
    let info = NodeInfo::new("n4", "host4:7004").with_metadata("region", "us-west");
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .change_membership(now, change_id.clone(), MembershipChange::AddVoter(info))
        .unwrap();
    cluster.run_for(Duration::from_millis(500));
    assert!(cluster.result(&leader, &change_id).expect("result").accepted);
    for raft in cluster.nodes.values() {
        assert!(raft.membership().is_voter(&new));
        assert_eq!(raft.membership().members[&new].info.metadata["region"], "us-west");
    }
    assert_eq!(cluster.value("n4", "k9"), Some(Bytes::from("v")));
    assert_eq!(cluster.nodes[&new].role(), Role::Follower);
}

#[test]
fn second_membership_change_is_refused_while_one_is_uncommitted() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let now = cluster.now;
    let raft = cluster.nodes.get_mut(&leader).unwrap();
    let first = ProposalId { origin: leader.clone(), sequence: 1 };
    raft.change_membership(now, first, MembershipChange::AddLearner(NodeInfo::new("n9", "h9"))).unwrap();
    let second = ProposalId { origin: leader.clone(), sequence: 2 };
    let refused =
        raft.change_membership(now, second, MembershipChange::AddLearner(NodeInfo::new("n8", "h8")));
    assert!(matches!(refused, Err(ProposalError::Busy { .. })));
    let third = ProposalId { origin: leader.clone(), sequence: 3 };
    assert!(matches!(
        raft.change_membership(now, third, MembershipChange::Promote(id("nobody"))),
        Err(ProposalError::Busy { .. }) | Err(ProposalError::Invalid(_))
    ));
}

#[test]
fn removing_the_leader_steps_it_down() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let now = cluster.now;
    let change_id = ProposalId { origin: leader.clone(), sequence: 77 };
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .change_membership(now, change_id.clone(), MembershipChange::Remove(leader.clone()))
        .unwrap();
    cluster.run_for(Duration::from_secs(2));
    assert!(cluster.result(&leader, &change_id).unwrap().accepted);
    assert_ne!(cluster.nodes[&leader].role(), Role::Leader);
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], leader);
    let remaining = leaders[0].clone();
    assert_eq!(cluster.nodes[&remaining].membership().voter_count(), 2);
    let proposal = cluster.propose(&remaining, put("after", "removal")).unwrap();
    cluster.run_for(Duration::from_millis(300));
    assert!(cluster.result(&remaining, &proposal).unwrap().accepted);
}

#[test]
fn proposals_time_out_without_a_quorum_and_backpressure_is_typed() {
    let mut config = config();
    config.max_pending_proposals = 2;
    config.timeout = Duration::from_millis(1000);
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let others: Vec<NodeId> = cluster.nodes.keys().filter(|node| **node != leader).cloned().collect();
    cluster.isolated.extend(others);
    let first = cluster.propose(&leader, put("a", "1")).unwrap();
    cluster.propose(&leader, put("b", "2")).unwrap();
    assert!(matches!(cluster.propose(&leader, put("c", "3")), Err(ProposalError::Busy { .. })));
    cluster.run_for(Duration::from_secs(2));
    let result = cluster.result(&leader, &first).expect("every accepted proposal ends with one result");
    assert!(matches!(result.error, Some(ProposalError::Timeout) | Some(ProposalError::LeadershipLost)));
    let count = cluster.results[&leader].iter().filter(|result| result.proposal_id == first).count();
    assert_eq!(count, 1);
}

#[test]
fn batching_puts_proposals_in_one_append() {
    let mut config = config();
    config.batch_window = Duration::from_millis(20);
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let before = cluster.nodes[&leader].last_log_index();
    write_keys(&mut cluster, &leader, 10);
    assert_eq!(cluster.nodes[&leader].last_log_index(), before, "held for the batch window");
    let now = cluster.now + Duration::from_millis(20);
    cluster.now = now;
    cluster.nodes.get_mut(&leader).unwrap().handle_timeout(now);
    let ready = cluster.nodes.get_mut(&leader).unwrap().ready();
    let appends: Vec<usize> = ready
        .messages
        .iter()
        .filter_map(|outbound| match &outbound.message {
            Message::Raft(RaftMessage::Append { entries, .. }) if !entries.is_empty() => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![10, 10], "one append per follower with all ten entries");
    assert_eq!(ready.persist.entries.len(), 10);
}

#[test]
fn timestamps_never_decrease() {
    let mut cluster = Cluster::new(1, config());
    let leader = cluster.elect();
    cluster.propose(&leader, put("a", "1")).unwrap();
    cluster.run_for(Duration::from_millis(10));
    let stamps: Vec<u64> = cluster.nodes[&leader].log_entries().map(|entry| entry.timestamp_ms).collect();
    assert!(stamps.windows(2).all(|pair| pair[0] <= pair[1]));
    assert!(stamps.iter().all(|stamp| *stamp >= 1_000));
}

#[test]
fn a_leader_whose_clock_runs_a_day_ahead_stamps_no_further_than_the_time_it_measured() {
    let mut cluster = Cluster::new(3, config());
    let first = cluster.elect();
    write_keys(&mut cluster, &first, 3);
    cluster.run_for(Duration::from_millis(100));
    let newest_before = cluster.nodes[&first].log_entries().map(|entry| entry.timestamp_ms).max().unwrap();
    // A follower's process restarts with its wall clock a day ahead (the runtime anchors a node's
    // clock at the wall clock when the process starts), and then takes over.
    let fast = cluster.nodes.keys().find(|node| **node != first).unwrap().clone();
    cluster.clock_ahead.insert(fast.clone(), Duration::from_secs(86_400));
    cluster.restart(&fast);
    cluster.run_for(Duration::from_millis(500));
    let now = cluster.clock(&first);
    cluster.nodes.get_mut(&first).unwrap().transfer_leadership(now, &fast).unwrap();
    cluster.run_for(Duration::from_secs(1));
    assert_eq!(cluster.leaders(), vec![fast.clone()], "the transfer to the fast node took effect");
    let written = cluster.propose(&fast, put("after", "v")).unwrap();
    cluster.run_for(Duration::from_millis(100));
    assert!(cluster.result(&fast, &written).is_some_and(|result| result.accepted));
    let newest_after = cluster.nodes[&fast].log_entries().map(|entry| entry.timestamp_ms).max().unwrap();
    // At most: the cluster time that passed (1.7 s here), the allowance for skew, and the
    // replication delay; the day of clock error is not in it.
    assert!(newest_after > newest_before, "leader time still moves forward");
    assert!(
        newest_after <= newest_before + 1_700 + concord_core::time::STAMP_LEAD_MAX_MS + 100,
        "stamps jumped from {newest_before} to {newest_after}"
    );
}

#[test]
fn unreachable_and_reconnected_events() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    cluster.isolated.insert(follower.clone());
    cluster.run_for(Duration::from_secs(1));
    assert!(!cluster.nodes[&leader].connected_peers().contains(&follower));
    cluster.isolated.clear();
    cluster.run_for(Duration::from_millis(300));
    assert!(cluster.nodes[&leader].connected_peers().contains(&follower));
    let names: Vec<&str> = cluster.events[&leader]
        .iter()
        .filter_map(|event| match event {
            Event::NodeUnreachable { node } if *node == follower => Some("unreachable"),
            Event::NodeReconnected { node } if *node == follower => Some("reconnected"),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["unreachable", "reconnected"]);
}

/// Proposes a session-less increment at `follower` and returns it with the forward it sends `leader`
/// (not delivered).
fn forward_an_increment(cluster: &mut Cluster, follower: &NodeId, leader: &NodeId) -> (Proposal, Outbound) {
    let proposal = cluster.proposal(follower, Command::Add { key: "counter".into(), delta: 1 });
    let now = cluster.now;
    cluster.nodes.get_mut(follower).unwrap().propose(now, proposal.clone()).unwrap();
    let ready = cluster.nodes.get_mut(follower).unwrap().ready();
    let forward = ready.messages.into_iter().find(|outbound| outbound.to == *leader).expect("forwarded");
    (proposal, forward)
}

#[test]
fn duplicated_forward_is_appended_once_and_never_reported_as_refused() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    let (proposal, forward) = forward_an_increment(&mut cluster, &follower, &leader);
    let now = cluster.now;
    // The network delivers the forward twice, the second copy after the leader lost its term.
    let leader_raft = cluster.nodes.get_mut(&leader).unwrap();
    leader_raft.handle_message(now, follower.clone(), forward.message.clone()).unwrap();
    leader_raft.handle_message(now, follower.clone(), forward.message.clone()).unwrap();
    let appended = leader_raft
        .ready()
        .persist
        .entries
        .iter()
        .filter(|entry| matches!(&entry.payload, EntryPayload::Command(logged) if logged.id == proposal.id))
        .count();
    assert_eq!(appended, 1, "the duplicate is dropped");
    let term = leader_raft.term();
    let higher = RaftMessage::TimeoutNow { term: Term(term.0 + 1) };
    leader_raft.handle_message(now, follower.clone(), Message::Raft(higher)).unwrap();
    assert_ne!(leader_raft.role(), Role::Leader);
    leader_raft.handle_message(now, follower.clone(), forward.message).unwrap();
    let ready = leader_raft.ready();
    let rejected = ready
        .messages
        .iter()
        .any(|outbound| matches!(&outbound.message, Message::Raft(RaftMessage::ForwardRejected { .. })));
    assert!(!rejected, "a copy of a proposal in the log is never refused");
    // A refusal "not the leader" of a forward is an unknown outcome at the origin.
    let rejection = RaftMessage::ForwardRejected {
        term,
        proposal: proposal.id.clone(),
        error: ProposalError::NotLeader { leader: None },
    };
    let origin = cluster.nodes.get_mut(&follower).unwrap();
    origin.handle_message(now, leader.clone(), Message::Raft(rejection)).unwrap();
    let results = origin.ready().results;
    assert_eq!(results.len(), 1);
    assert!(results[0].error.as_ref().is_some_and(ProposalError::outcome_unknown));
}

#[test]
fn a_forward_duplicated_after_its_entry_was_compacted_is_still_dropped() {
    let mut config = config();
    config.snapshot_interval = 4;
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let follower = cluster.nodes.keys().find(|node| **node != leader).unwrap().clone();
    // Session-less: only the leader's memory of compacted proposals stops a late copy.
    let (proposal, forward) = forward_an_increment(&mut cluster, &follower, &leader);
    let now = cluster.now;
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .handle_message(now, follower.clone(), forward.message.clone())
        .unwrap();
    cluster.run_for(Duration::from_millis(100));
    // Written with sessions, as the runtime writes: their compaction remembers nothing.
    for n in 0..10 {
        let mut written = cluster.proposal(&leader, put(&format!("k{n}"), "v"));
        written.session = Some(ClientSession::new(77, n + 1));
        let now = cluster.now;
        cluster.nodes.get_mut(&leader).unwrap().propose(now, written).unwrap();
    }
    cluster.run_for(Duration::from_millis(100));
    let logged = |raft: &Raft| {
        raft.log_entries()
            .filter(
                |entry| matches!(&entry.payload, EntryPayload::Command(logged) if logged.id == proposal.id),
            )
            .count()
    };
    assert_eq!(logged(&cluster.nodes[&leader]), 0, "precondition: the forwarded entry was compacted");
    let now = cluster.now;
    cluster.nodes.get_mut(&leader).unwrap().handle_message(now, follower.clone(), forward.message).unwrap();
    cluster.run_for(Duration::from_millis(100));
    assert_eq!(logged(&cluster.nodes[&leader]), 0, "the late copy was not appended again");
    assert_eq!(cluster.value(leader.as_str(), "counter"), Some(KvStateMachine::encode_counter(1)));
}

#[test]
fn member_metadata_updates_through_the_log() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    let now = cluster.now;
    let info = NodeInfo::new("n2", "new-host:9000").with_metadata("zone", "b");
    let change_id = ProposalId { origin: leader.clone(), sequence: 500 };
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .change_membership(now, change_id.clone(), MembershipChange::Update(info))
        .unwrap();
    cluster.run_for(Duration::from_millis(300));
    assert!(cluster.result(&leader, &change_id).unwrap().accepted);
    for raft in cluster.nodes.values() {
        let member = &raft.membership().members[&id("n2")];
        assert_eq!(member.info.address, "new-host:9000");
        assert_eq!(member.info.metadata["zone"], "b");
        assert_eq!(member.role, MemberRole::Voter);
    }
}

#[test]
fn pending_reads_are_bounded() {
    let mut config = config();
    config.max_pending_reads = 2;
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let now = cluster.now;
    let raft = cluster.nodes.get_mut(&leader).unwrap();
    raft.read(now, 1).unwrap();
    raft.read(now, 2).unwrap();
    assert!(matches!(raft.read(now, 3), Err(ProposalError::Busy { .. })));
    assert!(matches!(raft.read(now, 1), Err(ProposalError::Invalid(_))), "a read id is used once at a time");
    cluster.settle();
    assert_eq!(cluster.reads[&leader].len(), 2);
}

#[test]
fn a_dead_learner_does_not_block_membership_changes_forever() {
    let mut config = config();
    config.timeout = Duration::from_millis(500);
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.elect();
    let now = cluster.now;
    let add = ProposalId { origin: leader.clone(), sequence: 600 };
    // n9 never starts: it cannot catch up.
    let raft = cluster.nodes.get_mut(&leader).unwrap();
    raft.change_membership(now, add.clone(), MembershipChange::AddVoter(NodeInfo::new("n9", "h9"))).unwrap();
    cluster.run_for(Duration::from_secs(1));
    let result = cluster.result(&leader, &add).expect("a result");
    assert_eq!(result.error, Some(ProposalError::Timeout));
    let remove = ProposalId { origin: leader.clone(), sequence: 601 };
    let now = cluster.now;
    let raft = cluster.nodes.get_mut(&leader).unwrap();
    raft.change_membership(now, remove.clone(), MembershipChange::Remove(id("n9"))).unwrap();
    cluster.run_for(Duration::from_millis(300));
    assert!(cluster.result(&leader, &remove).unwrap().accepted);
    assert!(!cluster.nodes[&leader].membership().contains(&id("n9")));
}

#[test]
fn a_silent_leader_is_reported_unreachable() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    cluster.isolated.insert(leader.clone());
    cluster.run_for(Duration::from_secs(2));
    // The follower whose election timer fires first has not heard from its leader for an election
    // timeout; the new leader, which replicates to the old one, notices its silence too.
    let reporters: Vec<&NodeId> = cluster
        .events
        .iter()
        .filter(|(node, events)| {
            **node != leader
                && events
                    .iter()
                    .any(|event| matches!(event, Event::NodeUnreachable { node } if *node == leader))
        })
        .map(|(node, _)| node)
        .collect();
    assert!(!reporters.is_empty());
    let new_leader = cluster.leaders()[0].clone();
    assert!(reporters.contains(&&new_leader));
    assert!(!cluster.nodes[&new_leader].connected_peers().contains(&leader));
}

#[test]
fn entry_events_can_be_turned_off_without_changing_results() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    for raft in cluster.nodes.values_mut() {
        raft.set_entry_events_wanted(false);
    }
    cluster.events.clear();
    let quiet = cluster.propose(&leader, put("score", "100")).unwrap();
    cluster.run_for(Duration::from_millis(500));
    let result = cluster.result(&leader, &quiet).expect("a result");
    assert!(result.accepted);
    assert!(result.output.is_some(), "the result still carries the command's output");
    let per_entry = ["log:appended", "state:changed", "consensus:accepted"];
    for (node, events) in &cluster.events {
        assert!(!events.iter().any(|event| per_entry.contains(&event.name())), "{node}: {events:?}");
    }
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.value(node, "score"), Some(Bytes::from("100")), "{node}");
    }
    // Turned back on, the next write reports all three kinds again.
    for raft in cluster.nodes.values_mut() {
        raft.set_entry_events_wanted(true);
    }
    let loud = cluster.propose(&leader, put("score", "200")).unwrap();
    cluster.run_for(Duration::from_millis(500));
    assert!(cluster.result(&leader, &loud).is_some_and(|result| result.accepted));
    let names: BTreeSet<&str> = cluster.events[&leader].iter().map(|event| event.name()).collect();
    for name in per_entry {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
}

#[test]
fn the_next_ready_starts_with_the_capacity_the_last_one_needed() {
    let mut cluster = Cluster::new(3, config());
    let leader = cluster.elect();
    for n in 0..50 {
        cluster.propose(&leader, put(&format!("key-{n}"), "v")).unwrap();
    }
    let raft = cluster.nodes.get_mut(&leader).unwrap();
    let first = raft.ready();
    assert_eq!(first.persist.entries.len(), 50);
    let now = cluster.now;
    let id = ProposalId { origin: leader.clone(), sequence: 1_000 };
    raft.propose(now, Proposal { id, session: None, command: put("one", "v") }).unwrap();
    let second = raft.ready();
    assert_eq!(second.persist.entries.len(), 1);
    // Under load each batch is about as large as the last: its buffers are not regrown from empty.
    assert!(second.persist.entries.capacity() >= 50, "{}", second.persist.entries.capacity());
    assert!(second.messages.capacity() >= first.messages.len());
}
