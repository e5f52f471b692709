//! Test doubles: tiny mechanisms that exercise the simulator without consensus code.
//!
//! - [`Gossip`]: applies a write locally once it is durable and broadcasts it; receivers apply it
//!   (duplicates twice), make it durable, and acknowledge it with a persisted message. No
//!   agreement at all: good for observing the network and persistence.
//! - [`Primary`]: `n1` decides everything alone (it commits an entry once its own write is durable)
//!   and streams its log to followers; followers refuse client requests. Linearizable and
//!   convergent, so the randomized scenario passes on it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_core::mechanism::SetupError;
use concord_core::prelude::*;
use concord_core::state_machine::ApplyContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What doubles report to the test, in the order it happened.
pub type Journal = Arc<Mutex<Vec<String>>>;

fn debug_state(id: &NodeId, role: Role, term: Term, applied: LogIndex, log: u64) -> DebugState {
    DebugState {
        node_id: id.clone(),
        mechanism: "double".into(),
        current_term: term,
        role,
        leader_id: None,
        commit_index: applied,
        last_applied: applied,
        log_length: log,
        last_log_index: LogIndex(log),
        snapshot_index: LogIndex::ZERO,
        followers: BTreeMap::new(),
        pending_proposals: 0,
        session_results: 0,
        session_clients: 0,
        session_clients_expired: 0,
    }
}

fn unsupported(operation: &str) -> ProposalError {
    ProposalError::Unsupported { mechanism: "double".into(), operation: operation.into() }
}

/// Options of the gossip double.
#[derive(Clone, Default)]
pub struct GossipOptions {
    /// Claim leadership of term `tick / 8` at random ticks (to violate election safety).
    pub usurp: bool,
}

/// See the module docs.
pub struct Gossip {
    id: NodeId,
    peers: Vec<NodeId>,
    membership: Membership,
    replica: Replica,
    rng: ChaCha8Rng,
    journal: Journal,
    options: GossipOptions,
    /// Entries in the durable log (rebuilt at start), and what the next batch will append.
    log_length: u64,
    ready: Ready,
    next_number: u64,
    /// Batches handed out and not yet acknowledged: (number, acks in it, proposals it makes durable).
    in_progress: VecDeque<(u64, Vec<u64>, Vec<Proposal>)>,
    staged_acks: Vec<u64>,
    staged_proposals: Vec<Proposal>,
    deadline: Option<Instant>,
    ticks: u64,
    term: Term,
    role: Role,
}

impl Gossip {
    pub fn new(setup: Setup, journal: Journal, options: GossipOptions) -> Result<Self, SetupError> {
        let peers =
            setup.initial_members.iter().map(|m| m.id.clone()).filter(|id| *id != setup.node_id).collect();
        let mut gossip = Gossip {
            id: setup.node_id.clone(),
            peers,
            membership: Membership::with_voters(setup.initial_members),
            replica: setup.replica,
            rng: ChaCha8Rng::seed_from_u64(setup.seed),
            journal,
            options,
            log_length: 0,
            ready: Ready::default(),
            next_number: 1,
            in_progress: VecDeque::new(),
            staged_acks: Vec::new(),
            staged_proposals: Vec::new(),
            deadline: None,
            ticks: 0,
            term: Term(0),
            role: Role::Peer,
        };
        // Replay the durable log into the replica: what was durable survives a crash.
        for entry in &setup.recovered.entries {
            if let EntryPayload::Command(proposal) = &entry.payload {
                let _ = gossip.apply(proposal);
            }
            gossip.log_length = entry.index.0;
        }
        gossip.journal(format!("{} started with {} durable entries", gossip.id, gossip.log_length));
        Ok(gossip)
    }

    fn journal(&self, line: String) {
        self.journal.lock().unwrap().push(line);
    }

    fn apply(&mut self, proposal: &Proposal) -> CommandResult {
        let index = self.replica.applied().next();
        let context = ApplyContext { index, term: Term(0), timestamp_ms: 0 };
        self.replica.apply(&context, proposal.session, &proposal.command)
    }

