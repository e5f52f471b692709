//! A deterministic, hand-driven cluster of real `Raft` nodes.
//!
//! Virtual time only: `now` moves when a test says so. Messages go into one FIFO network queue and
//! are delivered (or dropped) only when a test asks. Every node's `Ready` is carried out in the
//! documented driver order (messages, persist into the node's `MemoryStorage`, persisted messages,
//! advance), and after every batch the harness checks what must always hold:
//! - a message sent before this batch's persist promises nothing that is not already durable (a
//!   granted vote, an append or snapshot acknowledgement);
//! - at most one leader per term (election safety), term and commit index never go backwards;
//! - log matching and state machine safety between every pair of nodes' durable logs;
//! - at most one result per proposal and one answer per read.
//!
//! The durable log of a node is read from its storage: the harness persists every batch at once,
//! so storage is exactly the node's log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use concord_core::event::DebugState;
use concord_core::prelude::*;
use concord_raft::{Bug, Raft};

/// Most messages delivered, or batches processed, by one helper call before the harness declares
/// that the cluster does not settle (a livelock or a message storm is a bug worth a clear panic).
pub const STEPS_MAX: usize = 200_000;

/// Shorthand for a node id.
pub fn id(name: &str) -> NodeId {
    NodeId::new(name)
}

/// The address the harness gives node `name`.
pub fn address_of(name: &str) -> String {
    format!("{name}.cluster.test:7000")
}

/// The defaults: pre-vote and check-quorum on.
pub fn default_config() -> Config {
    Config::default()
}

/// The paper's plain algorithm (§5): no pre-vote, no check-quorum (so no leader lease either).
pub fn paper_config() -> Config {
    let mut config = Config::default();
    config.pre_vote = false;
    config.check_quorum = false;
    config
}

/// A `Put` command.
pub fn put(key: &str, value: &str) -> Command {
    Command::Put { key: key.to_string(), value: Bytes::from(value.to_string()) }
}

/// A log entry carrying a `Put` whose key names its position, for hand-built logs.
pub fn command_entry(index: u64, term: u64) -> Entry {
    let proposal = Proposal {
        id: ProposalId { origin: id("prebuilt"), sequence: index * 1000 + term },
        session: None,
        command: put(&format!("k{index}"), &format!("t{term}")),
    };
    Entry {
        index: LogIndex(index),
        term: Term(term),
        timestamp_ms: index,
        payload: EntryPayload::Command(std::sync::Arc::new(proposal)),
    }
}

/// A log built from the terms of its entries, indices from 1 (as the paper's figures draw logs).
pub fn log_of_terms(terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(position, term)| command_entry(position as u64 + 1, *term)).collect()
}

/// What a node recovers when its storage holds `entries` and the given term (no vote).
pub fn recovered_with(entries: Vec<Entry>, term: u64) -> Recovered {
    Recovered {
        hard_state: HardState { term: Term(term), voted_for: None, commit: LogIndex::ZERO },
        snapshot: None,
        entries,
        records: BTreeMap::new(),
    }
}

/// Decides which messages the network loses (true: drop).
pub type DropRule = Box<dyn FnMut(&Packet) -> bool>;

/// A message in the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub message: RaftMessage,
}

/// One message a node handed to the driver, and in which part of its `Ready`.
#[derive(Clone, Debug)]
pub struct SentRecord {
    /// When it was handed to the driver.
    pub at: Instant,
    /// The message.
    pub packet: Packet,
    /// Whether it came in `persisted_messages` (sent only after the batch's persist).
    pub after_persist: bool,
}

/// A read answer, with what the node had applied when it was delivered to the application.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    /// When it was delivered.
    pub at: Instant,
    /// The answer.
    pub result: ReadResult,
    /// The replica's applied index at delivery.
    pub applied: LogIndex,
}

