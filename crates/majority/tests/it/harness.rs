//! A tiny in-test cluster: synchronous message passing with a FIFO queue, immediate persistence,
//! virtual time, links that can be cut, and crash/restart from `MemoryStorage`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use concord_core::prelude::*;
use concord_majority::Majority;

pub struct Node {
    pub mechanism: Option<Majority>,
    pub storage: MemoryStorage,
    pub events: Vec<Event>,
    pub results: Vec<ProposalResult>,
    pub restarts: u64,
}

pub struct Cluster {
    pub now: Instant,
    pub config: Config,
    pub members: Vec<NodeInfo>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub queue: VecDeque<(NodeId, NodeId, Message)>,
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Every message sent, by kind, for counting round trips.
    pub sent: Vec<(NodeId, NodeId, &'static str)>,
    pub sequence: u64,
    /// How far a node's clock runs ahead of cluster time (`now`); none for most nodes.
    pub clock_ahead: BTreeMap<NodeId, Duration>,
}

pub fn majority_config() -> Config {
    let mut config = Config::for_mechanism(MechanismKind::SimpleMajority);
    config.timeout = Duration::from_millis(1000);
    config.heartbeat_interval = Duration::from_millis(100);
    config
}

pub fn id(name: &str) -> NodeId {
    NodeId::new(name)
}

impl Cluster {
    pub fn new(count: usize, config: Config) -> Cluster {
        let members: Vec<NodeInfo> =
            (1..=count).map(|n| NodeInfo::new(format!("n{n}"), format!("addr-{n}"))).collect();
        let mut cluster = Cluster {
            now: Instant::from_millis(1),
            config,
            members: members.clone(),
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            sent: Vec::new(),
            sequence: 0,
            clock_ahead: BTreeMap::new(),
        };
        for member in members {
            cluster.nodes.insert(
                member.id.clone(),
                Node {
                    mechanism: None,
                    storage: MemoryStorage::new(),
                    events: Vec::new(),
                    results: Vec::new(),
                    restarts: 0,
                },
            );
            cluster.start(&member.id);
        }
        cluster.settle();
        cluster
    }

    pub fn setup(&self, node: &NodeId) -> Setup {
        let state = self.nodes[node].storage.state().clone();
        Setup {
            node_id: node.clone(),
            config: self.config.clone(),
            initial_members: self.members.clone(),
            recovered: state,
            seed: 7 + self.nodes[node].restarts,
            replica: Replica::key_value(1024),
        }
    }

    pub fn start(&mut self, node: &NodeId) {
        let setup = self.setup(node);
        let mechanism = Majority::new(setup).expect("node starts");
        self.nodes.get_mut(node).unwrap().mechanism = Some(mechanism);
        self.drain(node);
    }

    pub fn node(&self, node: &str) -> &Majority {
        self.nodes[&id(node)].mechanism.as_ref().expect("node is up")
    }

    pub fn node_mut(&mut self, node: &str) -> &mut Majority {
        self.nodes.get_mut(&id(node)).unwrap().mechanism.as_mut().expect("node is up")
    }

    pub fn crash(&mut self, node: &str) {
        let entry = self.nodes.get_mut(&id(node)).unwrap();
        entry.mechanism = None;
        entry.restarts += 1;
        self.queue.retain(|(_, to, _)| to.as_str() != node);
    }

    pub fn restart(&mut self, node: &str) {
        self.start(&id(node));
    }