    fn append(&mut self, proposal: Proposal) {
        self.log_length += 1;
        self.ready.persist.entries.push(Entry {
            index: LogIndex(self.log_length),
            term: Term(0),
            timestamp_ms: 0,
            payload: EntryPayload::Command(std::sync::Arc::new(proposal)),
        });
    }
}

impl Mechanism for Gossip {
    fn node_id(&self) -> &NodeId {
        &self.id
    }

    fn handle_message(&mut self, _now: Instant, from: NodeId, message: Message) -> Result<(), PeerError> {
        match message {
            Message::Raft(RaftMessage::ForwardProposal { proposal, .. }) => {
                // Apply at once (a duplicate applies twice: sessions are left out on purpose).
                let _ = self.apply(&Proposal { session: None, ..Proposal::clone(&proposal) });
                let sequence = proposal.id.sequence;
                self.append(Proposal::clone(&proposal));
                self.staged_acks.push(sequence);
                self.ready.persisted_messages.push(Outbound {
                    to: from,
                    message: Message::Raft(RaftMessage::ReadIndexResponse {
                        term: Term(0),
                        request: sequence,
                        result: Ok(LogIndex(self.log_length)),
                    }),
                });
                Ok(())
            }
            Message::Raft(RaftMessage::ReadIndexResponse { request, .. }) => {
                self.journal(format!("{} got ack {request} from {from}", self.id));
                Ok(())
            }
            other => Err(PeerError::Protocol {
                from: from.to_string(),
                reason: format!("unexpected {}", other.kind()),
            }),
        }
    }

    fn propose(&mut self, _now: Instant, proposal: Proposal) -> Result<(), ProposalError> {
        for peer in &self.peers {
            self.ready.messages.push(Outbound {
                to: peer.clone(),
                message: Message::Raft(RaftMessage::ForwardProposal {
                    term: Term(0),
                    proposal: std::sync::Arc::new(proposal.clone()),
                }),
            });
        }
        self.append(proposal.clone());
        self.staged_proposals.push(proposal);
        Ok(())
    }

    fn read(&mut self, _now: Instant, id: ReadId) -> Result<(), ProposalError> {
        self.ready.reads.push(ReadResult { id, result: Ok(self.replica.applied()) });
        Ok(())
    }

    fn change_membership(
        &mut self,
        _: Instant,
        _: ProposalId,
        _: MembershipChange,
    ) -> Result<(), ProposalError> {
        Err(unsupported("change_membership"))
    }

    fn vote(&mut self, _: Instant, _: &ProposalId, _: bool) -> Result<(), ProposalError> {
        Err(unsupported("vote"))
    }

    fn transfer_leadership(&mut self, _: Instant, _: &NodeId) -> Result<(), ProposalError> {
        Err(unsupported("transfer_leadership"))
    }

    fn handle_peer_status(&mut self, _: Instant, _: &NodeId, _: bool) {}

    fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            self.deadline = Some(now + Duration::from_millis(50));
            return;
        };
        if now < deadline {
            return;
        }
        self.ticks += 1;
        self.deadline = Some(now + Duration::from_millis(50));
        if self.options.usurp && self.rng.gen_bool(0.3) {
            self.term = Term((self.ticks / 8).max(self.term.0));
            self.role = Role::Leader;
        } else if self.options.usurp {
            self.role = Role::Follower;
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // The first call arms the timer relative to the node's own clock.
        Some(self.deadline.unwrap_or(Instant::ZERO))
    }

    fn has_ready(&self) -> bool {
        !self.ready.is_empty() || !self.staged_acks.is_empty() || !self.staged_proposals.is_empty()
    }

    fn ready(&mut self) -> Ready {
        let mut ready = std::mem::take(&mut self.ready);
        ready.number = self.next_number;
        self.next_number += 1;
        let acks = std::mem::take(&mut self.staged_acks);
        let proposals = std::mem::take(&mut self.staged_proposals);
        self.in_progress.push_back((ready.number, acks, proposals));
        ready
    }

    fn advance(&mut self, _now: Instant, number: u64) {
        while self.in_progress.front().is_some_and(|(n, ..)| *n <= number) {
            let Some((n, acks, proposals)) = self.in_progress.pop_front() else { break };
            for sequence in acks {
                self.journal(format!("{} durable ack {sequence} (batch {n})", self.id));
            }
            for proposal in proposals {
                // The proposer applies its own write only once it is durable.
                let result = self.apply(&proposal);
                let accepted = result.is_ok();
                self.ready.results.push(ProposalResult {
                    accepted,
                    output: result.as_ref().ok().cloned(),
                    error: result.err().map(ProposalError::Command),
                    index: Some(self.replica.applied()),
                    ..ProposalResult::failed(
                        proposal.id.clone(),
                        proposal.command.key(),
                        ProposalError::Timeout,
                    )
                });
            }
        }
    }

    fn replica(&self) -> &Replica {
        &self.replica
    }

    fn membership(&self) -> &Membership {
        &self.membership
    }

    fn leader(&self) -> Option<NodeId> {
        None
    }

    fn connected_peers(&self) -> Vec<NodeId> {
        self.peers.clone()
    }

    fn debug_state(&self) -> DebugState {
        debug_state(&self.id, self.role, self.term, self.replica.applied(), self.log_length)
    }
}