/// One node: the mechanism (absent while crashed), its storage, and everything it produced.
pub struct Node {
    /// The mechanism; `None` while the node is crashed.
    pub raft: Option<Raft>,
    /// Its durable storage (survives crashes).
    pub storage: MemoryStorage,
    /// Its config.
    pub config: Config,
    /// Seed of its RNG (changed on every restart).
    pub seed: u64,
    /// Proposal results, in delivery order.
    pub results: Vec<ProposalResult>,
    /// Read answers, in delivery order.
    pub reads: Vec<ReadRecord>,
    /// Events, in delivery order.
    pub events: Vec<Event>,
    /// Every message it sent.
    pub sent: Vec<SentRecord>,
    /// Every non-empty persist it asked for.
    pub persists: Vec<Persist>,
    /// Errors `handle_message` returned.
    pub peer_errors: Vec<String>,
}

/// The cluster.
pub struct Cluster {
    /// Virtual time.
    pub now: Instant,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered or dropped, oldest first.
    pub network: VecDeque<Packet>,
    /// Directed links that drop everything (`(from, to)`).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drops the messages for which it returns true (besides cut links), for targeted loss.
    pub drop_rule: Option<DropRule>,
    /// A deliberately broken behaviour switched on in every node (to prove the tests can fail).
    bug: Option<Bug>,
    /// Messages delayed by [`Cluster::run_with_latency`]: (deliver at, send order, message). They
    /// stay in transit between calls; the other helpers do not deliver them.
    in_transit: Vec<(Instant, u64, Packet)>,
    next_send_order: u64,
    /// The initial members every node was started with.
    pub members: Vec<NodeInfo>,
    next_sequence: u64,
    next_read: u64,
    leaders_by_term: BTreeMap<Term, NodeId>,
    // Per node: the term and commit index seen last, to check neither goes backwards. Cleared on a
    // restart for the commit index, which may legally restart lower (it is recomputed).
    last_term: BTreeMap<NodeId, Term>,
    last_commit: BTreeMap<NodeId, LogIndex>,
}

impl Cluster {
    /// `size` fresh nodes `n1..` with the same config, all voters.
    pub fn new(size: usize, config: Config) -> Cluster {
        Self::with_recovered(config, (0..size).map(|_| Recovered::default()).collect())
    }

    /// One node per `Recovered`, each starting from it (its storage holds it too).
    pub fn with_recovered(config: Config, recovered: Vec<Recovered>) -> Cluster {
        Self::with_recovered_seeded(config, recovered, 1000)
    }

    /// `size` fresh nodes whose RNG seeds start at `seed_base`.
    pub fn seeded(size: usize, config: Config, seed_base: u64) -> Cluster {
        Self::with_recovered_seeded(config, (0..size).map(|_| Recovered::default()).collect(), seed_base)
    }

    /// Like [`Cluster::with_recovered`], with RNG seeds starting at `seed_base`.
    pub fn with_recovered_seeded(config: Config, recovered: Vec<Recovered>, seed_base: u64) -> Cluster {
        config.validate().expect("test config is valid");
        let members: Vec<NodeInfo> = (1..=recovered.len())
            .map(|number| {
                let name = format!("n{number}");
                NodeInfo::new(name.as_str(), address_of(&name))
            })
            .collect();
        let mut cluster = Cluster {
            now: Instant::ZERO,
            nodes: BTreeMap::new(),
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            drop_rule: None,
            bug: None,
            in_transit: Vec::new(),
            next_send_order: 0,
            members: members.clone(),
            next_sequence: 1,
            next_read: 1,
            leaders_by_term: BTreeMap::new(),
            last_term: BTreeMap::new(),
            last_commit: BTreeMap::new(),
        };
        for (position, recovered) in recovered.into_iter().enumerate() {
            let node_id = members[position].id.clone();
            cluster.add_node(
                node_id,
                config.clone(),
                members.clone(),
                recovered,
                seed_base + position as u64,
            );
        }
        cluster
    }