    pub fn isolate(&mut self, node: &str) {
        for other in self.members.clone() {
            if other.id.as_str() != node {
                self.cut.insert((id(node), other.id.clone()));
                self.cut.insert((other.id.clone(), id(node)));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// How far `node`'s clock runs ahead of cluster time.
    fn ahead(&self, node: &NodeId) -> Duration {
        self.clock_ahead.get(node).copied().unwrap_or_default()
    }

    /// The time on `node`'s clock: cluster time plus the node's skew.
    pub fn clock(&self, node: &NodeId) -> Instant {
        self.now + self.ahead(node)
    }

    /// Runs a node's Ready loop: send, persist, send what waited for persistence, advance.
    pub fn drain(&mut self, node: &NodeId) {
        let now = self.clock(node);
        for _ in 0..1000 {
            let entry = self.nodes.get_mut(node).unwrap();
            let Some(mechanism) = entry.mechanism.as_mut() else { return };
            if !mechanism.has_ready() {
                return;
            }
            let ready = mechanism.ready();
            entry.storage.persist(&ready.persist).expect("persist");
            mechanism.advance(now, ready.number);
            entry.events.extend(ready.events);
            entry.results.extend(ready.results);
            for outbound in ready.messages.into_iter().chain(ready.persisted_messages) {
                self.sent.push((node.clone(), outbound.to.clone(), outbound.message.kind()));
                self.queue.push_back((node.clone(), outbound.to, outbound.message));
            }
        }
        panic!("{node} never ran out of Ready batches");
    }

    /// Delivers one queued message (dropping it if its link is cut or its receiver is down).
    pub fn deliver_one(&mut self) -> bool {
        let Some((from, to, message)) = self.queue.pop_front() else { return false };
        if self.cut.contains(&(from.clone(), to.clone())) {
            return true;
        }
        let now = self.clock(&to);
        let Some(mechanism) = self.nodes.get_mut(&to).and_then(|node| node.mechanism.as_mut()) else {
            return true;
        };
        mechanism.handle_message(now, from, message).expect("well-formed message");
        self.drain(&to);
        true
    }

    /// Delivers until the network is quiet.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.deliver_one() {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// Moves virtual time forward in steps, firing timers and delivering messages.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            self.settle();
            let next = self
                .nodes
                .iter()
                .filter_map(|(id, node)| {
                    node.mechanism.as_ref().and_then(|m| m.poll_timeout()).map(|at| at - self.ahead(id))
                })
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
                    for node in ids {
                        let now = self.clock(&node);
                        if let Some(mechanism) = self.nodes.get_mut(&node).unwrap().mechanism.as_mut() {
                            if mechanism.poll_timeout().is_some_and(|at| at <= now) {
                                mechanism.handle_timeout(now);
                            }
                        }
                        self.drain(&node);
                    }
                }
                _ => {
                    self.now = end;
                    self.settle();
                    return;
                }
            }
        }
    }

    pub fn next_id(&mut self, node: &str) -> ProposalId {
        self.sequence += 1;
        ProposalId { origin: id(node), sequence: self.sequence }
    }

    pub fn propose(&mut self, node: &str, command: Command) -> Result<ProposalId, ProposalError> {
        let proposal_id = self.next_id(node);
        let now = self.clock(&id(node));
        let proposal = Proposal { id: proposal_id.clone(), session: None, command };
        self.node_mut(node).propose(now, proposal)?;
        self.drain(&id(node));
        Ok(proposal_id)
    }

    pub fn put(&mut self, node: &str, key: &str, value: &str) -> ProposalId {
        let command = Command::Put { key: key.into(), value: value.to_owned().into() };
        self.propose(node, command).expect("proposal admitted")
    }

    pub fn result(&self, node: &str, proposal: &ProposalId) -> Option<&ProposalResult> {
        self.nodes[&id(node)].results.iter().find(|result| result.proposal_id == *proposal)
    }

    pub fn value(&self, node: &str, key: &str) -> Option<String> {
        self.node(node).replica().machine().get(key).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn events(&self, node: &str) -> &[Event] {
        &self.nodes[&id(node)].events
    }

    /// The key-value states of the nodes that are up, all equal.
    pub fn assert_converged(&self) {
        let states: Vec<(NodeId, bytes::Bytes)> = self
            .nodes
            .iter()
            .filter_map(|(id, node)| {
                node.mechanism.as_ref().map(|m| (id.clone(), m.replica().machine().snapshot()))
            })
            .collect();
        for (node, state) in &states {
            assert_eq!(state, &states[0].1, "{node} differs from {}", states[0].0);
        }
    }
}