/// A factory of gossip doubles that share one journal.
pub fn gossip(journal: Journal, options: GossipOptions) -> concord_sim::MechanismFactory {
    Box::new(move |setup| {
        Ok(Box::new(Gossip::new(setup, journal.clone(), options.clone())?) as Box<dyn Mechanism>)
    })
}

/// See the module docs.
pub struct Primary {
    id: NodeId,
    primary: NodeId,
    peers: Vec<NodeId>,
    membership: Membership,
    replica: Replica,
    /// The primary's log (durable or being written); followers keep none.
    log: Vec<Entry>,
    durable_through: u64,
    matched: BTreeMap<NodeId, u64>,
    pending: BTreeMap<u64, ProposalId>,
    ready: Ready,
    next_number: u64,
    in_progress: VecDeque<(u64, u64)>,
    deadline: Option<Instant>,
    /// A bug on purpose: followers answer reads from their (possibly stale) replica.
    follower_reads: bool,
}

impl Primary {
    /// Heartbeat (and log streaming) period.
    const TICK: Duration = Duration::from_millis(30);
    /// Most entries one append carries.
    const ENTRIES_PER_MESSAGE_MAX: usize = 64;

    pub fn new(setup: Setup) -> Result<Self, SetupError> {
        Self::with_follower_reads(setup, false)
    }

    pub fn with_follower_reads(setup: Setup, follower_reads: bool) -> Result<Self, SetupError> {
        let primary = setup
            .initial_members
            .first()
            .map(|m| m.id.clone())
            .ok_or_else(|| SetupError::Recovered("no members".into()))?;
        let peers =
            setup.initial_members.iter().map(|m| m.id.clone()).filter(|id| *id != setup.node_id).collect();
        let mut node = Primary {
            id: setup.node_id,
            primary,
            peers,
            membership: Membership::with_voters(setup.initial_members),
            replica: setup.replica,
            log: Vec::new(),
            durable_through: 0,
            matched: BTreeMap::new(),
            pending: BTreeMap::new(),
            ready: Ready::default(),
            next_number: 1,
            in_progress: VecDeque::new(),
            deadline: None,
            follower_reads,
        };
        for entry in setup.recovered.entries {
            node.apply(&entry);
            node.durable_through = entry.index.0;
            node.log.push(entry);
        }
        Ok(node)
    }

    fn is_primary(&self) -> bool {
        self.id == self.primary
    }

    fn apply(&mut self, entry: &Entry) -> Option<CommandResult> {
        let context = ApplyContext { index: entry.index, term: entry.term, timestamp_ms: entry.timestamp_ms };
        match &entry.payload {
            EntryPayload::Command(proposal) => {
                Some(self.replica.apply(&context, proposal.session, &proposal.command))
            }
            _ => {
                self.replica.skip(entry.index, entry.term);
                None
            }
        }
    }

    fn not_leader(&self) -> ProposalError {
        ProposalError::NotLeader { leader: Some(NodeInfo::new(self.primary.clone(), "")) }
    }
}

impl Mechanism for Primary {
    fn node_id(&self) -> &NodeId {
        &self.id
    }