    /// Starts one more node (e.g. to join by a membership change), from `recovered`.
    pub fn add_node(
        &mut self,
        node_id: NodeId,
        config: Config,
        initial_members: Vec<NodeInfo>,
        recovered: Recovered,
        seed: u64,
    ) {
        let mut storage = MemoryStorage::new();
        let preload = Persist {
            snapshot: recovered.snapshot.clone(),
            truncate_from: None,
            entries: recovered.entries.clone(),
            hard_state: Some(recovered.hard_state.clone()),
            records: Vec::new(),
        };
        storage.persist(&preload).expect("the prebuilt log is contiguous");
        let raft = Raft::new(Setup {
            node_id: node_id.clone(),
            config: config.clone(),
            initial_members,
            recovered,
            seed,
            replica: Replica::with_config(Box::new(KvStateMachine::new()), &config),
        })
        .expect("the node starts");
        let mut raft = raft;
        if let Some(bug) = self.bug {
            raft.set_bug(bug);
        }
        self.nodes.insert(
            node_id.clone(),
            Node {
                raft: Some(raft),
                storage,
                config,
                seed,
                results: Vec::new(),
                reads: Vec::new(),
                events: Vec::new(),
                sent: Vec::new(),
                persists: Vec::new(),
                peer_errors: Vec::new(),
            },
        );
        self.start(&node_id);
    }

    // A driver calls `handle_timeout` once `now` reaches `poll_timeout`; a new node asks for that
    // at once (it arms its timers relative to the first `now` it sees).
    fn start(&mut self, node_id: &NodeId) {
        let due = self.nodes[node_id]
            .raft
            .as_ref()
            .and_then(|raft| raft.poll_timeout())
            .is_some_and(|d| d <= self.now);
        if due {
            self.tick(node_id.as_str());
        } else {
            self.process(node_id);
        }
    }

    /// Switches a deliberately broken behaviour on in every node, now and after restarts.
    pub fn set_bug(&mut self, bug: Bug) {
        self.bug = Some(bug);
        for node in self.nodes.values_mut() {
            if let Some(raft) = node.raft.as_mut() {
                raft.set_bug(bug);
            }
        }
    }

    // ----- looking at nodes -----

    /// The node's mechanism (panics if it is crashed).
    pub fn raft(&self, node: &str) -> &Raft {
        self.nodes[node].raft.as_ref().unwrap_or_else(|| panic!("{node} is crashed"))
    }

    /// The node's mechanism, mutably.
    pub fn raft_mut(&mut self, node: &str) -> &mut Raft {
        self.nodes.get_mut(node).and_then(|n| n.raft.as_mut()).unwrap_or_else(|| panic!("{node} is crashed"))
    }

    /// The node's record.
    pub fn node(&self, node: &str) -> &Node {
        &self.nodes[node]
    }

    /// The node's debug state.
    pub fn state(&self, node: &str) -> DebugState {
        self.raft(node).debug_state()
    }

    /// Current term.
    pub fn term(&self, node: &str) -> Term {
        self.state(node).current_term
    }

    /// Current role.
    pub fn role(&self, node: &str) -> Role {
        self.state(node).role
    }

    /// Commit index.
    pub fn commit(&self, node: &str) -> LogIndex {
        self.state(node).commit_index
    }

    /// Last log index.
    pub fn last_index(&self, node: &str) -> LogIndex {
        self.state(node).last_log_index
    }

    /// The node's durable log (after its snapshot).
    pub fn log(&self, node: &str) -> Vec<Entry> {
        self.nodes[node].storage.state().entries.clone()
    }

    /// The terms of the node's durable log, in order.
    pub fn log_terms(&self, node: &str) -> Vec<u64> {
        self.log(node).iter().map(|entry| entry.term.0).collect()
    }

    /// The node's durable hard state.
    pub fn hard_state(&self, node: &str) -> HardState {
        self.nodes[node].storage.state().hard_state.clone()
    }

    /// The value of `key` in the node's replica.
    pub fn value(&self, node: &str, key: &str) -> Option<Bytes> {
        self.raft(node).replica().machine().get(key)
    }