    fn handle_message(&mut self, _now: Instant, from: NodeId, message: Message) -> Result<(), PeerError> {
        match message {
            Message::Raft(RaftMessage::Append { entries, .. }) if !self.is_primary() => {
                for entry in entries {
                    if entry.index == self.replica.applied().next() {
                        self.apply(&entry);
                    }
                }
                self.ready.messages.push(Outbound {
                    to: from,
                    message: Message::Raft(RaftMessage::AppendResponse {
                        term: Term(1),
                        success: true,
                        match_index: self.replica.applied(),
                        conflict: None,
                        last_log_index: self.replica.applied(),
                        read_round: 0,
                    }),
                });
                Ok(())
            }
            Message::Raft(RaftMessage::AppendResponse { match_index, .. }) if self.is_primary() => {
                // Messages reorder: a stale (lower) answer may arrive after a newer one, and a
                // restarted follower answers lower on purpose, so take the latest as it is.
                self.matched.insert(from, match_index.0);
                Ok(())
            }
            other => Err(PeerError::Protocol {
                from: from.to_string(),
                reason: format!("unexpected {}", other.kind()),
            }),
        }
    }

    fn propose(&mut self, now: Instant, proposal: Proposal) -> Result<(), ProposalError> {
        if !self.is_primary() {
            return Err(self.not_leader());
        }
        let index = LogIndex(self.log.len() as u64 + 1);
        let entry = Entry {
            index,
            term: Term(1),
            timestamp_ms: now.as_millis(),
            payload: EntryPayload::Command(std::sync::Arc::new(proposal.clone())),
        };
        self.pending.insert(index.0, proposal.id);
        self.ready.persist.entries.push(entry.clone());
        self.log.push(entry);
        Ok(())
    }

    fn read(&mut self, _now: Instant, id: ReadId) -> Result<(), ProposalError> {
        if !self.is_primary() && !self.follower_reads {
            return Err(self.not_leader());
        }
        self.ready.reads.push(ReadResult { id, result: Ok(self.replica.applied()) });
        Ok(())
    }

    fn change_membership(
        &mut self,
        _: Instant,
        _: ProposalId,
        _: MembershipChange,
    ) -> Result<(), ProposalError> {
        Err(unsupported("change_membership"))
    }

    fn vote(&mut self, _: Instant, _: &ProposalId, _: bool) -> Result<(), ProposalError> {
        Err(unsupported("vote"))
    }

    fn transfer_leadership(&mut self, _: Instant, _: &NodeId) -> Result<(), ProposalError> {
        Err(unsupported("transfer_leadership"))
    }

    fn handle_peer_status(&mut self, _: Instant, _: &NodeId, _: bool) {}

    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|deadline| now < deadline) {
            return;
        }
        self.deadline = Some(now + Self::TICK);
        if !self.is_primary() {
            return;
        }
        for peer in self.peers.clone() {
            let from = self.matched.get(&peer).copied().unwrap_or(0);
            let entries: Vec<Entry> = self
                .log
                .iter()
                .skip(from as usize)
                .take_while(|entry| entry.index.0 <= self.durable_through)
                .take(Self::ENTRIES_PER_MESSAGE_MAX)
                .cloned()
                .collect();
            self.ready.messages.push(Outbound {
                to: peer,
                message: Message::Raft(RaftMessage::Append {
                    term: Term(1),
                    prev_log_index: LogIndex(from),
                    prev_log_term: Term(1),
                    entries,
                    leader_commit: LogIndex(self.durable_through),
                    read_round: 0,
                }),
            });
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline.unwrap_or(Instant::ZERO))
    }

    fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    fn ready(&mut self) -> Ready {
        let mut ready = std::mem::take(&mut self.ready);
        ready.number = self.next_number;
        self.next_number += 1;
        self.in_progress.push_back((ready.number, self.log.len() as u64));
        ready
    }

    fn advance(&mut self, _now: Instant, number: u64) {
        while self.in_progress.front().is_some_and(|(n, _)| *n <= number) {
            let Some((_, through)) = self.in_progress.pop_front() else { break };
            while self.durable_through < through {
                self.durable_through += 1;
                let entry = self.log[self.durable_through as usize - 1].clone();
                let result = self.apply(&entry);
                if let (Some(result), Some(id)) = (result, self.pending.remove(&entry.index.0)) {
                    let (accepted, output, error) = match result {
                        Ok(output) => (true, Some(output), None),
                        Err(failure) => (false, None, Some(ProposalError::Command(failure))),
                    };
                    self.ready.results.push(ProposalResult {
                        accepted,
                        output,
                        error,
                        index: Some(entry.index),
                        ..ProposalResult::failed(id, "", ProposalError::Timeout)
                    });
                }
            }
        }
    }

    fn replica(&self) -> &Replica {
        &self.replica
    }

    fn membership(&self) -> &Membership {
        &self.membership
    }

    fn leader(&self) -> Option<NodeId> {
        Some(self.primary.clone())
    }

    fn connected_peers(&self) -> Vec<NodeId> {
        self.peers.clone()
    }

    fn debug_state(&self) -> DebugState {
        let role = if self.is_primary() { Role::Leader } else { Role::Follower };
        let mut state = debug_state(&self.id, role, Term(1), self.replica.applied(), self.log.len() as u64);
        if self.is_primary() {
            state.commit_index = LogIndex(self.durable_through);
        }
        state
    }
}

/// A node whose debug state follows a script, one step per 10 ms tick: (term, role, commit).
pub struct Scripted {
    id: NodeId,
    membership: Membership,
    replica: Replica,
    script: Vec<(u64, Role, u64)>,
    position: usize,
    deadline: Option<Instant>,
}

impl Scripted {
    pub fn factory(scripts: Vec<Vec<(u64, Role, u64)>>) -> concord_sim::MechanismFactory {
        Box::new(move |setup: Setup| {
            let index: usize = setup.node_id.as_str()[1..].parse().unwrap();
            Ok(Box::new(Scripted {
                id: setup.node_id,
                membership: Membership::with_voters(setup.initial_members),
                replica: setup.replica,
                script: scripts[index - 1].clone(),
                position: 0,
                deadline: None,
            }) as Box<dyn Mechanism>)
        })
    }
}

impl Mechanism for Scripted {
    fn node_id(&self) -> &NodeId {
        &self.id
    }
    fn handle_message(&mut self, _: Instant, _: NodeId, _: Message) -> Result<(), PeerError> {
        Ok(())
    }
    fn propose(&mut self, _: Instant, _: Proposal) -> Result<(), ProposalError> {
        Err(unsupported("propose"))
    }
    fn read(&mut self, _: Instant, _: ReadId) -> Result<(), ProposalError> {
        Err(unsupported("read"))
    }
    fn change_membership(
        &mut self,
        _: Instant,
        _: ProposalId,
        _: MembershipChange,
    ) -> Result<(), ProposalError> {
        Err(unsupported("change_membership"))
    }
    fn vote(&mut self, _: Instant, _: &ProposalId, _: bool) -> Result<(), ProposalError> {
        Err(unsupported("vote"))
    }
    fn transfer_leadership(&mut self, _: Instant, _: &NodeId) -> Result<(), ProposalError> {
        Err(unsupported("transfer_leadership"))
    }
    fn handle_peer_status(&mut self, _: Instant, _: &NodeId, _: bool) {}
    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some() && self.position + 1 < self.script.len() {
            self.position += 1;
        }
        self.deadline = Some(now + Duration::from_millis(10));
    }
    fn poll_timeout(&self) -> Option<Instant> {
        if self.position + 1 < self.script.len() {
            Some(self.deadline.unwrap_or(Instant::ZERO))
        } else {
            None
        }
    }
    fn has_ready(&self) -> bool {
        false
    }
    fn ready(&mut self) -> Ready {
        Ready::default()
    }
    fn advance(&mut self, _: Instant, _: u64) {}
    fn replica(&self) -> &Replica {
        &self.replica
    }
    fn membership(&self) -> &Membership {
        &self.membership
    }
    fn leader(&self) -> Option<NodeId> {
        None
    }
    fn connected_peers(&self) -> Vec<NodeId> {
        Vec::new()
    }
    fn debug_state(&self) -> DebugState {
        let (term, role, commit) = self.script[self.position];
        let mut state = debug_state(&self.id, role, Term(term), LogIndex(commit), commit);
        state.last_applied = LogIndex(commit);
        state
    }
}