    /// Ids of the live nodes whose role is `Leader`.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| {
                node.raft.as_ref().is_some_and(|raft| raft.debug_state().role == Role::Leader)
            })
            .map(|(node_id, _)| node_id.clone())
            .collect()
    }

    /// Results the node delivered for `proposal`.
    pub fn results_for(&self, node: &str, proposal: &ProposalId) -> Vec<ProposalResult> {
        self.nodes[node].results.iter().filter(|result| &result.proposal_id == proposal).cloned().collect()
    }

    /// Read answers the node delivered for `read`.
    pub fn reads_for(&self, node: &str, read: ReadId) -> Vec<ReadRecord> {
        self.nodes[node].reads.iter().filter(|record| record.result.id == read).cloned().collect()
    }

    /// Messages in the network, without taking them.
    pub fn in_flight(&self) -> Vec<Packet> {
        self.network.iter().cloned().collect()
    }

    // ----- driving nodes -----

    /// Carries out every pending `Ready` of the node, in the documented driver order.
    pub fn process(&mut self, node: &NodeId) {
        for _ in 0..STEPS_MAX {
            let Some(raft) = self.nodes.get_mut(node).and_then(|n| n.raft.as_mut()) else { return };
            if !raft.has_ready() {
                return;
            }
            let ready = raft.ready();
            self.carry_out(node, ready);
        }
        panic!("{node}: has_ready stayed true for {STEPS_MAX} batches");
    }

    /// Carries out one `Ready` the test took itself (see [`Cluster::take_ready`]).
    pub fn carry_out(&mut self, node_id: &NodeId, ready: Ready) {
        let now = self.now;
        let node = self.nodes.get_mut(node_id).expect("known node");
        let durable_before = node.storage.state().clone();
        // Step 3: messages that do not depend on this batch's persist.
        for outbound in &ready.messages {
            let message = raft_message(node_id, &outbound.message);
            check_promise_is_durable(node_id, &outbound.to, &message, &durable_before, &ready.persist);
            let packet = Packet { from: node_id.clone(), to: outbound.to.clone(), message };
            node.sent.push(SentRecord { at: now, packet: packet.clone(), after_persist: false });
            self.network.push_back(packet);
        }
        // Step 4: persist.
        if !ready.persist.is_empty() {
            node.storage
                .persist(&ready.persist)
                .unwrap_or_else(|error| panic!("{node_id}: storage refused the mechanism's write: {error}"));
            node.persists.push(ready.persist.clone());
            // A restart applies up to the saved commit index before hearing from a leader, so
            // storage must hold every entry up to it.
            let durable = node.storage.state();
            assert!(
                durable.hard_state.commit <= durable_last_index(durable),
                "{node_id} saved commit index {} beyond its durable log ({})",
                durable.hard_state.commit,
                durable_last_index(durable)
            );
        }
        // Step 5: messages that promise what was just persisted.
        for outbound in &ready.persisted_messages {
            let message = raft_message(node_id, &outbound.message);
            let packet = Packet { from: node_id.clone(), to: outbound.to.clone(), message };
            node.sent.push(SentRecord { at: now, packet: packet.clone(), after_persist: true });
            self.network.push_back(packet);
        }
        // Step 6: acknowledge.
        let raft = node.raft.as_mut().expect("a live node produced the batch");
        raft.advance(now, ready.number);
        // Step 7: deliver to the application.
        let applied = raft.replica().applied();
        // Exactly one result per proposal, one answer per read (checked here for every test).
        for result in &ready.results {
            assert!(
                !node.results.iter().any(|earlier| earlier.proposal_id == result.proposal_id),
                "{node_id}: a second result for proposal {}: {result:?}",
                result.proposal_id
            );
        }
        for read in &ready.reads {
            assert!(
                !node.reads.iter().any(|earlier| earlier.result.id == read.id),
                "{node_id}: a second answer to read {}: {read:?}",
                read.id
            );
        }
        node.results.extend(ready.results);
        node.reads.extend(ready.reads.into_iter().map(|result| ReadRecord { at: now, result, applied }));
        node.events.extend(ready.events);
        self.check_invariants(node_id);
    }

    /// Takes the node's next `Ready` without carrying it out (for tests that inspect it).
    pub fn take_ready(&mut self, node: &str) -> Ready {
        self.raft_mut(node).ready()
    }

    fn check_invariants(&mut self, node_id: &NodeId) {
        let Some(raft) = self.nodes.get(node_id).and_then(|n| n.raft.as_ref()) else { return };
        let state = raft.debug_state();
        if let Some(previous) = self.last_term.get(node_id) {
            assert!(
                state.current_term >= *previous,
                "{node_id}: term went backwards from {previous} to {}",
                state.current_term
            );
        }
        self.last_term.insert(node_id.clone(), state.current_term);
        if let Some(previous) = self.last_commit.get(node_id) {
            assert!(
                state.commit_index >= *previous,
                "{node_id}: commit index went backwards from {previous} to {}",
                state.commit_index
            );
        }
        self.last_commit.insert(node_id.clone(), state.commit_index);
        self.check_logs(node_id, state.commit_index);
        if state.role == Role::Leader {
            let leader = self.leaders_by_term.entry(state.current_term).or_insert_with(|| node_id.clone());
            assert_eq!(
                leader, node_id,
                "election safety (§5.2): two leaders in term {}: {leader} and {node_id}",
                state.current_term
            );
        }
    }

    // Log matching (§5.3): two logs with an entry of the same index and term are identical up to
    // it. State machine safety (§5.4.3): what both nodes committed is the same entries.
    fn check_logs(&self, node_id: &NodeId, commit: LogIndex) {
        let mine = &self.nodes[node_id].storage.state().entries;
        if mine.is_empty() {
            return;
        }
        for (other_id, other) in &self.nodes {
            if other_id == node_id {
                continue;
            }
            let theirs = &other.storage.state().entries;
            let Some(their_first) = theirs.first().map(|entry| entry.index.0) else { continue };
            let lookup = |index: LogIndex| -> Option<&Entry> {
                index.0.checked_sub(their_first).and_then(|offset| theirs.get(offset as usize))
            };
            let matching =
                mine.iter().rev().find(|entry| lookup(entry.index).is_some_and(|t| t.term == entry.term));
            if let Some(matching) = matching {
                for entry in mine.iter().take_while(|entry| entry.index <= matching.index) {
                    if let Some(their_entry) = lookup(entry.index) {
                        assert_eq!(
                            entry, their_entry,
                            "log matching (§5.3): {node_id} and {other_id} agree on index {} term {} \
                             but differ at {}",
                            matching.index, matching.term, entry.index
                        );
                    }
                }
            }
            let their_commit =
                other.raft.as_ref().map_or(LogIndex::ZERO, |raft| raft.debug_state().commit_index);
            let both = commit.min(their_commit);
            for entry in mine.iter().take_while(|entry| entry.index <= both) {
                if let Some(their_entry) = lookup(entry.index) {
                    assert_eq!(
                        entry, their_entry,
                        "state machine safety (§5.4.3): {node_id} and {other_id} committed different \
                         entries at {}",
                        entry.index
                    );
                }
            }
        }
    }

    /// Sets the time (never backwards).
    pub fn set_time(&mut self, now: Instant) {
        assert!(now >= self.now, "virtual time never goes backwards");
        self.now = now;
    }

    /// Calls `handle_timeout(now)` on the node at the current time and carries out its work.
    pub fn tick(&mut self, node: &str) {
        let now = self.now;
        self.raft_mut(node).handle_timeout(now);
        self.process(&id(node));
    }

    /// Moves time to the node's own deadline (if later than now) and fires it. Only this node
    /// sees the time pass; the others are not ticked.
    pub fn fire_timeout(&mut self, node: &str) {
        let deadline = self.raft(node).poll_timeout().unwrap_or_else(|| panic!("{node} has no timer"));
        if deadline > self.now {
            self.now = deadline;
        }
        self.tick(node);
    }

    /// Delivers one packet (unless its link is cut or its receiver is crashed); returns whether it
    /// was delivered.
    pub fn deliver(&mut self, packet: Packet) -> bool {
        if self.cut.contains(&(packet.from.clone(), packet.to.clone())) {
            return false;
        }
        if let Some(rule) = self.drop_rule.as_mut() {
            if rule(&packet) {
                return false;
            }
        }
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&packet.to) else { return false };
        let Some(raft) = node.raft.as_mut() else { return false };
        if let Err(error) = raft.handle_message(now, packet.from.clone(), Message::Raft(packet.message)) {
            node.peer_errors.push(error.to_string());
        }
        self.process(&packet.to);
        true
    }

    /// Takes every message in the network (to deliver, drop or inspect by hand).
    pub fn take_network(&mut self) -> Vec<Packet> {
        self.network.drain(..).collect()
    }

    /// Drops every message in the network.
    pub fn drop_network(&mut self) {
        self.network.clear();
    }

    /// Delivers messages (and whatever they cause) until the network is empty.
    pub fn deliver_all(&mut self) {
        self.deliver_all_where(|_| true);
    }

    /// Like [`Cluster::deliver_all`], but drops the messages `keep` refuses.
    pub fn deliver_all_where(&mut self, mut keep: impl FnMut(&Packet) -> bool) {
        for _ in 0..STEPS_MAX {
            let Some(packet) = self.network.pop_front() else { return };
            if keep(&packet) {
                self.deliver(packet);
            }
        }
        panic!("the network did not drain within {STEPS_MAX} deliveries");
    }

    /// Runs the cluster for `duration` of virtual time: every node's timer fires when due, and
    /// messages are delivered at once (zero latency) unless a link is cut.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        self.run_until_inner(end, |_| false);
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time passes;
    /// returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, done: impl FnMut(&Cluster) -> bool) -> bool {
        let end = self.now + limit;
        self.run_until_inner(end, done)
    }

    fn run_until_inner(&mut self, end: Instant, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..STEPS_MAX {
            self.deliver_all();
            if done(self) {
                return true;
            }
            let next = self
                .nodes
                .values()
                .filter_map(|node| node.raft.as_ref().and_then(|raft| raft.poll_timeout()))
                .min();
            match next {
                Some(deadline) if deadline <= end => {
                    if deadline > self.now {
                        self.now = deadline;
                    }
                    let due: Vec<NodeId> = self
                        .nodes
                        .iter()
                        .filter(|(_, node)| {
                            node.raft
                                .as_ref()
                                .and_then(|raft| raft.poll_timeout())
                                .is_some_and(|d| d <= self.now)
                        })
                        .map(|(node_id, _)| node_id.clone())
                        .collect();
                    for node_id in due {
                        self.tick(node_id.as_str());
                    }
                }
                _ => {
                    self.now = end;
                    self.deliver_all();
                    return done(self);
                }
            }
        }
        panic!(
            "virtual time did not reach {end:?} within {STEPS_MAX} timer firings (a timer that never moves?)"
        );
    }

    /// Runs for `duration` in steps of `step`, delivering each message `latency_of(message)` after
    /// it was sent (cut links and the drop rule still apply, at delivery). Timers fire at the
    /// first step at or after their deadline; `each_step` runs once per step (to issue reads, say)
    /// and ends the run early by returning true (messages in transit stay in transit for the next
    /// call). Returns whether it did.
    pub fn run_with_latency(
        &mut self,
        duration: Duration,
        step: Duration,
        latency_of: impl Fn(&Packet) -> Duration,
        mut each_step: impl FnMut(&mut Cluster) -> bool,
    ) -> bool {
        assert!(!step.is_zero());
        let end = self.now + duration;
        let schedule = |cluster: &mut Cluster| {
            let sent: Vec<Packet> = cluster.network.drain(..).collect();
            for packet in sent {
                let at = cluster.now + latency_of(&packet);
                cluster.in_transit.push((at, cluster.next_send_order, packet));
                cluster.next_send_order += 1;
            }
        };
        for _ in 0..STEPS_MAX {
            if self.now >= end {
                return false;
            }
            schedule(self);
            for _ in 0..STEPS_MAX {
                self.in_transit.sort_by_key(|(at, order, _)| (*at, *order));
                if !self.in_transit.first().is_some_and(|(at, ..)| *at <= self.now) {
                    break;
                }
                let (_, _, packet) = self.in_transit.remove(0);
                self.deliver(packet);
                schedule(self);
            }
            let due: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, node)| {
                    node.raft.as_ref().and_then(|raft| raft.poll_timeout()).is_some_and(|d| d <= self.now)
                })
                .map(|(node_id, _)| node_id.clone())
                .collect();
            for node_id in due {
                self.tick(node_id.as_str());
            }
            let stop = each_step(self);
            schedule(self);
            if stop {
                return true;
            }
            self.now = self.now + step;
        }
        panic!("run_with_latency did not reach {end:?} within {STEPS_MAX} steps");
    }

    /// Fires `node`'s election timer and delivers everything that follows; asserts it won.
    pub fn elect(&mut self, node: &str) -> Term {
        self.fire_timeout(node);
        self.deliver_all();
        // With pre-vote the first timeout only probes; the real campaign follows in the same
        // delivery round. A node still campaigning has lost: that is a test setup error.
        assert_eq!(self.role(node), Role::Leader, "{node} should have won the election");
        self.term(node)
    }

    /// Runs two heartbeat intervals so the commit index reaches every follower.
    pub fn settle(&mut self) {
        let interval = self.nodes.values().next().expect("a node").config.heartbeat_interval;
        self.run_for(interval * 2);
    }

    // ----- clients -----

    /// A fresh proposal id made on `node`.
    pub fn next_proposal_id(&mut self, node: &str) -> ProposalId {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        ProposalId { origin: id(node), sequence }
    }

    /// Proposes `command` on `node` and carries out its work; returns the proposal's id.
    pub fn propose(&mut self, node: &str, command: Command) -> Result<ProposalId, ProposalError> {
        let proposal_id = self.next_proposal_id(node);
        let proposal = Proposal { id: proposal_id.clone(), session: None, command };
        let now = self.now;
        let outcome = self.raft_mut(node).propose(now, proposal);
        self.process(&id(node));
        outcome.map(|()| proposal_id)
    }

    /// Proposes a `Put` on `node`; panics if it is refused at once.
    pub fn propose_put(&mut self, node: &str, key: &str, value: &str) -> ProposalId {
        self.propose(node, put(key, value))
            .unwrap_or_else(|error| panic!("{node} refused a proposal: {error}"))
    }

    /// Asks `node` for a linearizable read point.
    pub fn read(&mut self, node: &str) -> Result<ReadId, ProposalError> {
        let read_id = self.next_read;
        self.next_read += 1;
        let now = self.now;
        let outcome = self.raft_mut(node).read(now, read_id);
        self.process(&id(node));
        outcome.map(|()| read_id)
    }

    /// Proposes a membership change on `node`.
    pub fn change_membership(
        &mut self,
        node: &str,
        change: MembershipChange,
    ) -> Result<ProposalId, ProposalError> {
        let proposal_id = self.next_proposal_id(node);
        let now = self.now;
        let outcome = self.raft_mut(node).change_membership(now, proposal_id.clone(), change);
        self.process(&id(node));
        outcome.map(|()| proposal_id)
    }

    /// Asks `node` to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, node: &str, to: &str) -> Result<(), ProposalError> {
        let now = self.now;
        let outcome = self.raft_mut(node).transfer_leadership(now, &id(to));
        self.process(&id(node));
        outcome
    }

    /// Delivers a hand-made message at once and returns what the receiver sent in answer (those
    /// answers are taken out of the network).
    pub fn exchange(&mut self, from: &str, to: &str, message: RaftMessage) -> Vec<Packet> {
        let before = self.network.len();
        assert!(self.deliver(Packet { from: id(from), to: id(to), message }), "the link {from}->{to} is cut");
        let answers: Vec<Packet> = self.network.drain(before..).collect();
        answers
    }

    // ----- faults -----

    /// Drops everything from `from` to `to`.
    pub fn cut(&mut self, from: &str, to: &str) {
        self.cut.insert((id(from), id(to)));
    }

    /// Drops everything between `a` and `b`, both ways.
    pub fn cut_both(&mut self, a: &str, b: &str) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&mut self, node: &str) {
        let others: Vec<NodeId> = self.nodes.keys().filter(|other| other.as_str() != node).cloned().collect();
        for other in others {
            self.cut_both(node, other.as_str());
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes the node: its mechanism is dropped, its storage stays.
    pub fn crash(&mut self, node: &str) {
        self.nodes.get_mut(node).expect("known node").raft = None;
    }

    /// Restarts a crashed node from what its storage recovers.
    pub fn restart(&mut self, node: &str) {
        let node_id = id(node);
        let members = self.members.clone();
        let entry = self.nodes.get_mut(node).expect("known node");
        assert!(entry.raft.is_none(), "{node} is running");
        let recovered = entry.storage.recover().expect("memory storage recovers");
        entry.seed += 7919;
        let raft = Raft::new(Setup {
            node_id: node_id.clone(),
            config: entry.config.clone(),
            initial_members: members,
            recovered,
            seed: entry.seed,
            replica: Replica::with_config(Box::new(KvStateMachine::new()), &entry.config),
        })
        .expect("the node restarts from its own storage");
        let mut raft = raft;
        if let Some(bug) = self.bug {
            raft.set_bug(bug);
        }
        entry.raft = Some(raft);
        // The commit index is volatile (recomputed after a restart); the term is not.
        self.last_commit.remove(&node_id);
        self.start(&node_id);
    }
}

/// The Raft message inside a message (any other family is a bug of the mechanism).
fn raft_message(from: &NodeId, message: &Message) -> RaftMessage {
    match message {
        Message::Raft(message) => message.clone(),
        other => panic!("{from} sent a message of another mechanism: {}", other.kind()),
    }
}

fn durable_last_index(state: &Recovered) -> LogIndex {
    state
        .entries
        .last()
        .map(|entry| entry.index)
        .or_else(|| state.snapshot.as_ref().map(|snapshot| snapshot.meta.last_index))
        .unwrap_or(LogIndex::ZERO)
}

/// A message sent before the batch's persist must promise only what was durable already (the
/// driver order of `concord_core::mechanism`): a granted vote, an append or snapshot ack.
fn check_promise_is_durable(
    from: &NodeId,
    to: &NodeId,
    message: &RaftMessage,
    durable: &Recovered,
    persist: &Persist,
) {
    match message {
        RaftMessage::VoteResponse { term, granted: true, pre_vote: false } => {
            assert!(
                durable.hard_state.term == *term && durable.hard_state.voted_for.as_ref() == Some(to),
                "persistence order: {from} granted its vote to {to} in term {term} in `messages`, \
                 before the vote was durable (durable hard state: {:?})",
                durable.hard_state
            );
        }
        RaftMessage::AppendResponse { success: true, match_index, .. } => {
            // The acknowledged prefix must be durable and this batch must not rewrite any of it.
            let rewritten = persist.truncate_from.is_some_and(|from| from <= *match_index)
                || persist.entries.first().is_some_and(|entry| entry.index <= *match_index)
                || persist.snapshot.is_some();
            assert!(
                *match_index <= durable_last_index(durable) && !rewritten,
                "persistence order: {from} acknowledged entries up to {match_index} to {to} in `messages`, \
                 but only {} was durable",
                durable_last_index(durable)
            );
        }
        RaftMessage::InstallSnapshotResponse { done: true, last_index, .. } => {
            assert!(
                durable.snapshot.as_ref().is_some_and(|snapshot| snapshot.meta.last_index >= *last_index),
                "persistence order: {from} acknowledged an installed snapshot at {last_index} in `messages` \
                 before it was durable"
            );
        }
        _ => {}
    }
}

/// Whether the packet is an append (heartbeat or entries).
pub fn is_append(packet: &Packet) -> bool {
    matches!(packet.message, RaftMessage::Append { .. })
}

/// Whether the packet is part of an election (vote requests and answers, pre-votes included).
pub fn is_vote(packet: &Packet) -> bool {
    matches!(packet.message, RaftMessage::VoteRequest { .. } | RaftMessage::VoteResponse { .. })
}
